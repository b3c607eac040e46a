"""check-host's interrupt isolation for the iommufd backend, as iommufd_device_bind()
judges it: a msi-parent GICv3 ITS isolates, anything else needs allow_unsafe_interrupts."""
from __future__ import annotations

from pathlib import Path

import pytest
from platform_hostdev.checkhost.iommufd import interrupt_check
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device, Inventory
from platform_hostdev.vfio.cdev import IOMMUFD_UNSAFE_INTERRUPTS, UNSAFE_INTERRUPTS_FIX

from tests.support.fdtwriter import node, to_dtb

ITS = "/interrupt-controller@8000000/msi-controller@8080000"


def _inventory(tmp_path: Path, parent: str) -> tuple[Inventory, Device]:
    dtb = to_dtb(node("", {"#address-cells": 1, "#size-cells": 1}, [
        node("interrupt-controller@8000000", {"compatible": "arm,gic-v3", "phandle": 1}, [
            node("msi-controller@8080000", {"compatible": "arm,gic-v3-its", "msi-controller":
                                            True, "phandle": 2}),
            node("v2m@8020000", {"compatible": "arm,gic-v2m-frame", "phandle": 3}),
        ]),
        node("dma@9000000", {"compatible": "vendor,dma", "reg": [0x9000000, 0x1000],
                             **({"msi-parent": [int(parent)]} if parent else {})}),
    ]))
    path = tmp_path / "board.dtb"
    path.write_bytes(dtb)
    tree = DeviceTree.from_dtb(path)
    device = Device("9000000.dma", "platform", "/dma@9000000", ("vendor,dma",),
                    driver="vfio-platform", iommu_group="0")
    return Inventory(tree, [device], fs=HostFs(tmp_path)), device


def test_msis_through_a_gicv3_its_are_isolated(tmp_path: Path) -> None:
    inventory, device = _inventory(tmp_path, "2")
    check = interrupt_check(HostFs(tmp_path), inventory, device)
    assert (check.status, check.finding) == (
        "PASS", f"its MSIs go to the GICv3 ITS {ITS}, which isolates them")


@pytest.mark.parametrize("parent", ["", "3"])  # wired interrupts; a GICv2m frame (no flag)
@pytest.mark.parametrize(("unsafe", "status"), [(None, "FAIL"), ("N", "FAIL"), ("Y", "WARN")])
def test_anything_else_needs_allow_unsafe_interrupts(tmp_path: Path, parent: str,
                                                     unsafe: str | None, status: str) -> None:
    inventory, device = _inventory(tmp_path, parent)
    if unsafe is not None:
        param = tmp_path / IOMMUFD_UNSAFE_INTERRUPTS.lstrip("/")
        param.parent.mkdir(parents=True)
        param.write_text(unsafe + "\n")
    check = interrupt_check(HostFs(tmp_path), inventory, device)
    assert check.status == status
    assert check.finding.startswith("no msi-parent to a GICv3 ITS: the platform cannot "
                                    "isolate its interrupts")
    if status == "FAIL":
        assert check.fix == UNSAFE_INTERRUPTS_FIX
        assert check.finding.endswith("so VFIO_DEVICE_BIND_IOMMUFD fails with EPERM")
        assert ("(iommufd not loaded; the default)" in check.finding) == (unsafe is None)
