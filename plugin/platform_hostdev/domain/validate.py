"""Checks a domain must pass before platform hostdevs are defined into it.

* The guest: arch aarch64, machine ``virt`` (``virt-X.Y`` too), booted with a
  device tree (no ``<features><acpi/>``): only the arm virt machine accepts
  vfio-platform as a dynamic sysbus device, and an ACPI guest ignores the DT.
* The emulator: has ``vfio-platform`` (see :mod:`qemu_caps`).
* Each hostdev: well-formed names (``inventory.check_spec``), DT path and name
  agreeing, no device twice, no AMBA device (QEMU requires
  VFIO_DEVICE_FLAGS_PLATFORM and refuses vfio-amba devices).

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

from platform_hostdev.domain.hostdev import PlatformHostdev
from platform_hostdev.errors import HostdevError, InvalidDeviceSpecError
from platform_hostdev.guestdt.rules import qemu_builds_node
from platform_hostdev.host.inventory import Device, Inventory, check_spec
from platform_hostdev.virt.qemu_caps import QemuCaps, check_vfio_platform

__all__ = [
    "ResolvedHostdev",
    "device_model",
    "resolve_hostdevs",
    "check_domain",
    "domain_emulator",
    "check_emulator",
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
    by_path = inventory.resolve(hostdev.dt_path) if hostdev.dt_path else None
    by_name = inventory.resolve(hostdev.name) if hostdev.name else None
    if by_path is not None and by_name is not None and by_path.name != by_name.name:
        raise HostdevError(
            f"hostdev names two devices: DT path {hostdev.dt_path} is {by_path.name} "
            f"but device name {hostdev.name} is {by_name.name} ({by_name.dt_path or 'no DT node'})",
            "give one of them, or make <devicetree path> and <device name> name the same device "
            "('platform-hostdev nodedev-list' shows both)", code="dt-mismatch")
    device = by_path or by_name
    assert device is not None  # the schema requires a path or a name
    if device.bus == "amba":
        raise HostdevError(
            f"{device.name} ({device.dt_path}) is an AMBA (primecell) device; QEMU's "
            "vfio-platform accepts only devices with VFIO_DEVICE_FLAGS_PLATFORM and refuses "
            "vfio-amba devices",
            "AMBA devices cannot be passed to QEMU guests; pick a platform device",
            code="amba-unsupported")
    return device


def resolve_hostdevs(hostdevs: Sequence[PlatformHostdev], inventory: Inventory | None) -> \
        tuple[list[ResolvedHostdev], list[str]]:
    """Resolve every hostdev (see the module docstring); returns them and warnings."""
    resolved: list[ResolvedHostdev] = []
    warnings: list[str] = []
    for hostdev in hostdevs:
        _check_form(hostdev)
        if inventory is not None:
            device = _on_host(hostdev, inventory)
            resolved.append(ResolvedHostdev(hostdev, device.name, device.dt_path,
                                            device_model(device.compatible), True))
            continue
        if hostdev.name is None:
            raise HostdevError(
                f"hostdev {hostdev.dt_path} gives only a DT path, and this host cannot tell "
                "which device name it has",
                "add <device name='...'/> to <source>, run on the host that has the device, "
                "or pass --dtb with the host's DTB", code="device-not-found")
        warnings.append(f"{hostdev.label}: not checked on a host (no device tree here); "
                        "QEMU will look for /sys/bus/platform/devices/"
                        f"{hostdev.name} when the domain starts")
        resolved.append(ResolvedHostdev(hostdev, hostdev.name, hostdev.dt_path,
                                        "vfio-platform", False))
    _refuse_duplicates(resolved)
    return resolved, warnings


def _refuse_duplicates(resolved: Sequence[ResolvedHostdev]) -> None:
    seen: dict[tuple[str, str], ResolvedHostdev] = {}
    for item in resolved:
        keys = [("device", item.name)]
        if item.dt_path:
            keys.append(("DT path", item.dt_path))
        if item.hostdev.alias:
            keys.append(("alias", item.hostdev.alias))
        for key in keys:
            other = seen.get(key)
            if other is not None:
                raise HostdevError(
                    f"{key[0]} {key[1]} appears in two platform hostdevs "
                    f"({other.hostdev.label} and {item.hostdev.label})",
                    "a device can be given to a domain once, and aliases must be unique: "
                    "remove one of the two <hostdev> elements", code="duplicate-device")
            seen[key] = item


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
    if root.find("features/acpi") is not None:
        raise HostdevError(
            "this domain boots with ACPI (<features><acpi/>); the guest would ignore the "
            "device tree that describes the passed-through devices",
            "remove <acpi/> from <features> so the guest boots with a device tree",
            code="acpi-unsupported")


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


def check_emulator(emulator: str | None, probe: Callable[[str], QemuCaps]) -> list[str]:
    """Refuse an emulator without vfio-platform; warnings otherwise (see qemu_caps)."""
    if emulator is None:
        return ["the emulator was not checked for vfio-platform (no <emulator> and no "
                "libvirt connection)"]
    return check_vfio_platform(probe(emulator))
