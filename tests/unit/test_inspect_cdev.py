"""``inspect --backend iommufd``: the device opened through its vfio cdev and /dev/iommu
(tests/support/fakevfio.py answers as drivers/vfio/device_cdev.c does), or the kernel's
reasons why it cannot be."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

from platform_hostdev.cli.main import main

from tests.support.fakevfio import FakeVfio, vfio_sysfs
from tests.unit.test_inspect import VIRTIO
from tests.unit.test_inspect_command import _ctx, _text

CDEV = "/dev/vfio/devices/vfio0"


def _host(tmp_path: Path, *, noiommu: bool = False, cdev_dev: bool = True,
          **fake: Any) -> tuple[Any, FakeVfio]:
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, "vfio-platform", "0",
               group_name="vfio-noiommu" if noiommu else None, cdev="vfio0", cdev_dev=cdev_dev)
    if not noiommu:
        (tmp_path / "dev/iommu").write_text("")
    vfio = FakeVfio(device=VIRTIO.name, root=str(tmp_path),
                    group_node="/dev/vfio/noiommu-0" if noiommu else "/dev/vfio/0",
                    cdev_node=CDEV if cdev_dev else None,
                    extensions=frozenset({8} if noiommu else {1, 3}), **fake)
    return _ctx(tmp_path, vfio), vfio


def test_bind_attach_then_the_same_queries(tmp_path: Path) -> None:
    ctx, vfio = _host(tmp_path)
    assert main(["inspect", VIRTIO.name, "--backend", "iommufd", "--json"], ctx) == 0
    data = json.loads(_text(ctx.out))
    assert data["agree"] is True and data["warnings"] == []
    assert data["backend"] == "iommufd" and data["cdev"] == CDEV
    assert data["regions"][0]["vfio"]["size"] == "0x200"
    assert vfio.calls == [
        ("open", "/dev/iommu"), ("open", CDEV),
        ("DEVICE_BIND_IOMMUFD", "cdev"), ("IOMMU_IOAS_ALLOC", "iommufd"),
        ("DEVICE_ATTACH_IOMMUFD_PT", "cdev"), ("DEVICE_GET_INFO", "cdev"),
        ("DEVICE_GET_REGION_INFO", "cdev"), ("DEVICE_GET_IRQ_INFO", "cdev"),
        ("close", "cdev"), ("close", "iommufd")]   # never the group node
    assert vfio.open_fds == {}


def test_text_names_the_cdev(tmp_path: Path) -> None:
    ctx, _ = _host(tmp_path)
    assert main(["inspect", VIRTIO.name, "--backend", "iommufd"], ctx) == 0
    assert "VFIO cdev:    /dev/vfio/devices/vfio0 bound to /dev/iommu (iommufd), group 0" \
        in _text(ctx.out)


def test_the_legacy_backend_stays_the_default(tmp_path: Path) -> None:
    ctx, vfio = _host(tmp_path)
    assert main(["inspect", VIRTIO.name], ctx) == 0
    assert ("open", "/dev/vfio/0") in vfio.calls and ("open", CDEV) not in vfio.calls


def test_a_noiommu_device_gets_the_kernels_answers(tmp_path: Path) -> None:
    for supported, answer in ((True, "EINVAL (Invalid argument)"),
                              (False, "ENOTTY (Inappropriate ioctl for device)")):
        root = tmp_path / str(supported)
        ctx, vfio = _host(root, noiommu=True, cdev_dev=False, cdev_supported=supported)
        assert main(["inspect", VIRTIO.name, "--backend", "iommufd"], ctx) == 1
        err = _text(ctx.err)
        assert err.splitlines()[0] == (
            f"error: {VIRTIO.name} cannot be opened through a vfio cdev: vfio0 has no char "
            "device: the device is in a no-IOMMU group, and the kernel gives no-IOMMU devices "
            "no vfio cdev (drivers/vfio/vfio.h vfio_device_add(): 'cdev does not support "
            "noiommu device'), so it cannot be bound to an iommufd. The kernel's answers: "
            f"/sys/bus/platform/devices/{VIRTIO.name}/vfio-dev/vfio0 has no dev attribute; "
            "open(/dev/vfio/devices/vfio0): ENOENT (No such file or directory); /dev/iommu "
            "does not exist; VFIO_DEVICE_BIND_IOMMUFD on the device fd of group 0: " + answer)
        assert vfio.open_fds == {}


def test_bind_refused_for_interrupt_isolation(tmp_path: Path) -> None:
    ctx, vfio = _host(tmp_path, ioctl_errors={"DEVICE_BIND_IOMMUFD": errno.EPERM})
    assert main(["inspect", VIRTIO.name, "--backend", "iommufd", "--json"], ctx) == 1
    error = json.loads(_text(ctx.out))["error"]
    assert error["code"] == "no-cdev" and error["errno"] == errno.EPERM
    assert error["what"].startswith(f"VFIO_DEVICE_BIND_IOMMUFD on {CDEV} failed: EPERM: the "
                                    "platform cannot isolate the device's interrupts")
    assert error["fix"].startswith("echo Y > /sys/module/iommufd/parameters/"
                                   "allow_unsafe_interrupts (now)")
    assert vfio.open_fds == {}
