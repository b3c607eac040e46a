"""``platform-hostdev inspect``: exit codes 0 (agree), 3 (disagree), 1 (error)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, TextIO

import pytest
from platform_hostdev.cli.main import Context, main
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Inventory
from platform_hostdev.host.pagesize import AUXV, auxv_bytes

from tests.support.fakevfio import FakeIrq, FakeRegion, FakeVfio, vfio_sysfs
from tests.unit.test_inspect import PL061, VIRT, VIRTIO


def _ctx(tmp_path: Path, fake: FakeVfio) -> Context:
    ctx = Context(root=str(tmp_path), out=io.StringIO(), err=io.StringIO(), vfio_syscalls=fake)
    auxv = tmp_path / AUXV.lstrip("/")
    auxv.parent.mkdir(parents=True, exist_ok=True)
    auxv.write_bytes(auxv_bytes(4096))  # the host's kernel states its page size there
    ctx.use_inventory(Inventory(VIRT, [VIRTIO, PL061], fs=HostFs(tmp_path)))
    return ctx


def _text(stream: TextIO) -> str:
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def _virtio_host(tmp_path: Path, **fake: Any) -> Context:
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, "vfio-platform", "0")
    return _ctx(tmp_path, FakeVfio(device=VIRTIO.name, root=str(tmp_path), **fake))


def test_agree_json_exit_0(tmp_path: Path) -> None:
    ctx = _virtio_host(tmp_path)
    assert main(["inspect", "/virtio_mmio@a000000", "--json"], ctx) == 0
    data = json.loads(_text(ctx.out))
    assert data["agree"] is True and data["disagreements"] == []
    assert data["device_flags"]["vfio"] == ["PLATFORM"]
    assert data["regions"][0]["vfio"]["size"] == "0x200"
    assert [w["kind"] for w in data["warnings"]] == ["noiommu"]


def test_agree_text(tmp_path: Path) -> None:
    ctx = _virtio_host(tmp_path)
    assert main(["inspect", VIRTIO.name], ctx) == 0
    text = _text(ctx.out)
    assert "VFIO agrees with the device tree." in text
    assert "/dev/vfio/noiommu-0  (no-IOMMU: UNSAFE)" in text
    assert "warning: UNSAFE" in text
    assert "0xa000000" in text and "READ|WRITE" in text


def test_disagree_exit_3(tmp_path: Path) -> None:
    ctx = _virtio_host(tmp_path, regions=[FakeRegion(0x7, 0x1000)], irqs=[FakeIrq(0x7)])
    assert main(["inspect", VIRTIO.name], ctx) == 3
    text = _text(ctx.out)
    assert "VFIO disagrees with the device tree (3):" in text
    for kind in ("region-size", "region-mmap-unexpected", "irq-edge-automasked"):
        assert f"- {kind}:" in text


def test_disagree_json_exit_3(tmp_path: Path) -> None:
    ctx = _virtio_host(tmp_path, device_flags=0x8)
    assert main(["inspect", VIRTIO.name, "--json"], ctx) == 3
    data = json.loads(_text(ctx.out))
    assert [d["kind"] for d in data["disagreements"]] == ["device-type"]


def test_not_bound_exit_1_with_hint(tmp_path: Path) -> None:
    vfio_sysfs(tmp_path, "amba", PL061.name, "pl061_gpio", None)
    ctx = _ctx(tmp_path, FakeVfio(device=PL061.name, root=str(tmp_path)))
    assert main(["inspect", PL061.name], ctx) == 1
    err = _text(ctx.err)
    assert "error: device 9030000.pl061 is bound to pl061_gpio, not vfio-amba" in err
    assert "hint: run 'platform-hostdev nodedev-detach 9030000.pl061' first" in err
    assert _text(ctx.out) == ""


def test_unknown_device_exit_1(tmp_path: Path) -> None:
    ctx = _virtio_host(tmp_path)
    assert main(["inspect", "/nothing@0"], ctx) == 1


def test_dtb_is_refused(tmp_path: Path) -> None:
    ctx = _virtio_host(tmp_path)
    ctx.dtb = str(tmp_path / "board.dtb")
    assert main(["inspect", VIRTIO.name], ctx) == 1
    assert "drop --dtb" in _text(ctx.err)


@pytest.mark.parametrize("argv", [["inspect"], ["inspect", "a", "b"]])
def test_usage_exit_2(tmp_path: Path, argv: list[str]) -> None:
    ctx = _virtio_host(tmp_path)
    assert main(argv, ctx) == 2
