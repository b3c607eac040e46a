"""check-host: the domain and each platform device it asks for.

Per device: the host does not use it (:mod:`protection`), its detach would
not unbind other devices and its driver allows unbinding (device links,
:mod:`devlinks`; the hook refuses both), it has a usable
IOMMU group (QEMU cannot use no-IOMMU groups), vfio-platform will accept it
(a reset handler, or reset_required=0 with its risk), its group is viable
(:mod:`~platform_hostdev.vfio.groups`: every member bound to a vfio driver,
unbound, or in the domain), and an unmanaged device is already detached.
A device on the iommufd backend also gets its vfio cdev and interrupt
isolation checked (:mod:`~platform_hostdev.checkhost.iommufd`), and QEMU opens
its cdev and /dev/iommu instead of its group node.
Both the user form and the translated form of a domain are read (the
translated one through :func:`translate.backward`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from lxml import etree

from platform_hostdev.binding.preflight import (
    NOIOMMU_PARAM,
    RESET_REQUIRED_FIX,
    RESET_REQUIRED_PARAM,
    RESET_RISK,
    UPSTREAM_RESET_HANDLERS,
    has_reset_handler,
    kernel_release,
)
from platform_hostdev.checkhost.iommufd import cdev_check, interrupt_check
from platform_hostdev.checkhost.model import FAIL, PASS, WARN, Check
from platform_hostdev.domain.hostdev import PlatformHostdev
from platform_hostdev.domain.translate import backward, platform_hostdev_elements
from platform_hostdev.domain.validate import check_domain, resolve_hostdevs
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.attributes import read_bool_param
from platform_hostdev.host.devlinks import (
    DevLink,
    UnbindForbiddenError,
    device_links,
    refuse_forbidden_own,
)
from platform_hostdev.host.fs import HostFs, is_noiommu
from platform_hostdev.host.inventory import Device, Inventory
from platform_hostdev.host.protection import (
    consumers_error,
    dt_users_error,
    host_usage,
    unbind_impact,
)
from platform_hostdev.vfio.groups import group_blockers, group_members
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

__all__ = ["requested_hostdevs", "guest_check", "device_checks", "DeviceNodes"]


class DeviceNodes(NamedTuple):
    """What QEMU opens for the domain's devices: legacy groups, iommufd nodes."""

    groups: list[str]           # IOMMU groups of legacy devices (/dev/vfio/N)
    iommufd: list[str]          # /dev/iommu and the cdevs of iommufd devices
    legacy: bool                # a device uses the legacy backend (/dev/vfio/vfio)


def requested_hostdevs(tree: etree._ElementTree) -> tuple[list[PlatformHostdev], list[Check]]:
    """The platform hostdevs of a domain in either form, or a FAIL saying why not."""
    try:
        user = backward(tree)
        elements = platform_hostdev_elements(user.getroot())
        models = [PlatformHostdev.from_element(e, f"platform hostdev #{i + 1}")
                  for i, e in enumerate(elements)]
    except HostdevError as exc:
        return [], [Check("domain XML", FAIL, exc.what, exc.fix)]
    if not models:
        return [], [Check("domain XML", WARN, "the domain has no platform hostdevs",
                          "add <hostdev mode='subsystem' type='platform'> elements "
                          "(platform-hostdev attach-device)")]
    return models, [Check("domain XML", PASS, f"{len(models)} platform hostdev(s)")]


def guest_check(root: etree._Element) -> Check:
    """The guest is an aarch64 virt machine booted with a device tree."""
    try:
        check_domain(root)
    except HostdevError as exc:
        return Check("guest", FAIL, exc.what, exc.fix)
    return Check("guest", PASS, "aarch64 'virt' machine booted with a device tree")


def device_checks(fs: HostFs, inventory: Inventory,
                  hostdevs: Sequence[PlatformHostdev]) -> tuple[list[Check], DeviceNodes]:
    """Checks of every requested device, and the nodes QEMU will open."""
    checks: list[Check] = []
    pairs: list[tuple[PlatformHostdev, Device]] = []
    for hostdev in hostdevs:
        try:
            resolved = resolve_hostdevs([hostdev], inventory)[0][0]
        except HostdevError as exc:
            checks.append(Check(hostdev.label, FAIL, exc.what, exc.fix))
            continue
        pairs.append((hostdev, inventory.by_name[resolved.name]))
    members = {device.name for _, device in pairs}
    groups: list[str] = []
    nodes: list[str] = []
    for hostdev, device in pairs:
        checks += _host_use(fs, device)
        checks.append(_device_links(fs, device))
        iommu = _iommu(fs, device)
        checks.append(iommu)
        if iommu.status == PASS and device.iommu_group is not None:
            if not hostdev.iommufd:
                groups.append(device.iommu_group)
            checks.append(_viability(fs, device.name, device.iommu_group, members))
        if hostdev.iommufd:
            cdev, node = cdev_check(fs, device)
            checks += [cdev, interrupt_check(fs, inventory, device)]
            nodes += ["/dev/iommu", *([node] if node else [])]
        checks.append(_reset(fs, device))
        if not hostdev.managed and device.driver != VFIO_DRIVERS.get(device.bus):
            checks.append(Check(
                f"{device.name} unmanaged", FAIL, f"managed='no' but bound to "
                f"{device.driver or 'no driver'}: libvirt's hook will not detach it",
                f"platform-hostdev nodedev-detach {device.name} before starting the domain, "
                "or set managed='yes'"))
    legacy = any(not h.iommufd for h in hostdevs)
    return checks, DeviceNodes(list(dict.fromkeys(groups)), list(dict.fromkeys(nodes)), legacy)


def _host_use(fs: HostFs, device: Device) -> list[Check]:
    uses = host_usage(fs, device)
    if not uses:
        return [Check(f"{device.name} host use", PASS, "not the console, not under a mounted "
                      "filesystem or swap, not on the default route")]
    return [Check(f"{device.name} host use", FAIL, f"{device.name} {u.detail}",
                  f"{u.fix}, or choose another device") for u in uses]


def _refused_by_the_hook(what: str) -> str:
    """A refusal's text (a chain per line) as one finding line."""
    return what.replace("\n  ", "; ").replace(":; ", ": ") + "; the hook refuses such a detach"


def _device_links(fs: HostFs, device: Device) -> Check:
    """What the hook's detach would take with the device, and its suppliers."""
    label = f"{device.name} device links"
    directory = f"/sys/bus/{device.bus}/devices/{device.name}"
    driver = fs.link_name(directory + "/driver")
    if driver is not None and driver == VFIO_DRIVERS.get(device.bus):  # as the hook judges it
        return Check(label, PASS, f"already bound to {driver}: nothing is unbound at start")
    impact = unbind_impact(fs, device)
    try:
        refuse_forbidden_own(fs, device.bus, device.name, driver)
    except UnbindForbiddenError as exc:
        return Check(label, FAIL, exc.what, exc.fix)
    if impact.dependents:
        error = consumers_error(fs, impact)
        fix = error.fix if error.data["forbid_unbinding"] else (
            "choose another device, or detach it beforehand with 'platform-hostdev "
            f"nodedev-detach --force {device.name}' and set managed='no' (the devices "
            "above lose their drivers until it is re-attached)")
        return Check(label, FAIL, _refused_by_the_hook(error.what), fix)
    if impact.dt_users:  # refused by the hook as well (protection.refuse_if_host_uses)
        names = " and ".join(u.name for u in impact.dt_users)
        refusal = dt_users_error(impact)
        fix = (f"the host uses {names}: choose another device" if any(
            impact.uses.get(u.name) for u in impact.dt_users) else
            f"choose another device, or stop using it first (detach or unbind {names}) "
            "before starting the domain")
        return Check(label, FAIL, _refused_by_the_hook(refusal.what), fix)
    suppliers, consumers = device_links(fs, directory)

    def listed(links: list[DevLink]) -> str:
        return ", ".join(f"{lk.name} ({lk.driver or 'no driver'}, {lk.status}"
                         f"{', sync-state-only' if lk.sync_state_only else ''})"
                         for lk in links) or "none"

    return Check(label, PASS, f"no device loses its driver with it; suppliers: "
                 f"{listed(suppliers)}; consumers: {listed(consumers)}")


def _iommu(fs: HostFs, device: Device) -> Check:
    name, group = device.name, device.iommu_group
    fix = ("put the device behind an enabled IOMMU (an 'iommus' property pointing to an SMMU "
           "whose driver is loaded); no-IOMMU mode is for user-space drivers and tests only")
    if group is not None:
        if is_noiommu(fs, group):
            return Check(f"{name} IOMMU group", FAIL, f"group {group} is a no-IOMMU group: QEMU "
                         "cannot use no-IOMMU groups (it never asks for VFIO_NOIOMMU_IOMMU)", fix)
        return Check(f"{name} IOMMU group", PASS, f"group {group} (/dev/vfio/{group})")
    if read_bool_param(fs, NOIOMMU_PARAM):
        return Check(f"{name} IOMMU group", FAIL, "no IOMMU group; vfio's no-IOMMU mode is on, "
                     "but QEMU cannot use no-IOMMU groups", fix)
    return Check(f"{name} IOMMU group", FAIL, "no IOMMU group (no iommu_group link): vfio "
                 "refuses the device (probe fails with EINVAL)", fix)


def _viability(fs: HostFs, name: str, group: str, members: set[str]) -> Check:
    others = group_members(fs, group)
    blockers = [f"{member} (bound to {driver})"
                for member, driver in group_blockers(fs, group, exempt=members)]
    if blockers:
        return Check(f"{name} group viability", FAIL,
                     f"IOMMU group {group} also holds {', '.join(blockers)}: QEMU fails with "
                     f"'group {group} is not viable'",
                     "every device of the group must be bound to vfio, unbound, or in the "
                     "domain: add them to the domain or 'platform-hostdev nodedev-detach' them")
    return Check(f"{name} group viability", PASS,
                 f"IOMMU group {group}: {len(others) or 1} member(s), none held by a host driver")


def _reset(fs: HostFs, device: Device) -> Check:
    name = device.name
    first = device.compatible[0] if device.compatible else ""
    handler = bool(first) and has_reset_handler(fs, first)
    release = kernel_release(fs) or ""
    if not handler and release.startswith("6.1."):
        return Check(f"{name} reset", FAIL, f"kernel {release}: Debian 6.1.y vfio-platform and "
                     "vfio-amba fail to probe a device without a reset handler even with "
                     "reset_required=0 (error -2)", "use a 6.12 or newer kernel")
    if handler:
        return Check(f"{name} reset", PASS, f"a vfio reset handler exists for {first}")
    if device.bus != "platform":
        return Check(f"{name} reset", PASS, "vfio-amba needs no reset handler")
    required = read_bool_param(fs, RESET_REQUIRED_PARAM)
    if required is False:
        return Check(f"{name} reset", WARN, f"no reset handler for {first!r}; vfio_platform "
                     f"reset_required=0 lets vfio take it anyway: {RESET_RISK}",
                     "pass only devices that are quiescent (no DMA running) when detached, "
                     f"or use one with a reset handler ({', '.join(UPSTREAM_RESET_HANDLERS)})")
    state = "reset_required=1" if required else "reset_required=1 (the default; not loaded yet)"
    return Check(f"{name} reset", FAIL, f"no reset handler for {first!r} and vfio_platform "
                 f"{state}: vfio-platform refuses the device", RESET_REQUIRED_FIX)
