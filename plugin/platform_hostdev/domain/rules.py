"""The rules a domain's platform hostdevs follow, each written once.

The hook applies them to the devices it finds in sysfs before QEMU starts;
the commands (translate, define, attach-device, check-host, sync) to the
devices of the inventory or of the guest device tree. Each rule was once
written at each place and the copies drifted apart. Light on purpose (no
lxml, no dataclasses): the hook imports it on every start of a domain with
platform hostdevs; the functions read either tree.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from platform_hostdev.errors import HostdevError

if TYPE_CHECKING:
    from platform_hostdev.domain.model import PlatformHostdev

__all__ = ["refuse_non_platform", "check_names_agree", "refuse_duplicates", "refuse_acpi"]


def refuse_non_platform(name: str, bus: str, dt_path: str | None = None) -> None:
    """Refuse a device QEMU cannot take: only platform devices, never AMBA ones.

    QEMU's vfio-platform refuses any device whose VFIO device flags lack
    VFIO_DEVICE_FLAGS_PLATFORM (hw/vfio/platform.c vfio_populate_device():
    "this isn't a platform device"); vfio-amba devices carry VFIO_DEVICE_FLAGS_AMBA.
    """
    if bus == "platform":
        return
    kind = "an AMBA device (a primecell" if bus == "amba" else f"a {bus} device ("
    where = f", DT node {dt_path})" if dt_path else ")"
    raise HostdevError(
        f"{name} is {kind}{where}; QEMU's vfio-platform refuses vfio-amba devices: it "
        "accepts only devices with VFIO_DEVICE_FLAGS_PLATFORM",
        "AMBA devices cannot be passed to QEMU guests; pick a platform device",
        code="amba-unsupported" if bus == "amba" else "bus-unsupported", device=name,
        dt_path=dt_path)


def check_names_agree(name: str | None, dt_path: str | None, found: str,
                      found_dt_path: str | None) -> None:
    """The device a hostdev's <device name> names must have its <devicetree path>.

    ``found`` is the device looked up by ``name`` (or, without a name, by
    ``dt_path``: then there is nothing to disagree) and ``found_dt_path`` its
    DT node.
    """
    if name is None or dt_path is None or found_dt_path == dt_path:
        return
    raise HostdevError(
        f"hostdev names two devices: device name {name} is {found} at DT node "
        f"{found_dt_path or '(none: no of_node)'}, but the DT path is {dt_path}",
        "give one of them, or make <devicetree path> and <device name> name the same device "
        "('platform-hostdev nodedev-list' shows both)", code="dt-mismatch", device=found,
        dt_path=dt_path)


def refuse_duplicates(entries: Iterable[tuple[PlatformHostdev, str, str | None]],
                      domain: str | None = None) -> None:
    """No device, DT path or alias twice: ``entries`` are (hostdev, device name, DT path).

    ``domain`` names the domain in the error's data, when known.
    """
    seen: dict[tuple[str, str], PlatformHostdev] = {}
    for hostdev, name, dt_path in entries:
        keys = [("device", name)]
        if dt_path:
            keys.append(("DT path", dt_path))
        if hostdev.alias:
            keys.append(("alias", hostdev.alias))
        for key in keys:
            other = seen.get(key)
            if other is not None:
                raise HostdevError(
                    f"{key[0]} {key[1]} appears in two platform hostdevs "
                    f"({other.label} and {hostdev.label})",
                    "a device can be given to a domain once, and aliases must be unique: "
                    "remove one of the two <hostdev> elements", code="duplicate-device",
                    **{key[0].replace(" ", "_").lower(): key[1]}, domain=domain)
            seen[key] = hostdev


def refuse_acpi(root: Any) -> None:
    """A domain with platform hostdevs boots with a device tree, not ACPI (either tree).

    A guest booted with ACPI ignores the device tree, which is the only place
    its platform devices are described.
    """
    if root.find("features/acpi") is not None:
        raise HostdevError(
            "this domain boots with ACPI (<features><acpi/>); the guest would ignore the "
            "device tree that describes the passed-through devices",
            "remove <acpi/> from <features> so the guest boots with a device tree",
            code="acpi-unsupported")
