"""Applying the boot-time reservations (:mod:`reservations`): the udev rule's helper and the unit.

A DT device exists from early boot (drivers/of/platform.c
of_platform_default_populate_init, an arch_initcall), long before user space.
Whether a host driver binds it first depends on where that driver lives:

* a **module**: nothing binds the device until udev's coldplug (``udevadm
  trigger --action=add``) replays its add event and 80-drivers.rules loads
  the module (``RUN{builtin}+="kmod load"`` on ``MODALIAS``). Our rule,
  60-platform-hostdev.rules, runs :func:`apply_uevent` on that same event
  through ``IMPORT{program}``, which udev runs while it reads the rules,
  before any ``RUN`` (udev(7)): it writes the vfio driver's name to
  ``driver_override`` first, so when the module registers its driver the
  bus no longer matches it to the device (drivers/base/platform.c
  platform_match, drivers/amba/bus.c amba_match: with an override only that
  driver matches), then binds the vfio driver (loading its module, whose
  registration binds the device, or ``drivers_probe``).
* **built in**: the driver probed the device at its initcall, before any
  udev. The rule leaves such a device alone; the unit
  (platform-hostdev-reserve.service, :func:`apply_reservations`) moves it to
  vfio with a journalled detach after udev has settled, and check-host says
  how to keep the driver off the device altogether (``initcall_blacklist=``).

The unit also catches what the rule could not do (a module loaded from the
initramfs before the real root's udev ran, a vfio module missing at that
time). Both are idempotent.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, TextIO

from platform_hostdev.binding.reservations import Reservations
from platform_hostdev.errors import HostdevError, HostError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

if TYPE_CHECKING:
    from platform_hostdev.host.attributes import WritableHostFs
    from platform_hostdev.host.boundary import Host
    from platform_hostdev.host.processes import ModprobeRunner

# The udev helper runs on the add event of every DT device of a host with reservations:
# what only a reserved device needs (binding, protection) is imported when one is found.

__all__ = ["AppliedReservation", "apply_uevent", "apply_reservations", "find_by_dt_path",
           "bind_unbound", "udev_main"]


class AppliedReservation(NamedTuple):
    """What applying one reservation found or did."""

    dt_path: str
    device: str | None      # the sysfs name it has this boot (None: not present)
    bus: str | None
    action: str             # "bound", "moved", "already", "absent", "failed"
    driver: str | None      # its driver afterwards
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def find_by_dt_path(fs: HostFs, dt_path: str) -> tuple[str, str] | None:
    """(bus, sysfs name) of the platform or amba device at ``dt_path``, whatever its name."""
    for bus in VFIO_DRIVERS:
        directory = fs.path(f"/sys/bus/{bus}/devices")
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for name in names:
            if fs.dt_path_of(f"/sys/bus/{bus}/devices/{name}") == dt_path:
                return bus, name
    return None


def _write(fs: WritableHostFs, host_path: str, value: str, device: str) -> None:
    from platform_hostdev.host.attributes import AttributeWriteError

    try:
        fs.write_attr(host_path, value)
    except AttributeWriteError as exc:
        raise HostError(f"writing {value.strip()!r} to {host_path} failed: {exc.strerror} "
                        f"({exc.errno_name})", "run as root; see dmesg",
                        code="sysfs-write-failed", device=device, path=host_path,
                        errno=exc.errno_name) from None


def bind_unbound(fs: WritableHostFs, bus: str, name: str,
                 modprobe: ModprobeRunner | None) -> str | None:
    """Bind a device no driver holds to its vfio driver: driver_override first (no host
    driver can match it afterwards), then the vfio module (its registration binds the
    device, drivers/base/dd.c driver_attach) or drivers_probe. Returns its driver then
    (None when the vfio probe failed: the override still keeps the host driver off)."""
    from platform_hostdev.binding.preflight import device_dir, device_state, ensure_vfio_driver

    vfio = VFIO_DRIVERS[bus]
    ddir = device_dir(bus, name)
    if device_state(fs, bus, name).override != vfio:
        _write(fs, ddir + "/driver_override", vfio + "\n", name)
    ensure_vfio_driver(fs, bus, modprobe)
    if fs.link_name(ddir + "/driver") is None:
        _write(fs, f"/sys/bus/{bus}/drivers_probe", name, name)
    return fs.link_name(ddir + "/driver")


def apply_uevent(fs: WritableHostFs, env: Mapping[str, str],
                 modprobe: ModprobeRunner | None) -> dict[str, str]:
    """The udev helper: for an ``add`` event of a reserved, unbound platform/amba device,
    set its driver_override and bind vfio. Returns the udev properties to import
    (``PLATFORM_HOSTDEV_RESERVED=1`` and the driver), empty for any other device.

    ``env`` is the event as udev passes it to a program: ACTION, SUBSYSTEM,
    DEVPATH, OF_FULLNAME. A reserved device that already has a driver (built
    in) is left to the unit.
    """
    bus, devpath, full = env.get("SUBSYSTEM", ""), env.get("DEVPATH", ""), env.get("OF_FULLNAME")
    if env.get("ACTION") != "add" or bus not in VFIO_DRIVERS or not full:
        return {}
    if not Reservations(fs).is_reserved(full):
        return {}
    parts = devpath.split("/")
    if not devpath.startswith("/devices/") or any(p in ("", ".", "..") for p in parts[1:]):
        raise HostError(f"udev passed DEVPATH {devpath!r}, not a device under /sys/devices",
                        "run this only from 60-platform-hostdev.rules", code="host-state")
    name = parts[-1]
    props = {"PLATFORM_HOSTDEV_RESERVED": "1"}
    driver = fs.link_name(f"/sys/bus/{bus}/devices/{name}/driver")
    if driver is not None:
        props["PLATFORM_HOSTDEV_DRIVER"] = driver
        return props  # built in: bound before udev; the unit moves it
    props["PLATFORM_HOSTDEV_DRIVER"] = bind_unbound(fs, bus, name, modprobe) or ""
    return props


def apply_reservations(host: Host, *, timeout: float | None = None) -> list[AppliedReservation]:
    """The unit: every reserved device on its vfio driver, in file order.

    An unbound device is bound as the udev helper does; one bound to a host
    driver (built in, or loaded before udev) goes through the full detach,
    with its checks (host use, device links, a driver that forbids unbinding)
    and its journal record (nodedev-reattach gives it back to that driver).
    Each failure is reported and the others still applied.
    """
    from platform_hostdev.binding.operations import DEFAULT_TIMEOUT, detach
    from platform_hostdev.binding.preflight import device_dir, device_state
    from platform_hostdev.host.protection import located, refuse_unsafe_detach

    fs = host.fs
    done = []
    for dt_path in Reservations(fs).paths():
        found = find_by_dt_path(fs, dt_path)
        if found is None:
            done.append(AppliedReservation(dt_path, None, None, "absent", None,
                                           "no platform or amba device has this DT path"))
            continue
        bus, name = found
        vfio = VFIO_DRIVERS[bus]
        state = device_state(fs, bus, name)
        try:
            if state.driver == vfio:
                done.append(AppliedReservation(dt_path, name, bus, "already", vfio))
                continue
            if state.driver is None:
                driver = bind_unbound(host.writable(), bus, name, host.modprobe)
                if driver != vfio:
                    raise HostError(f"{name} did not bind to {vfio} (driver: "
                                    f"{driver or 'none'})", "see dmesg for the probe's error",
                                    code="probe-failed", device=name)
                done.append(AppliedReservation(dt_path, name, bus, "bound", vfio))
                continue
            device = located(fs, bus, name)
            refuse_unsafe_detach(fs, device, force=False)
            raw = fs.read_text(f"{device_dir(bus, name)}/of_node/compatible") or ""
            target = _Target(name, bus, tuple(c for c in raw.split("\0") if c))
            detach(host, target, timeout=timeout or DEFAULT_TIMEOUT)
            done.append(AppliedReservation(dt_path, name, bus, "moved", vfio,
                                           f"from {state.driver}"))
        except HostdevError as exc:
            done.append(AppliedReservation(dt_path, name, bus, "failed",
                                           device_state(fs, bus, name).driver,
                                           f"{exc.what} ({exc.fix})" if exc.fix else exc.what))
    return done


class _Target(NamedTuple):
    name: str
    bus: str
    compatible: tuple[str, ...]


def udev_main(host: Host, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """``platform-hostdev reserve-apply --udev`` (60-platform-hostdev.rules, IMPORT{program}):
    the properties on ``out`` as udev imports them; an error on ``err`` (udev logs it) and
    exit 1, which makes udev import nothing."""
    try:
        props = apply_uevent(host.writable(), env, host.modprobe)
    except HostdevError as exc:
        print(f"platform-hostdev: error: {exc.what}" + (f" (hint: {exc.fix})" if exc.fix else ""),
              file=err)
        return 1
    for key, value in props.items():
        print(f"{key}={value}", file=out)
    return 0
