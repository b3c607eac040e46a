"""Checks a domain must pass before platform hostdevs are defined into it.

* The guest: arch aarch64, machine ``virt`` (``virt-X.Y`` too), booted with a
  device tree (no ``<features><acpi/>``): only the arm virt machine accepts
  vfio-platform as a dynamic sysbus device, and an ACPI guest ignores the DT.
* The emulator: has ``vfio-platform`` (see :mod:`qemu_caps`).
* An iommufd hostdev (``<driver iommufd='yes'>``): the emulator's
  vfio-platform has the ``iommufd`` property (:func:`check_emulator`), and the
  kernel gives the device a vfio cdev (:func:`check_cdev`: bound to vfio, it
  has ``vfio-dev/vfioN`` with a char device; not bound yet, the kernel has the
  cdev region and the device an IOMMU group, since no-IOMMU devices get none).
* Each hostdev: well-formed names (``inventory.check_spec``), ``<device name>``
  a sysfs name, DT path and name agreeing, no device twice, no AMBA device
  (the rules of :mod:`platform_hostdev.domain.rules`, which the hook applies
  too).

Host check rule: devices are resolved against an :class:`inventory.Inventory`
when one is given (the live host, or ``--dtb``). The caller passes ``None``
when the host cannot know them (no device tree, e.g. x86 CI; a remote
connection; ``--no-host-check``): the translation then uses the given name,
needs ``<device name=...>`` for every hostdev, and warns that nothing was
checked on a host.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lxml import etree

from platform_hostdev.domain.model import PlatformHostdev
from platform_hostdev.domain.rules import (
    check_names_agree,
    refuse_acpi,
    refuse_duplicates,
    refuse_non_platform,
)
from platform_hostdev.errors import (
    DeviceNotFoundError,
    HostdevError,
    InvalidDeviceSpecError,
    printable,
)
from platform_hostdev.host.inventory import Device, Inventory, check_spec
from platform_hostdev.vfio.cdev import cdev_chrdev_registered, device_cdev
from platform_hostdev.vfio.uapi import VFIO_DRIVERS
from platform_hostdev.virt.qemu_caps import QemuCaps, check_iommufd, check_vfio_platform
from platform_hostdev.virt.qemu_nodes import qemu_builds_node

__all__ = [
    "ResolvedHostdev",
    "device_model",
    "resolve_hostdevs",
    "check_domain",
    "domain_emulator",
    "check_emulator",
    "check_cdev",
]

_MACHINE = re.compile(r"virt(-\d+\.\d+)?")


@dataclass(frozen=True)
class ResolvedHostdev:
    """A hostdev with the host device name QEMU gets and the QEMU device model."""

    hostdev: PlatformHostdev
    name: str
    dt_path: str | None
    model: str
    checked: bool  # True when the device was found on the host (or in --dtb)


def device_model(compatible: Sequence[str]) -> str:
    """The QEMU device for a host device's compatible list."""
    return qemu_builds_node(compatible) or "vfio-platform"


def _check_form(hostdev: PlatformHostdev) -> None:
    if hostdev.dt_path is not None and check_spec(hostdev.dt_path) != "path":
        raise InvalidDeviceSpecError(f"devicetree path {hostdev.dt_path!r} is not a DT path",
                                     "a DT path is absolute, e.g. /soc/ethernet@ff0e0000")
    if hostdev.name is not None and check_spec(hostdev.name) != "name":
        raise InvalidDeviceSpecError(f"device name {hostdev.name!r} is not a sysfs name",
                                     "a device name has no '/', e.g. ff0e0000.ethernet")


def _on_host(hostdev: PlatformHostdev, inventory: Inventory) -> Device:
    """The host device a hostdev names: <device name> is the sysfs name, looked up as such
    (as the hook looks it up), else the device at <devicetree path>."""
    if hostdev.name is not None:
        device = inventory.by_name.get(hostdev.name)
        if device is None:
            raise DeviceNotFoundError(hostdev.name, _not_a_sysfs_name(hostdev.name, inventory))
    else:
        assert hostdev.dt_path is not None  # the schema requires a path or a name
        device = inventory.resolve(hostdev.dt_path)
    check_names_agree(hostdev.name, hostdev.dt_path, device.name, device.dt_path)
    refuse_non_platform(device.name, device.bus, device.dt_path)
    if not device.name.isprintable():  # it goes into the XML and QEMU's command line
        raise InvalidDeviceSpecError(
            f"the host device at {printable(device.dt_path or '?')} is named "
            f"'{printable(device.name)}', with characters the domain XML cannot carry",
            "the host's sysfs has been tampered with or its DT node names are broken; fix the "
            "node name in the host's DTS")
    return device


def _not_a_sysfs_name(name: str, inventory: Inventory) -> str:
    try:
        other = inventory.resolve(name)
    except HostdevError:
        return ("<device name> takes the sysfs device name, e.g. ff0e0000.ethernet "
                "('platform-hostdev nodedev-list' lists them)")
    return (f"{name} is another name of {other.name}: <device name> takes the sysfs device "
            f"name, which the hook and QEMU look up; write <device name='{other.name}'/>")


def resolve_hostdevs(hostdevs: Sequence[PlatformHostdev], inventory: Inventory | None) -> \
        tuple[list[ResolvedHostdev], list[str]]:
    """Resolve every hostdev (see the module docstring); returns them and warnings."""
    resolved: list[ResolvedHostdev] = []
    warnings: list[str] = []
    for hostdev in hostdevs:
        _check_form(hostdev)
        if inventory is not None:
            device = _on_host(hostdev, inventory)
            if hostdev.iommufd:
                warnings += check_cdev(device, inventory)
            resolved.append(ResolvedHostdev(hostdev, device.name, device.dt_path,
                                            device_model(device.compatible), True))
            continue
        if hostdev.name is None:
            raise HostdevError(
                f"hostdev {hostdev.dt_path} gives only a DT path, and this host cannot tell "
                "which device name it has",
                "add <device name='...'/> to <source>, run on the host that has the device, "
                "or pass --dtb with the host's DTB", code="device-not-found")
        if hostdev.iommufd:
            warnings.append(f"{hostdev.label}: its vfio cdev was not checked (no device tree "
                            "here); the hook checks it when the domain starts")
        warnings.append(f"{hostdev.label}: not checked on a host (no device tree here); "
                        "QEMU will look for /sys/bus/platform/devices/"
                        f"{hostdev.name} when the domain starts")
        resolved.append(ResolvedHostdev(hostdev, hostdev.name, hostdev.dt_path,
                                        "vfio-platform", False))
    refuse_duplicates((r.hostdev, r.name, r.dt_path) for r in resolved)
    return resolved, warnings


def check_domain(root: etree._Element) -> None:
    """The guest must be an aarch64 virt machine booted with a device tree."""
    if root.tag != "domain":
        raise HostdevError(f"the document's root element is <{root.tag}>, not <domain>",
                           "give a libvirt domain XML (virsh dumpxml DOMAIN shows one)",
                           code="xml-invalid")
    os_type = root.find("os/type")
    arch = os_type.get("arch") if os_type is not None else None
    machine = os_type.get("machine") if os_type is not None else None
    if arch != "aarch64":
        raise HostdevError(
            f"platform hostdevs need an aarch64 guest; this domain's arch is {arch or 'unset'}",
            "set <os><type arch='aarch64' machine='virt'>hvm</type></os>", code="xml-invalid")
    if machine is not None and not _MACHINE.fullmatch(machine):
        raise HostdevError(
            f"platform hostdevs need QEMU's arm 'virt' machine; this domain uses {machine!r}",
            "set machine='virt' (or a versioned virt-X.Y) on <os><type>: only virt accepts "
            "vfio-platform as a dynamic sysbus device", code="xml-invalid")
    refuse_acpi(root)


def domain_emulator(root: etree._Element, conn: object | None) -> str | None:
    """The emulator path: <devices><emulator>, else libvirt's default for aarch64/virt."""
    text = root.findtext("devices/emulator")
    if text:
        return text.strip()
    if conn is None:
        return None
    from platform_hostdev.virt.connection import libvirt_errors

    type_el = root.find("os/type")
    machine = type_el.get("machine") if type_el is not None else None
    with libvirt_errors("cannot ask libvirt for the aarch64 emulator",
                        "install qemu-system-arm on the libvirt host or set <emulator>"):
        caps = conn.getDomainCapabilities(None, "aarch64", machine or "virt",  # type: ignore[attr-defined]
                                          root.get("type") or "qemu", 0)
    path = etree.fromstring(caps.encode()).findtext("path")
    return path.strip() if path else None


def check_cdev(device: Device, inventory: Inventory) -> list[str]:
    """Refuse an iommufd hostdev whose device the kernel gives no vfio cdev; warnings when
    it cannot be told yet. Only a live host's devices are checked (not a --dtb's)."""
    fs = inventory.fs
    if fs is None or device.origin != "host" or device.sysfs_path is None:
        return [f"{device.name}: its vfio cdev was not checked (not a live host)"]
    fix = ("keep the legacy backend (drop iommufd='yes'), or give the device an IOMMU and a "
           "kernel with CONFIG_VFIO_DEVICE_CDEV=y ('platform-hostdev check-host' checks both)")
    if device.driver == VFIO_DRIVERS.get(device.bus):
        cdev = device_cdev(fs, device.sysfs_path, device.iommu_group)
        if cdev.node is None:
            raise HostdevError(f"{device.name} uses the iommufd backend, but {cdev.reason}",
                               fix, code="no-cdev", device=device.name)
        return []
    if device.iommu_group is None:
        raise HostdevError(f"{device.name} uses the iommufd backend, but has no IOMMU group: "
                           "bound to vfio it would be a no-IOMMU device, and the kernel gives "
                           "those no vfio cdev (drivers/vfio/vfio.h vfio_device_add())", fix,
                           code="no-cdev", device=device.name)
    registered = cdev_chrdev_registered(fs)
    if registered is False:
        raise HostdevError(f"{device.name} uses the iommufd backend, but this kernel has no "
                           "vfio cdev ('vfio-dev' is not in /proc/devices: built without "
                           "CONFIG_VFIO_DEVICE_CDEV)", fix, code="no-cdev", device=device.name)
    if registered is None:
        return [f"{device.name}: vfio is not loaded, so its cdev was not checked; the hook "
                "checks it when the domain starts"]
    return []


def check_emulator(emulator: str | None, probe: Callable[[str], QemuCaps],
                   properties: Callable[[str, str], frozenset[str]] | None = None,
                   iommufd_models: Sequence[str] = ()) -> list[str]:
    """Refuse an emulator without vfio-platform, or without the ``iommufd`` property on a
    model an iommufd hostdev uses (``properties(emulator, model)``); warnings otherwise."""
    if emulator is None:
        return ["the emulator was not checked for vfio-platform (no <emulator> and no "
                "libvirt connection)"]
    warnings = check_vfio_platform(probe(emulator))
    if properties is not None:
        for model in dict.fromkeys(iommufd_models):
            check_iommufd(emulator, model, properties(emulator, model))
    return warnings
