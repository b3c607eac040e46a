"""The iommufd backend on a fake host: the kernel's vfio cdev and /dev/iommu, and the
define-time check that a device has its cdev (domain/validate.py check_cdev)."""
from __future__ import annotations

from pathlib import Path

import pytest
from platform_hostdev.binding.operations import detach, device_state, reattach
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import forward
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.inventory import load_inventory
from platform_hostdev.vfio.cdev import cdev_chrdev_registered, device_cdev

from tests.support.domains import user_domain
from tests.support.fakehost import build_fake_host, tree_state
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

VIRTIO = "a000000.virtio_mmio"
VIRTIO2 = "a000200.virtio_mmio"


def make(root: Path, dtb: Path, *, iommu: object = "all", noiommu: bool = False,
         vfio_cdev: bool = True, vfio_loaded: bool = True) -> FakeKernel:
    host = build_fake_host(root, dtb, drivers=QEMU_VIRT_DRIVERS, iommu=iommu,  # type: ignore[arg-type]
                           vfio_loaded=vfio_loaded, noiommu=noiommu)
    return FakeKernel(host, reset_required=False, vfio_cdev=vfio_cdev)


def _device(kernel: FakeKernel, name: str) -> object:
    return next(d for d in load_inventory(kernel.as_host()).devices if d.name == name)


def _sysfs(kernel: FakeKernel, name: str) -> str:
    return kernel.host_path(kernel.path(f"/sys/bus/platform/devices/{name}"))


def test_a_bound_device_gets_its_cdev_and_loses_it_on_unbind(tmp_path: Path,
                                                             virt_dtb: Path) -> None:
    kernel = make(tmp_path, virt_dtb)
    assert kernel.path("/dev/iommu").exists()
    assert kernel.path("/sys/module/iommufd/parameters/allow_unsafe_interrupts").read_text() \
        == "N\n"
    assert cdev_chrdev_registered(kernel) is True
    host = kernel.as_host()
    before = device_cdev(kernel, _sysfs(kernel, VIRTIO))
    assert before.name is None and "not bound to a vfio driver" in before.reason
    detach(host, _device(kernel, VIRTIO))  # type: ignore[arg-type]
    detach(host, _device(kernel, VIRTIO2))  # type: ignore[arg-type]
    group = device_state(kernel, "platform", VIRTIO).iommu_group
    cdev = device_cdev(kernel, _sysfs(kernel, VIRTIO), group)
    assert cdev == ("vfio0", "/dev/vfio/devices/vfio0", "")
    assert device_cdev(kernel, _sysfs(kernel, VIRTIO2)).node == "/dev/vfio/devices/vfio1"
    assert kernel.read_text(f"{_sysfs(kernel, VIRTIO)}/vfio-dev/vfio0/dev") == "507:0\n"
    reattach(host, _device(kernel, VIRTIO))  # type: ignore[arg-type]
    assert not kernel.path("/dev/vfio/devices/vfio0").exists()
    assert not kernel.path(f"{_sysfs(kernel, VIRTIO)}/vfio-dev").exists()
    detach(host, _device(kernel, VIRTIO))  # type: ignore[arg-type]
    assert device_cdev(kernel, _sysfs(kernel, VIRTIO)).name == "vfio0"  # lowest free index


def test_a_noiommu_device_is_registered_without_a_cdev(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make(tmp_path, virt_dtb, iommu="none", noiommu=True)
    detach(kernel.as_host(), _device(kernel, VIRTIO))  # type: ignore[arg-type]
    group = device_state(kernel, "platform", VIRTIO).iommu_group
    cdev = device_cdev(kernel, _sysfs(kernel, VIRTIO), group)
    assert cdev.name == "vfio0" and cdev.node is None
    assert "no-IOMMU group" in cdev.reason and "vfio_device_add()" in cdev.reason
    assert not kernel.path("/dev/vfio/devices").exists()


def test_a_kernel_without_vfio_device_cdev(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make(tmp_path, virt_dtb, vfio_cdev=False)
    assert cdev_chrdev_registered(kernel) is False
    detach(kernel.as_host(), _device(kernel, VIRTIO))  # type: ignore[arg-type]
    cdev = device_cdev(kernel, _sysfs(kernel, VIRTIO), "0")
    assert cdev.name == "vfio0" and cdev.node is None
    assert "CONFIG_VFIO_DEVICE_CDEV" in cdev.reason


def test_modprobe_vfio_loads_iommufd_first(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make(tmp_path, virt_dtb, vfio_loaded=False)
    assert not kernel.path("/dev/iommu").exists() and cdev_chrdev_registered(kernel) is None
    assert kernel.run(["modprobe", "vfio-platform"]).returncode == 0
    assert kernel.path("/dev/iommu").exists() and cdev_chrdev_registered(kernel) is True


def _forward(kernel: FakeKernel, devices: list[str], iommufd: list[str]) -> list[str]:
    tree = parse_xml(user_domain("vm", devices, iommufd=iommufd), "d")
    return forward(tree, load_inventory(kernel.as_host())).warnings


def test_define_accepts_an_iommufd_device_the_kernel_will_give_a_cdev(
        tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make(tmp_path, virt_dtb)
    assert _forward(kernel, [VIRTIO], [VIRTIO]) == []
    detach(kernel.as_host(), _device(kernel, VIRTIO))  # type: ignore[arg-type]
    assert _forward(kernel, [VIRTIO], [VIRTIO]) == []   # bound: its cdev is there


@pytest.mark.parametrize(("case", "words"), [
    ("noiommu", "has no IOMMU group"),
    ("noiommu-bound", "no-IOMMU group"),
    ("no-cdev", "'vfio-dev' is not in /proc/devices"),
    ("no-cdev-bound", "without CONFIG_VFIO_DEVICE_CDEV"),
])
def test_define_refuses_an_iommufd_device_without_a_cdev(tmp_path: Path, virt_dtb: Path,
                                                         case: str, words: str) -> None:
    noiommu = case.startswith("noiommu")
    kernel = make(tmp_path, virt_dtb, iommu="none" if noiommu else "all", noiommu=noiommu,
                  vfio_cdev=noiommu)
    if case.endswith("bound"):
        detach(kernel.as_host(), _device(kernel, VIRTIO))  # type: ignore[arg-type]
    before = tree_state(tmp_path)
    with pytest.raises(HostdevError) as info:
        _forward(kernel, [VIRTIO, VIRTIO2], [VIRTIO])
    assert info.value.code == "no-cdev" and words in info.value.what
    assert info.value.what.startswith(f"{VIRTIO} uses the iommufd backend, but ")
    assert "drop iommufd='yes'" in info.value.fix
    assert tree_state(tmp_path) == before
    # the legacy backend is not concerned
    assert _forward(kernel, [VIRTIO, VIRTIO2], []) == []


def test_define_with_vfio_not_loaded_warns_that_the_hook_checks(tmp_path: Path,
                                                                virt_dtb: Path) -> None:
    kernel = make(tmp_path, virt_dtb, vfio_loaded=False)
    assert _forward(kernel, [VIRTIO], [VIRTIO]) == [
        f"{VIRTIO}: vfio is not loaded, so its cdev was not checked; the hook checks it when "
        "the domain starts"]
