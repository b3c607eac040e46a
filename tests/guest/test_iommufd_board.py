"""Guest tier: the iommufd backend against the real kernel (Debian's arm64 6.12 on QEMU virt).

Runs INSIDE the emulated board::

    python3 -m board run -- python3 -m pytest -p no:cacheprovider tests/guest/test_iommufd_board.py

The board has no IOMMU for its platform devices: vfio binds them in no-IOMMU
mode, and its vfio.ko is built out of tree without device_cdev.c (board/kmod.py;
Debian's 6.12 arm64 config has no CONFIG_IOMMUFD, which CONFIG_VFIO_DEVICE_CDEV
needs). So the kernel registers a bound device's ``vfio-dev/vfioN`` without a
char device (drivers/vfio/vfio.h vfio_device_add()), there is no /dev/iommu,
and VFIO_DEVICE_BIND_IOMMUFD on the device fd its group gives is the ENOTTY
stub: each asserted here as the kernel answers it, through ``inspect --backend
iommufd``, check-host's host checks and the hook, which refuses such a domain
and gives the device back. a000000.virtio_mmio (no driver) ends unbound.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_hostdev.binding import operations as binding
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.checkhost.iommufd import iommufd_host_checks
from platform_hostdev.cli.main import Context, main
from platform_hostdev.hook.qemu import HookEnv, dispatch
from platform_hostdev.host.boundary import live_host
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import load_inventory
from platform_hostdev.vfio.cdev import device_cdev
from platform_hostdev.vfio.cdev_client import bind_answer
from platform_hostdev.vfio.client import OsSyscalls, find_group

from tests.support.domains import libvirt_domain

VIRTIO = "a000000.virtio_mmio"
SYSFS = f"/sys/bus/platform/devices/{VIRTIO}"
FS = HostFs("/")


@pytest.fixture
def bound() -> Iterator[str]:
    """VIRTIO bound to vfio-platform for the test (its vfioN name), unbound afterwards."""
    host = live_host()
    device = next(d for d in load_inventory(host).devices if d.name == VIRTIO)
    assert device.driver is None, f"{VIRTIO} should start unbound, is on {device.driver}"
    binding.detach(host, device, Journal(FS))
    try:
        names = os.listdir(f"{SYSFS}/vfio-dev")
        assert len(names) == 1 and names[0].startswith("vfio"), names
        yield names[0]
    finally:
        binding.reattach(host, device, Journal(FS))
    assert FS.link_name(f"{SYSFS}/driver") is None


def test_the_kernel_registers_the_vfio_device_without_a_cdev(bound: str) -> None:
    assert sorted(os.listdir(f"{SYSFS}/vfio-dev/{bound}")) == [
        "device", "power", "subsystem", "uevent"]          # no "dev": device_add() only
    assert os.readlink(f"{SYSFS}/vfio-dev/{bound}/subsystem").endswith("/class/vfio-dev")
    assert not os.path.exists(f"/dev/vfio/devices/{bound}")
    assert not os.path.exists("/dev/iommu")
    group = find_group(FS, load_inventory(live_host()).by_name[VIRTIO])
    assert group.noiommu
    cdev = device_cdev(FS, SYSFS, group.number)
    assert (cdev.name, cdev.node) == (bound, None)
    assert "no-IOMMU group" in cdev.reason
    with pytest.raises(FileNotFoundError):
        os.open(f"/dev/vfio/devices/{bound}", os.O_RDWR)
    # the real ioctl answer: the vfio.ko stub without CONFIG_VFIO_DEVICE_CDEV
    assert bind_answer(FS, group, VIRTIO, OsSyscalls()) == \
        "ENOTTY (Inappropriate ioctl for device)"


def test_inspect_says_exactly_why_the_cdev_cannot_be_bound(bound: str) -> None:
    ctx = Context(out=io.StringIO(), err=io.StringIO())
    assert main(["inspect", VIRTIO, "--backend", "iommufd", "--json"], ctx) == 1
    error = json.loads(ctx.out.getvalue())["error"]  # type: ignore[attr-defined]
    assert error["code"] == "no-cdev"
    assert error["what"] == (
        f"{VIRTIO} cannot be opened through a vfio cdev: {bound} has no char device: the "
        "device is in a no-IOMMU group, and the kernel gives no-IOMMU devices no vfio cdev "
        "(drivers/vfio/vfio.h vfio_device_add(): 'cdev does not support noiommu device'), so "
        "it cannot be bound to an iommufd; and this kernel has no vfio cdev at all (no "
        "vfio-dev in /proc/devices: vfio built without CONFIG_VFIO_DEVICE_CDEV). The "
        f"kernel's answers: {SYSFS}/vfio-dev/{bound} has no dev attribute; "
        f"open(/dev/vfio/devices/{bound}): ENOENT (No such file or directory); /proc/devices "
        "has no vfio-dev; /dev/iommu does not exist; VFIO_DEVICE_BIND_IOMMUFD on the device "
        "fd of group 0: ENOTTY (Inappropriate ioctl for device)")
    # the device is still usable through its group
    assert main(["inspect", VIRTIO, "--json"], ctx) == 0


def test_check_host_says_this_kernel_cannot_serve_the_iommufd_backend() -> None:
    checks = {c.check: c for c in iommufd_host_checks(FS, live_host().modprobe, True)}
    cdev = checks["CONFIG_VFIO_DEVICE_CDEV"]
    assert cdev.status == "FAIL"
    assert cdev.finding == ("no kernel config to read, and vfio is loaded without the "
                            "vfio-dev region in /proc/devices: the kernel has no "
                            "CONFIG_VFIO_DEVICE_CDEV")
    assert checks["iommufd"].status == "FAIL"
    assert checks["iommufd"].finding.startswith("no /dev/iommu and no iommufd module")


def test_the_hook_refuses_an_iommufd_domain_and_gives_the_device_back() -> None:
    xml = libvirt_domain("phd-iommufd", [VIRTIO], iommufd=[VIRTIO]).replace(
        b"</os>", b"<dtb>/tmp/phd-iommufd-own.dtb</dtb></os>")  # its own DTB: not ours to check
    err = io.StringIO()
    env = HookEnv(live_host(), err=err, allow_noiommu=True)
    assert dispatch(["phd-iommufd", "prepare", "begin", "-"], xml, env) == 1
    first = err.getvalue().splitlines()[0]
    assert first.startswith(f"platform-hostdev: prepare of domain phd-iommufd refused: {VIRTIO} "
                            "uses the iommufd backend, but vfio")
    assert first.endswith("has no char device: the device is in a no-IOMMU group, and the "
                          "kernel gives no-IOMMU devices no vfio cdev (drivers/vfio/vfio.h "
                          "vfio_device_add(): 'cdev does not support noiommu device'), so it "
                          "cannot be bound to an iommufd")
    assert FS.link_name(f"{SYSFS}/driver") is None    # detached by prepare, given back
    assert not Path(f"{SYSFS}/vfio-dev").exists()
    assert Owners(FS).all() == []
