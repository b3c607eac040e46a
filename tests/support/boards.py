"""The real boards the fake-host tests run on, and a CLI runner with captured output."""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform_hostdev.cli import main as cli

from .corpus import board_dtb, qemu_virt_dtb

__all__ = ["Board", "BOARDS", "CliResult", "run_cli"]


@dataclass(frozen=True)
class Board:
    """A DTB source, the drivers its fake host binds, its IOMMU and the golden devices."""

    name: str
    dtb: Callable[[], Path]
    drivers: dict[str, str]
    iommu: str | tuple[str, ...]
    golden: tuple[str, ...]          # specs (path, name or alias) whose output is golden
    vfio_loaded: bool = False


BOARDS = {b.name: b for b in (
    Board("qemu-virt", qemu_virt_dtb,
          {"arm,pl061": "pl061_gpio", "arm,pl031": "rtc-pl031", "arm,pl011": "uart-pl011",
           "qemu,fw-cfg-mmio": "fw_cfg", "cfi-flash": "physmap-flash"},
          "none", ("9030000.pl061", "a000000.virtio_mmio", "serial0", "/fw-cfg@9020000",
                   "timer"), vfio_loaded=True),
    Board("amd-seattle", lambda: board_dtb("amd/amd-overdrive-rev-b1.dtb"),
          {"amd,xgbe-seattle-v1a": "amd-xgbe", "arm,pl011": "uart-pl011",
           "arm,pl061": "pl061_gpio", "snps,dwc-ahci": "ahci-dwc"},
          "all", ("/smb/xgmac@e0700000", "e1010000.serial", "e0300000.sata")),
    Board("nxp-ls1046a", lambda: board_dtb("freescale/fsl-ls1046a-rdb.dtb"),
          {"ns16550a": "of_serial", "fsl,sec-v5.0": "caam", "snps,dwc3": "dwc3"},
          ("21c0500.serial", "2f00000.usb", "1700000.crypto"),
          ("serial0", "/soc/bus/usb@2f00000", "crypto", "500000000.qman-portal")),
    Board("xilinx-zcu102", lambda: board_dtb("xilinx/zynqmp-zcu102-rev1.0.dtb"),
          {"cdns,uart-r1p12": "xuartps", "cdns,gem": "macb", "cdns,i2c-r1p14": "cdns-i2c"},
          "all", ("ethernet0", "serial0", "/axi/i2c@ff020000", "ff0a0000.gpio")),
)}


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    ctx: cli.Context = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*argv: str, root: Path | None = None, dtb: Path | None = None) -> CliResult:
    """``platform-hostdev [--root ROOT] [--dtb DTB] ARGV...`` in-process, output captured."""
    prefix = (["--root", str(root)] if root is not None else []) + \
        (["--dtb", str(dtb)] if dtb is not None else [])
    ctx = cli.Context(out=io.StringIO(), err=io.StringIO(), env={})
    code = cli.main(prefix + list(argv), ctx)
    assert isinstance(ctx.out, io.StringIO) and isinstance(ctx.err, io.StringIO)
    return CliResult(code, ctx.out.getvalue(), ctx.err.getvalue(), ctx)
