"""Facts about the board's real kernel that the rest of the guest suite relies on.

Seen on Debian's arm64 6.12 kernel under qemu-system-aarch64 -M virt (the
machine's devices: QEMU hw/arm/virt.c; the kernel's names for them:
drivers/of/platform.c of_device_make_bus_id(), for platform and amba devices).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_virtio_mmio_transport_is_a_dt_platform_device(fs: Path) -> None:
    device = fs / "bus/platform/devices/a000000.virtio_mmio"
    assert device.is_dir()
    of_node = device / "of_node"
    assert of_node.is_symlink()
    assert os.path.realpath(of_node) == os.path.realpath(
        fs / "firmware/devicetree/base/virtio_mmio@a000000"
    )


def test_fw_cfg_is_a_platform_device(fs: Path) -> None:
    assert (fs / "bus/platform/devices/9020000.fw-cfg").is_dir()


@pytest.mark.parametrize("name", ["9030000.pl061", "9010000.pl031"])
def test_primecells_are_amba_devices(fs: Path, name: str) -> None:
    assert (fs / "bus/amba/devices" / name).is_dir()


@pytest.mark.parametrize("module", ["vfio", "vfio_platform", "vfio_amba"])
def test_vfio_modules_loaded(fs: Path, module: str) -> None:
    assert (fs / "module" / module).is_dir()
    assert module in Path("/proc/modules").read_text().split()


def test_vfio_noiommu_mode_enabled(fs: Path) -> None:
    param = fs / "module/vfio/parameters/enable_unsafe_noiommu_mode"
    assert param.read_text().strip() == "Y"


def test_vfio_platform_needs_no_reset_handler(fs: Path) -> None:
    param = fs / "module/vfio_platform/parameters/reset_required"
    assert param.read_text().strip() == "N"


def test_guest_python_has_lxml_and_pyudev() -> None:
    import lxml.etree
    import pyudev

    assert lxml.etree.fromstring("<a><b/></a>").find("b") is not None
    devices = pyudev.Context().list_devices(subsystem="amba")
    assert "9030000.pl061" in {device.sys_name for device in devices}


def test_results_share_is_writable(board_out: Path) -> None:
    probe = board_out / ".board-write-probe"
    probe.write_text("ok")
    assert probe.read_text() == "ok"
    probe.unlink()
