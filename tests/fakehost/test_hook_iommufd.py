"""The hook for domains on the iommufd backend: the vfio cdev and /dev/iommu handed to
QEMU's user and given back; a device without a cdev refused, nothing changed."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.hook.qemu import HookEnv, dispatch

from tests.support.domains import libvirt_domain, with_guest_dt
from tests.support.fakehost import build_fake_host
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

VIRTIO = "a000000.virtio_mmio"
VIRTIO2 = "a000200.virtio_mmio"
VIRTIO3 = "a000400.virtio_mmio"
QEMU_UID = 64055


def make_kernel(root: Path, dtb: Path, *, iommu: Any = "all", noiommu: bool = False,
                **kernel: Any) -> FakeKernel:
    host = build_fake_host(root, dtb, drivers=QEMU_VIRT_DRIVERS, iommu=iommu,
                           vfio_loaded=True, noiommu=noiommu)
    fake = FakeKernel(host, reset_required=False, **kernel)
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\n"
                                f"libvirt-qemu:x:{QEMU_UID}:{QEMU_UID}::/:/bin/false\n")
    (etc / "group").write_text(f"root:x:0:\nlibvirt-qemu:x:{QEMU_UID}:\n")
    return fake


def run_hook(kernel: FakeKernel, domain: str, op: str, xml: bytes,
             allow_noiommu: bool = False) -> tuple[int, str]:
    err = io.StringIO()
    env = HookEnv(kernel.as_host(), err=err, allow_noiommu=allow_noiommu)
    code = dispatch([domain, op, "begin" if op == "prepare" else "end", "-"],
                    with_guest_dt(kernel.root, xml), env)
    return code, err.getvalue()


def owner(kernel: FakeKernel, node: str) -> tuple[int, int, int]:
    st = os.stat(kernel.path(node))
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


ROOT_600 = (0, 0, 0o600)
QEMU_660 = (QEMU_UID, QEMU_UID, 0o660)


@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    return make_kernel(tmp_path / "root", virt_dtb)


def test_prepare_hands_over_the_cdev_and_dev_iommu_not_the_group(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [VIRTIO, VIRTIO2], iommufd=[VIRTIO])
    assert owner(kernel, "/dev/iommu") == ROOT_600
    assert run_hook(kernel, "vm1", "prepare", xml) == (0, "")
    first = device_state(kernel, "platform", VIRTIO)
    second = device_state(kernel, "platform", VIRTIO2)
    assert first.driver == second.driver == "vfio-platform"
    assert owner(kernel, "/dev/vfio/devices/vfio0") == QEMU_660
    assert owner(kernel, "/dev/iommu") == QEMU_660
    assert owner(kernel, f"/dev/vfio/{first.iommu_group}") == ROOT_600   # not QEMU's to open
    assert owner(kernel, f"/dev/vfio/{second.iommu_group}") == QEMU_660  # the legacy device's
    assert owner(kernel, "/dev/vfio/devices/vfio1") == ROOT_600
    record = Owners(kernel).read(VIRTIO)
    assert record is not None and record.state == "prepared" and record.node is None
    assert (record.cdev, list(record.cdev_owner), list(record.iommu_owner)) == (
        "/dev/vfio/devices/vfio0", [0, 0, 0o600], [0, 0, 0o600])

    assert run_hook(kernel, "vm1", "release", xml) == (0, "")
    assert owner(kernel, "/dev/iommu") == ROOT_600
    assert device_state(kernel, "platform", VIRTIO).driver is None
    assert not kernel.path("/dev/vfio/devices/vfio0").exists()  # unbound: the kernel's own
    assert Owners(kernel).all() == []


def test_dev_iommu_is_given_back_when_the_last_domain_using_it_goes(kernel: FakeKernel) -> None:
    one = libvirt_domain("vm1", [VIRTIO], iommufd=[VIRTIO])
    two = libvirt_domain("vm2", [VIRTIO2, VIRTIO3], iommufd=[VIRTIO2, VIRTIO3])
    assert run_hook(kernel, "vm1", "prepare", one) == (0, "")
    assert run_hook(kernel, "vm2", "prepare", two) == (0, "")
    assert list(Owners(kernel).read(VIRTIO3).iommu_owner) == [0, 0, 0o600]  # type: ignore[union-attr]
    assert run_hook(kernel, "vm1", "release", one) == (0, "")
    assert owner(kernel, "/dev/iommu") == QEMU_660  # vm2's QEMU still needs it
    assert run_hook(kernel, "vm2", "release", two) == (0, "")
    assert owner(kernel, "/dev/iommu") == ROOT_600


@pytest.mark.parametrize(("case", "reason"), [
    ("noiommu", "a000000.virtio_mmio uses the iommufd backend, but vfio0 has no char device: "
                "the device is in a no-IOMMU group, and the kernel gives no-IOMMU devices no "
                "vfio cdev (drivers/vfio/vfio.h vfio_device_add(): 'cdev does not support "
                "noiommu device'), so it cannot be bound to an iommufd"),
    ("no-cdev", "a000000.virtio_mmio uses the iommufd backend, but vfio1 has no char device: "
                "the kernel is built without CONFIG_VFIO_DEVICE_CDEV (drivers/vfio/Kconfig)"),
    ("no-iommufd", "a000000.virtio_mmio uses the iommufd backend, but /dev/iommu does not "
                   "exist (the iommufd module is not loaded, or the kernel has no "
                   "CONFIG_IOMMUFD)"),
])
def test_a_device_the_kernel_gives_no_cdev_is_refused_and_given_back(
        tmp_path: Path, virt_dtb: Path, case: str, reason: str) -> None:
    kernel = make_kernel(tmp_path / "root", virt_dtb, iommu="none" if case == "noiommu" else
                         "all", noiommu=case == "noiommu", vfio_cdev=case != "no-cdev",
                         iommufd=case != "no-iommufd")
    # a legacy device in a no-IOMMU group is refused on its own (test_hook.py)
    devices = [VIRTIO] if case == "noiommu" else [VIRTIO2, VIRTIO]
    xml = libvirt_domain("vm1", devices, iommufd=[VIRTIO])
    for allow_noiommu in (False, True):
        code, err = run_hook(kernel, "vm1", "prepare", xml, allow_noiommu=allow_noiommu)
        assert code == 1
        assert err.splitlines()[0] == f"platform-hostdev: prepare of domain vm1 refused: {reason}"
        assert "drop iommufd='yes'" in err
        for name in (VIRTIO, VIRTIO2):
            assert device_state(kernel, "platform", name).driver is None
        assert Owners(kernel).all() == []
        if case != "no-iommufd":
            assert owner(kernel, "/dev/iommu") == ROOT_600
        if case != "noiommu":
            break  # the no-IOMMU switch concerns only the no-IOMMU case
