"""check-host for domains on the iommufd backend (and for the host alone): the kernel's
cdev support, /dev/iommu, each device's cdev and interrupt isolation, qemu.conf's
cgroup_device_acl and AppArmor for /dev/iommu and the cdev, QEMU's iommufd property."""
from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import pytest
from platform_hostdev.binding.operations import detach
from platform_hostdev.checkhost.iommufd import UNSAFE_INTERRUPTS_FIX
from platform_hostdev.host.inventory import load_inventory

from tests.fakehost.test_checkhost import DEV, LIMIT, RULES, Setup, acl, put, statuses
from tests.unit.test_qemu_iommufd import VFIO_PLATFORM_HELP, WITHOUT_IOMMUFD

IOMMUFD_RULES = "/dev/iommu rw,\n/dev/vfio/devices/vfio[0-9]* rw,\n"
UNSAFE = "/sys/module/iommufd/parameters/allow_unsafe_interrupts"
RELEASE = "6.12.0-fake-arm64"


class IommufdSetup(Setup):
    """The ready host of test_checkhost, the domain's device on the iommufd backend and
    bound to vfio-platform (so its cdev exists), every iommufd entry in place."""

    def __init__(self, tmp_path: Path, dtb: Path) -> None:
        super().__init__(tmp_path, dtb)
        self.help = VFIO_PLATFORM_HELP
        device = next(d for d in load_inventory(self.kernel.as_host()).devices
                      if d.name == DEV)
        detach(self.kernel.as_host(), device)
        self.write_domain(f"<source><device name='{DEV}'/></source><driver iommufd='yes'/>")
        put(self.host, "/etc/libvirt/qemu.conf",
            acl("/dev/iommu", "/dev/vfio/devices/vfio0"))
        put(self.host, "/etc/apparmor.d/local/abstractions/libvirt-qemu", RULES + IOMMUFD_RULES)
        put(self.host, UNSAFE, "Y\n")

    def runner(self, argv: Sequence[str]) -> str:
        if argv[-1] == "vfio-platform,help":
            return self.help
        return super().runner(argv)


@pytest.fixture
def ready(tmp_path: Path, virt_dtb: Path) -> IommufdSetup:
    return IommufdSetup(tmp_path, virt_dtb)


def test_a_ready_iommufd_host_passes(ready: IommufdSetup) -> None:
    code, checks = ready.checks(str(ready.domain))
    assert code == 0
    bad = {k: v for k, v in statuses(checks).items() if v != "PASS"}
    assert bad == {f"{DEV} reset": "WARN", "QEMU vfio-platform": "WARN",
                   f"{DEV} interrupt isolation": "WARN"}   # allow_unsafe_interrupts=Y
    assert checks[f"{DEV} vfio cdev"]["finding"] == "vfio0: /dev/vfio/devices/vfio0"
    assert checks["QEMU iommufd"]["finding"] == (
        f"vfio-platform of {ready.emulator} has the iommufd property")
    assert checks["CONFIG_VFIO_DEVICE_CDEV"]["finding"] == (
        "no kernel config to read, but /proc/devices lists vfio-dev: vfio devices get a cdev")
    assert checks["iommufd"]["finding"] == "/dev/iommu exists"
    # the iommufd device's group node is not QEMU's to open: the ACL needs no /dev/vfio/N
    assert checks["qemu.conf cgroup_device_acl"]["finding"] == (
        "holds /dev/iommu, /dev/vfio/devices/vfio0 and libvirt's defaults")


def test_acl_without_dev_iommu_and_the_cdev_shows_the_full_list(ready: IommufdSetup) -> None:
    put(ready.host, "/etc/libvirt/qemu.conf", acl("/dev/vfio/vfio"))
    code, checks = ready.checks(str(ready.domain))
    assert code == 1
    check = checks["qemu.conf cgroup_device_acl"]
    assert check["status"] == "FAIL"
    assert check["finding"].startswith("/dev/iommu, /dev/vfio/devices/vfio0 missing from set in ")
    assert check["fix"].endswith('"/dev/vfio/vfio", "/dev/iommu", "/dev/vfio/devices/vfio0" ]; '
                                 "then restart libvirtd")


def test_apparmor_without_the_iommufd_nodes(ready: IommufdSetup) -> None:
    put(ready.host, "/etc/apparmor.d/local/abstractions/libvirt-qemu", RULES)
    code, checks = ready.checks(str(ready.domain))
    assert code == 1
    assert checks["AppArmor"]["fix"] == (
        "append to /etc/apparmor.d/local/abstractions/libvirt-qemu: /dev/iommu rw, "
        "/dev/vfio/devices/vfio[0-9]* rw, (the profile of each domain is rebuilt at its next "
        "start)")
    put(ready.host, "/etc/apparmor.d/local/abstractions/libvirt-qemu",
        RULES + "/dev/iommu rw,\n/dev/vfio/devices/* rw,\n")
    assert ready.checks(str(ready.domain))[1]["AppArmor"]["status"] == "PASS"


def test_interrupts_not_isolated_without_allow_unsafe_interrupts(ready: IommufdSetup) -> None:
    put(ready.host, UNSAFE, "N\n")
    code, checks = ready.checks(str(ready.domain))
    assert code == 1
    check = checks[f"{DEV} interrupt isolation"]
    assert check == {
        "check": f"{DEV} interrupt isolation", "status": "FAIL",
        "finding": "no msi-parent to a GICv3 ITS: the platform cannot isolate its interrupts "
                   "(drivers/iommu/iommufd/device.c iommufd_device_bind()); iommufd "
                   "allow_unsafe_interrupts=N, so VFIO_DEVICE_BIND_IOMMUFD fails with EPERM",
        "fix": UNSAFE_INTERRUPTS_FIX}
    assert check["fix"].startswith(
        "echo Y > /sys/module/iommufd/parameters/allow_unsafe_interrupts (now), and echo "
        "'options iommufd allow_unsafe_interrupts=1' > /etc/modprobe.d/iommufd.conf")


def test_kernel_config_without_vfio_device_cdev(ready: IommufdSetup) -> None:
    put(ready.host, f"/boot/config-{RELEASE}",
        "CONFIG_VFIO=m\n# CONFIG_VFIO_DEVICE_CDEV is not set\nCONFIG_IOMMUFD=m\n")
    code, checks = ready.checks(str(ready.domain))
    assert code == 1
    check = checks["CONFIG_VFIO_DEVICE_CDEV"]
    assert (check["status"], check["finding"]) == (
        "FAIL", f"not set in /boot/config-{RELEASE}: vfio devices get no cdev, so the iommufd "
                "backend cannot open them")
    assert check["fix"].startswith("use a kernel built with CONFIG_IOMMUFD=m and "
                                   "CONFIG_VFIO_DEVICE_CDEV=y")
    ready.host.path(f"/boot/config-{RELEASE}").unlink()
    ready.host.path("/proc/config.gz").write_bytes(gzip.compress(b"CONFIG_VFIO_DEVICE_CDEV=y\n"))
    checks = ready.checks(str(ready.domain))[1]
    assert checks["CONFIG_VFIO_DEVICE_CDEV"]["finding"] == (
        "=y in /proc/config.gz: vfio devices get a cdev (/dev/vfio/devices/vfioN)")


def test_qemu_without_the_iommufd_property(ready: IommufdSetup) -> None:
    ready.help = WITHOUT_IOMMUFD
    code, checks = ready.checks(str(ready.domain))
    assert code == 1 and checks["QEMU iommufd"]["status"] == "FAIL"
    assert "has no iommufd property" in checks["QEMU iommufd"]["finding"]


def test_a_device_not_yet_bound_cannot_name_its_cdev(tmp_path: Path, virt_dtb: Path) -> None:
    setup = Setup(tmp_path, virt_dtb)
    setup.write_domain(f"<source><device name='{DEV}'/></source><driver iommufd='yes'/>",
                       extra=LIMIT)
    checks = setup.checks(str(setup.domain))[1]
    assert checks[f"{DEV} vfio cdev"]["status"] == "WARN"
    assert checks[f"{DEV} vfio cdev"]["fix"] == (
        f"platform-hostdev nodedev-detach {DEV}, then run check-host again for the exact "
        "cgroup_device_acl entry")
    assert "/dev/iommu missing" in checks["qemu.conf cgroup_device_acl"]["finding"]


def test_a_legacy_domain_and_the_host_alone(tmp_path: Path, virt_dtb: Path) -> None:
    setup = Setup(tmp_path, virt_dtb)
    legacy = setup.checks(str(setup.domain))[1]
    assert "CONFIG_VFIO_DEVICE_CDEV" not in legacy and "QEMU iommufd" not in legacy
    alone = setup.checks()[1]
    assert statuses(alone)["CONFIG_VFIO_DEVICE_CDEV"] == "PASS"
    assert statuses(alone)["iommufd"] == "PASS"
