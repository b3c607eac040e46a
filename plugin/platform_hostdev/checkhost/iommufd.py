"""check-host for the iommufd backend: the kernel's cdev support, /dev/iommu, each device's
cdev and whether its interrupts can be isolated.

* CONFIG_VFIO_DEVICE_CDEV (drivers/vfio/Kconfig; it depends on IOMMUFD): read
  from /boot/config-RELEASE or /proc/config.gz; without either, from
  /proc/devices (vfio_cdev_init() registers "vfio-dev" when vfio loads).
* /dev/iommu: the iommufd module (drivers/iommu/iommufd/main.c); vfio loads it
  when IOMMUFD=m, since vfio then uses its symbols.
* Per device: its cdev (:mod:`platform_hostdev.vfio.cdev`), and interrupt
  isolation: VFIO_DEVICE_BIND_IOMMUFD fails with EPERM
  (drivers/iommu/iommufd/device.c iommufd_device_bind()) unless every device
  of the group has its MSIs isolated (drivers/iommu/iommu.c
  iommu_group_has_isolated_msi(), kernel/irq/msi.c
  msi_device_has_isolated_msi(): an MSI domain flagged
  IRQ_DOMAIN_FLAG_ISOLATED_MSI, which the GICv3 ITS sets,
  drivers/irqchip/irq-gic-v3-its.c) or iommufd's ``allow_unsafe_interrupts``
  is set. A platform device has an MSI domain only through a ``msi-parent``
  (drivers/of/irq.c of_msi_configure()); one with wired interrupts has none,
  and arm64 has no arch_is_isolated_msi().
"""
from __future__ import annotations

import gzip
import zlib

from platform_hostdev.checkhost.model import FAIL, PASS, WARN, Check, module_state
from platform_hostdev.host.attributes import read_bool_param
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device, Inventory
from platform_hostdev.host.processes import ModprobeRunner
from platform_hostdev.vfio.cdev import (
    IOMMU_NODE,
    IOMMUFD_UNSAFE_INTERRUPTS,
    UNSAFE_INTERRUPTS_FIX,
    UNSAFE_INTERRUPTS_RISK,
    cdev_chrdev_registered,
    device_cdev,
)
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

__all__ = ["IOMMUFD_APPARMOR_RULES", "UNSAFE_INTERRUPTS_FIX", "kernel_config",
           "iommufd_host_checks", "cdev_check", "interrupt_check"]

IOMMUFD_APPARMOR_RULES = (("/dev/iommu", "rw"), ("/dev/vfio/devices/vfio[0-9]*", "rw"))
"""What QEMU's iommufd backend opens (backends/iommufd.c, hw/vfio/iommufd.c)."""
_CDEV = "CONFIG_VFIO_DEVICE_CDEV"
_REBUILD = (f"use a kernel built with CONFIG_IOMMUFD=m and {_CDEV}=y (drivers/vfio/Kconfig), "
            "or keep the legacy backend (drop iommufd='yes')")


def kernel_config(fs: HostFs) -> tuple[dict[str, str] | None, str]:
    """The running kernel's options (NAME -> value, "n" for "is not set") and where they
    were read; (None, "") when neither /boot/config-RELEASE nor /proc/config.gz is there."""
    release = (fs.read_text("/proc/sys/kernel/osrelease") or "").strip()
    where = f"/boot/config-{release}"
    text = fs.read_text(where) if release else None
    if text is None:
        where = "/proc/config.gz"
        try:
            text = gzip.decompress(fs.path(where).read_bytes()).decode(errors="replace")
        except (OSError, EOFError, zlib.error):
            return None, ""
    options: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, _, value = line.partition("=")
            options[name] = value.strip()
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[2:-len(" is not set")]] = "n"
    return options, where


def iommufd_host_checks(fs: HostFs, modprobe: ModprobeRunner | None,
                        for_domain: bool) -> list[Check]:
    """CONFIG_VFIO_DEVICE_CDEV and /dev/iommu (FAIL for a domain that needs them, else WARN)."""
    bad = FAIL if for_domain else WARN
    checks = []
    options, where = kernel_config(fs)
    if options is not None:
        value = options.get(_CDEV, "n")
        if value == "y":
            checks.append(Check(_CDEV, PASS, f"=y in {where}: vfio devices get a cdev "
                                "(/dev/vfio/devices/vfioN)"))
        else:
            checks.append(Check(_CDEV, bad, f"not set in {where}: vfio devices get no cdev, "
                                "so the iommufd backend cannot open them", _REBUILD))
    else:
        registered = cdev_chrdev_registered(fs)
        if registered:
            checks.append(Check(_CDEV, PASS, "no kernel config to read, but /proc/devices "
                                "lists vfio-dev: vfio devices get a cdev"))
        elif registered is False:
            checks.append(Check(_CDEV, bad, "no kernel config to read, and vfio is loaded "
                                "without the vfio-dev region in /proc/devices: the kernel has "
                                f"no {_CDEV}", _REBUILD))
        else:
            checks.append(Check(_CDEV, WARN, "neither /boot/config-RELEASE nor /proc/config.gz, "
                                "and vfio is not loaded: cannot tell", "modprobe vfio and run "
                                "check-host again"))
    if fs.path(IOMMU_NODE).exists():
        checks.append(Check("iommufd", PASS, f"{IOMMU_NODE} exists"))
    else:
        state = module_state(fs, "iommufd", modprobe)
        if state in ("loaded", "loadable"):
            checks.append(Check("iommufd", PASS, f"{IOMMU_NODE} appears when the iommufd "
                                f"module loads ({state}; loading vfio loads it)"))
        else:
            checks.append(Check("iommufd", bad, f"no {IOMMU_NODE} and no iommufd module "
                                f"({state}): the iommufd backend has nothing to open",
                                "use a kernel built with CONFIG_IOMMUFD=m (or y), or keep the "
                                "legacy backend"))
    return checks


def cdev_check(fs: HostFs, device: Device) -> tuple[Check, str | None]:
    """The device's cdev node when vfio has it; the check saying so (or why not yet)."""
    label = f"{device.name} vfio cdev"
    if device.driver != VFIO_DRIVERS.get(device.bus) or device.sysfs_path is None:
        return Check(label, WARN, f"not bound to {VFIO_DRIVERS.get(device.bus)} yet: the kernel "
                     "numbers its cdev (/dev/vfio/devices/vfioN) when vfio takes it, so "
                     "cgroup_device_acl cannot be checked for it",
                     f"platform-hostdev nodedev-detach {device.name}, then run check-host again "
                     "for the exact cgroup_device_acl entry"), None
    cdev = device_cdev(fs, device.sysfs_path, device.iommu_group)
    if cdev.node is None:
        return Check(label, FAIL, cdev.reason, _REBUILD), None
    return Check(label, PASS, f"{cdev.name}: {cdev.node}"), cdev.node


def _isolating_msi_parent(inventory: Inventory, device: Device) -> str | None:
    """The GICv3 ITS the device's MSIs go to (its ``msi-parent``), or None."""
    node = inventory.tree.by_path.get(device.dt_path) if device.dt_path else None
    if node is None or not node.has("msi-parent") or len(node.properties["msi-parent"]) < 4:
        return None
    parent = inventory.tree.by_phandle.get(node.u32("msi-parent"))
    if parent is None or "arm,gic-v3-its" not in parent.strings("compatible"):
        return None
    return parent.path


def interrupt_check(fs: HostFs, inventory: Inventory, device: Device) -> Check:
    """Whether VFIO_DEVICE_BIND_IOMMUFD will accept the device's interrupts (module docstring)."""
    label = f"{device.name} interrupt isolation"
    its = _isolating_msi_parent(inventory, device)
    if its is not None:
        return Check(label, PASS, f"its MSIs go to the GICv3 ITS {its}, which isolates them")
    unsafe = read_bool_param(fs, IOMMUFD_UNSAFE_INTERRUPTS)
    why = ("no msi-parent to a GICv3 ITS: the platform cannot isolate its interrupts "
           "(drivers/iommu/iommufd/device.c iommufd_device_bind())")
    if unsafe:
        return Check(label, WARN, f"{why}; iommufd allow_unsafe_interrupts=Y lets the bind "
                     f"through: {UNSAFE_INTERRUPTS_RISK}", "accept the risk, or pass a device "
                     "whose MSIs go through a GICv3 ITS")
    state = "N" if unsafe is False else "N (iommufd not loaded; the default)"
    return Check(label, FAIL, f"{why}; iommufd allow_unsafe_interrupts={state}, so "
                 "VFIO_DEVICE_BIND_IOMMUFD fails with EPERM", UNSAFE_INTERRUPTS_FIX)
