"""check-host: the devices reserved for vfio at boot (nodedev-detach --persistent).

Only when the host has a reservation file. One line for the boot machinery
(the udev rule installed), then one per reserved device: where it is this
boot, whether the host now needs it, and for a device a built-in driver held
at boot (bound before udev; the unit moved it, or it is still there) how to
keep that driver off it altogether: ``initcall_blacklist=`` with the driver's
init function (:func:`~platform_hostdev.host.devlinks.keep_driver_off`).
"""
from __future__ import annotations

from platform_hostdev.binding.boot import find_by_dt_path
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.preflight import device_state
from platform_hostdev.binding.reservations import RESERVED_FILE, Reservations
from platform_hostdev.checkhost.model import FAIL, PASS, WARN, Check
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.devlinks import driver_origin, keep_driver_off
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.protection import located, refuse_unsafe_reservation
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

__all__ = ["reservation_checks", "UDEV_RULE", "UDEV_RULE_DIRS"]

UDEV_RULE = "60-platform-hostdev.rules"
UDEV_RULE_DIRS = ("/etc/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d")
"""Where udev reads rules (udev(7)), the administrator's first."""
_CHECK = "boot reservation"


def reservation_checks(fs: HostFs) -> list[Check]:
    """The checks of the reservation file and each reserved device (none without a file)."""
    reservations = Reservations(fs)
    if not reservations.exists():
        return []
    try:
        paths = reservations.paths()
    except HostdevError as exc:
        return [Check(_CHECK, FAIL, exc.what, exc.fix)]
    rules = [d for d in UDEV_RULE_DIRS if fs.path(f"{d}/{UDEV_RULE}").is_file()]
    if rules:
        checks = [Check(_CHECK, PASS, f"{len(paths)} device(s) reserved in {RESERVED_FILE}; "
                        f"udev applies them with {rules[0]}/{UDEV_RULE}")]
    else:
        checks = [Check(_CHECK, WARN, f"{len(paths)} device(s) reserved in {RESERVED_FILE}, "
                        f"but no {UDEV_RULE} in {', '.join(UDEV_RULE_DIRS)}: nothing keeps "
                        "their module drivers off them at boot",
                        "install the platform-hostdev package (it ships the rule and "
                        "platform-hostdev-reserve.service), or copy the rule from the "
                        "source tree's debian/udev/ to /etc/udev/rules.d/")]
    for dt_path in paths:
        checks.append(_device_check(fs, dt_path))
    return checks


def _device_check(fs: HostFs, dt_path: str) -> Check:
    name = f"{_CHECK} {dt_path}"
    found = find_by_dt_path(fs, dt_path)
    if found is None:
        return Check(name, WARN, "no platform or amba device has this DT path on this boot",
                     "check the path with 'platform-hostdev nodedev-list' (a disabled node, "
                     "another DTB?); 'platform-hostdev nodedev-reattach --persistent "
                     f"{dt_path}' forgets it")
    bus, device = found
    vfio = VFIO_DRIVERS[bus]
    try:
        refuse_unsafe_reservation(fs, located(fs, bus, device), force=False)
    except HostdevError as exc:
        return Check(name, FAIL, f"the host needs {device}: {exc.what}",
                     f"{exc.fix}; 'platform-hostdev nodedev-reattach --persistent {device}' "
                     "ends the reservation")
    state = device_state(fs, bus, device)
    if state.driver == vfio:
        try:
            record = Journal(fs).read(device)
        except HostdevError:
            record = None
        held = record.original_driver if record is not None else None
        if held and driver_origin(fs, bus, held).module is None:
            return Check(name, WARN, f"{device} is on {vfio}, moved there after boot from "
                         f"{held}, which is built into the kernel and probed it first",
                         keep_driver_off(fs, bus, held))
        return Check(name, PASS, f"{device} is on {vfio}")
    if state.driver is None:
        override = state.override or "(null)"
        return Check(name, FAIL, f"{device} has no driver (driver_override {override}): "
                     f"{vfio} did not bind it", "see dmesg for the vfio probe's error; then "
                     "run 'platform-hostdev reserve-apply'")
    if driver_origin(fs, bus, state.driver).module is None:
        return Check(name, WARN, f"{device} is bound to {state.driver}, built into the "
                     "kernel: it probes the device before udev runs; "
                     "platform-hostdev-reserve.service moves it to vfio after boot",
                     "run 'platform-hostdev reserve-apply' now (the unit does at boot); "
                     + keep_driver_off(fs, bus, state.driver))
    return Check(name, WARN, f"{device} is bound to {state.driver} (module "
                 f"{driver_origin(fs, bus, state.driver).module}), loaded before the "
                 "reservation was applied (from the initramfs, or by hand)",
                 "run 'platform-hostdev reserve-apply' (the unit does at boot); the "
                 "initramfs's udev does not read 60-platform-hostdev.rules: keep the module "
                 "out of the initramfs (or blacklist it there) for it never to probe the "
                 "device")
