"""What the HOST uses a device for, where taking it away would lose data or access.

Three uses are found, each by following the host's own records to a sysfs
device and checking whether that device lies at or below the candidate's
sysfs path (so a disk behind an MMC controller, or a NIC on a virtio-mmio
transport, counts for the controller):

* the console: ``console=`` / ``earlycon=`` on /proc/cmdline (a bare
  ``earlycon`` means /chosen/stdout-path), /sys/class/tty/console/active and
  /proc/consoles, each tty followed through /sys/class/tty/TTY/device;
* storage under a mounted filesystem or active swap: /proc/self/mountinfo
  (major:minor, then /sys/dev/block/MAJ:MIN), else /proc/self/mounts or
  /proc/mounts (source device), and /proc/swaps; device-mapper and md
  devices are followed through their ``slaves``; a partition's sysfs path is
  below its disk's, so partitions need no special case;
* the network interface carrying a default route: /proc/net/route and
  /proc/net/ipv6_route, then /sys/class/net/IF/device.

Everything is read through :class:`~platform_hostdev.host.fs.HostFs`, so a fake
host keeps its /proc files under its root.

A detach unbinds more than the device: the kernel releases the drivers of its
consumers too (:mod:`devlinks`). :func:`refuse_unsafe_detach` is the guard
binding calls before detaching: it refuses a driver that forbids unbinding
(always), a detach that would unbind other devices (unless forced), and any
host use of the device or of those devices (unless forced).
:func:`refuse_if_host_uses` is the same guard returning only the uses.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.devlinks import (
    Dependent,
    DtUser,
    forbidden_note,
    refuse_forbidden_dependents,
    refuse_forbidden_own,
    render_dependent,
    unbind_dependents,
    unlinked_dt_users,
    way_out,
)
from platform_hostdev.host.fs import DT_BASE, HostFs

__all__ = [
    "HostUse",
    "HostUseError",
    "ConsumerWouldUnbindError",
    "DtUsersError",
    "dt_users_error",
    "Usable",
    "UnbindImpact",
    "host_usage",
    "located",
    "unbind_impact",
    "consumers_error",
    "refuse_unsafe_detach",
    "refuse_unsafe_reservation",
    "refuse_if_host_uses",
    "cmdline_consoles",
    "default_route_interfaces",
    "mount_entries",
]

_RTF_REJECT = 0x200  # the kernel's "unreachable" default routes on lo (ipv6_route)


class Usable(Protocol):
    """What the checks need of a device (inventory.Device has it)."""

    @property
    def name(self) -> str: ...
    @property
    def bus(self) -> str: ...
    @property
    def dt_path(self) -> str | None: ...
    @property
    def sysfs_path(self) -> str | None: ...


class HostUse(NamedTuple):
    """One use the host makes of a device: ``kind`` (console, mount, swap, network),
    ``detail`` (completes "<device> ..."), the ``fix`` that frees the device, and
    ``subject``, what is used, as the end of a chain ("/dev/mmcblk0 mounted on /mnt")."""

    kind: str
    detail: str
    fix: str
    subject: str = ""


class HostUseError(HostdevError):
    """Detaching the device would take it from the host (see the uses)."""

    code = "host-uses-device"

    def __init__(self, what: str, fix: str, uses: Sequence[HostUse], *,
                 device: str | None = None) -> None:
        super().__init__(what, fix, device=device, uses=[u.kind for u in uses])
        self.uses = list(uses)


class ConsumerWouldUnbindError(HostUseError):
    """Detaching the device would make the kernel unbind devices that depend on it."""

    code = "consumer-would-unbind"

    def __init__(self, what: str, fix: str, uses: Sequence[HostUse],
                 dependents: Sequence[Dependent], *, device: str | None = None) -> None:
        super().__init__(what, fix, uses, device=device)
        self.dependents = list(dependents)
        self.data["consumers"] = [d.name for d in dependents]
        self.data["chains"] = [list(d.chain) for d in dependents]


class DtUsersError(HostdevError):
    """Bound devices use the device through the DT with no device link (see dt_users)."""

    code = "dt-user-would-lose"

    def __init__(self, what: str, fix: str, users: Sequence[DtUser], *,
                 device: str | None = None) -> None:
        super().__init__(what, fix, device=device, users=[u.name for u in users],
                         properties=[list(u.props) for u in users])
        self.users = list(users)


class UnbindImpact(NamedTuple):
    """What unbinding a device takes from the host: the devices that lose their
    driver with it (:func:`~platform_hostdev.host.devlinks.unbind_dependents`), the
    host's uses of the device and of each of them (by device name), and the bound
    devices that use it through the DT with no device link
    (:func:`~platform_hostdev.host.devlinks.unlinked_dt_users`)."""

    device: str
    dependents: list[Dependent]
    uses: dict[str, list[HostUse]]
    dt_users: list[DtUser] = []

    @property
    def all_uses(self) -> list[HostUse]:
        return [u for uses in self.uses.values() for u in uses]

    def chain(self, dependent: Dependent) -> str:
        """``device -> consumer (driver) -> ...``, ending with what the host uses of it."""
        subjects = [u.subject or u.detail for u in self.uses.get(dependent.name, [])]
        return render_dependent(dependent, ["; ".join(subjects)] if subjects else [])

    def user_chain(self, user: DtUser) -> str:
        """``device <- user (driver) through PROPS``, ending with what the host uses of it."""
        subjects = [u.subject or u.detail for u in self.uses.get(user.name, [])]
        return " -> ".join([user.render(self.device), *(["; ".join(subjects)] if subjects
                                                        else [])])

    def chains(self) -> list[str]:
        """One line per device that loses its driver (the device's own uses first)."""
        own = self.uses.get(self.device, [])
        lines = [f"{self.device} -> " + "; ".join(u.subject or u.detail for u in own)] \
            if own else []
        return lines + [self.chain(d) for d in self.dependents]


def host_usage(fs: HostFs, device: Usable) -> list[HostUse]:
    """Every use the host makes of ``device`` (empty when it is free to take)."""
    base = device.sysfs_path or fs.host_path(
        fs.path(f"/sys/bus/{device.bus}/devices/{device.name}"))
    return [*_console_uses(fs, device, base), *_storage_uses(fs, base),
            *_network_uses(fs, base)]


class _Located(NamedTuple):
    name: str
    bus: str
    dt_path: str | None
    sysfs_path: str | None


def located(fs: HostFs, bus: str, name: str) -> Usable:
    """A device as the checks need it, read from its sysfs directory."""
    directory = f"/sys/bus/{bus}/devices/{name}"
    real = fs.path(directory)
    return _Located(name, bus, fs.dt_path_of(directory),
                    fs.host_path(real) if real.exists() else None)


def unbind_impact(fs: HostFs, device: Usable,
                  dependents: Sequence[Dependent] | None = None) -> UnbindImpact:
    """The devices that lose their driver when ``device`` is unbound (``dependents`` when
    already known), and every host use of the device and of them."""
    found = list(dependents) if dependents is not None else \
        unbind_dependents(fs, device.bus, device.name)
    uses = {device.name: host_usage(fs, device)}
    for dependent in found:
        uses[dependent.name] = host_usage(fs, dependent)
    users = unlinked_dt_users(fs, device.bus, device.name)
    for user in users:
        uses[user.name] = host_usage(fs, user)
    return UnbindImpact(device.name, found, uses, users)


def dt_users_error(impact: UnbindImpact) -> DtUsersError:
    """The refusal of a detach whose device bound devices use through the DT alone."""
    users = impact.dt_users
    plural = len(users) > 1
    what = (f"{impact.device} is used by {len(users)} bound device{'s' if plural else ''} "
            "through the device tree, with no device link (fw_devlink treats dmas and iommus "
            "as optional): the kernel would not unbind "
            f"{'them' if plural else 'it'}, and {'they' if plural else 'it'} would go on "
            "using what the unbind takes away:\n  " +
            "\n  ".join(impact.user_chain(u) for u in users))
    names = " and ".join(u.name for u in users)
    if any(impact.uses.get(u.name) for u in users):
        fix = (f"the host uses {names}: choose another device, or pass --force if you really "
               "mean it")
    else:
        fix = (f"choose another device, or stop using it first (detach or unbind {names}), "
               "or pass --force on the command line if you really mean it")
    return DtUsersError(what, fix, users, device=impact.device)


def consumers_error(fs: HostFs, impact: UnbindImpact) -> ConsumerWouldUnbindError:
    """The refusal of a detach that would unbind ``impact.dependents``: every chain, with
    the host's uses at its end, every dependent driver that forbids unbinding, and how
    to go on (one refusal naming every reason, so that nothing is found one at a time)."""
    uses = impact.all_uses
    frees = "; ".join(dict.fromkeys(u.fix for u in uses))
    count = len(impact.dependents)
    plural = count > 1
    forbidden = [d for d in impact.dependents if not d.can_unbind]
    lines = impact.chains() + [f"{forbidden_note(fs, d)}: --force cannot override this"
                               for d in forbidden]
    what = (f"detaching {impact.device} makes the kernel unbind {count} "
            f"device{'s' if plural else ''} that depend{'' if plural else 's'} on it "
            "(device links, /sys/class/devlink):\n  " + "\n  ".join(lines))
    them = "them" if plural else "it"
    if forbidden:
        fix = (f"{f'the host uses {them}: ' if uses else ''}choose another device; "
               f"{forbidden[0].driver} cannot be unbound at run time: "
               f"{way_out(fs, forbidden[0])}")
    elif uses:
        fix = (f"the host uses {them}: choose another device, or pass --force if you really "
               f"mean it (to free {them}: {frees})")
    else:
        fix = (f"pass --force on the command line to let {them} lose "
               f"{'their drivers' if plural else 'its driver'} ('platform-hostdev "
               f"nodedev-reattach {impact.device}' gives {them} back; the libvirt hook never "
               "does this), or choose a device nothing depends on")
    error = ConsumerWouldUnbindError(what, fix, uses, impact.dependents, device=impact.device)
    error.data["forbid_unbinding"] = [d.name for d in forbidden]
    return error


def refuse_unsafe_detach(fs: HostFs, device: Usable, force: bool) -> UnbindImpact:
    """The guard before a detach; returns its :class:`UnbindImpact`.

    In this order, so that the first refusal is the most complete one:
    :class:`~platform_hostdev.host.devlinks.UnbindForbiddenError` when the device's
    own driver has no unbind file (even with ``force``); unless ``force``,
    :class:`ConsumerWouldUnbindError` naming each chain, the host's uses and the
    dependents' drivers that forbid unbinding when the kernel would unbind other
    devices; with ``force``, ``UnbindForbiddenError`` for such a dependent; unless
    ``force``, :class:`DtUsersError` when bound devices use it through the DT alone
    and :class:`HostUseError` when the host uses the device. With ``force``
    the caller prints what the impact lists.
    """
    impact = unbind_impact(fs, device)
    directory = f"/sys/bus/{device.bus}/devices/{device.name}"
    refuse_forbidden_own(fs, device.bus, device.name, fs.link_name(directory + "/driver"))
    if impact.dependents and not force:
        raise consumers_error(fs, impact)
    refuse_forbidden_dependents(fs, device.name, impact.dependents)
    if not force:
        _refuse_host_needs(fs, impact, device)
    return impact


def refuse_unsafe_reservation(fs: HostFs, device: Usable, force: bool) -> UnbindImpact:
    """The guard before reserving a device for vfio at boot; returns its :class:`UnbindImpact`.

    The refusals of :func:`refuse_unsafe_detach` but one: reserved, the device
    never gets its host driver, so the devices that depend on it never get
    theirs (a driver's probe defers while its supplier's resource is missing)
    and the host's uses of them are lost at every boot. A driver that forbids
    unbinding is no refusal here: keeping it off from boot is the way around it.
    """
    impact = unbind_impact(fs, device)
    if not force:
        try:
            _refuse_host_needs(fs, impact, device)
        except ConsumerWouldUnbindError as exc:
            exc.what += ("\n  reserved for vfio at boot, they would not get their drivers "
                         "at any boot")
            raise
    return impact


def _refuse_host_needs(fs: HostFs, impact: UnbindImpact, device: Usable) -> None:
    if impact.dependents:
        raise consumers_error(fs, impact)
    if impact.dt_users:
        raise dt_users_error(impact)
    uses = impact.all_uses
    if uses:
        frees = "; ".join(dict.fromkeys(u.fix for u in uses))
        raise HostUseError(
            f"{device.name} " + "; it also ".join(u.detail for u in uses),
            f"choose another device, or pass --force if you really mean it (to free it: "
            f"{frees})", uses, device=device.name)


def refuse_if_host_uses(fs: HostFs, device: Usable, force: bool) -> list[HostUse]:
    """:func:`refuse_unsafe_detach`, returning the host uses found (of the device and of
    every device that loses its driver with it; with ``force`` the caller prints them)."""
    return refuse_unsafe_detach(fs, device, force).all_uses


# ---------------------------------------------------------------- helpers

def _below(fs: HostFs, host_path: str, base: str) -> bool:
    """Whether the sysfs object at ``host_path`` resolves to ``base`` or below it."""
    real = fs.path(host_path)
    if not real.exists():
        return False
    resolved = fs.host_path(real)
    return resolved == base or resolved.startswith(base.rstrip("/") + "/")


def _lines(fs: HostFs, *candidates: str) -> list[str]:
    for host_path in candidates:
        text = fs.read_text(host_path)
        if text is not None:
            return text.splitlines()
    return []


# ---------------------------------------------------------------- console

def cmdline_consoles(cmdline: str) -> tuple[list[str], list[str]]:
    """(console=, earlycon=) values of a kernel command line, options kept.

    ``earlycon`` without a value appears as "".
    """
    consoles, earlycons = [], []
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if key == "console" and sep:
            consoles.append(value)
        elif key == "earlycon":
            earlycons.append(value)
    return consoles, earlycons


def _console_uses(fs: HostFs, device: Usable, base: str) -> Iterator[HostUse]:
    consoles, earlycons = cmdline_consoles(fs.read_text("/proc/cmdline") or "")
    sources: dict[str, list[str]] = {}   # tty -> where it was named
    for value in consoles:
        sources.setdefault(value.split(",", 1)[0], []).append(f"console={value}")
    for tty in (fs.read_text("/sys/class/tty/console/active") or "").split():
        sources.setdefault(tty, []).append("/sys/class/tty/console/active")
    for line in _lines(fs, "/proc/consoles"):
        if line.split():
            sources.setdefault(line.split()[0], []).append("/proc/consoles")
    named = [tty for tty, _ in sources.items()
             if "/" not in tty and tty not in (".", "..")
             and _below(fs, f"/sys/class/tty/{tty}/device", base)]
    reasons = [s for tty in named for s in sources[tty]]
    # a console with no tty device: a PL011 whose port serdev took (the raspi3b's carries
    # Bluetooth, drivers/tty/serdev/serdev-ttyport.c) registers no ttyAMA<N> but still
    # prints the console; its line N is its DT alias serialN (drivers/tty/serial/
    # amba-pl011.c pl011_probe_dt_alias)
    for tty in sources:
        match = re.fullmatch(r"ttyAMA([0-9]+)", tty)
        if match and not fs.path(f"/sys/class/tty/{tty}/device").exists():
            alias = (fs.read_text(f"/{DT_BASE}/aliases/serial{match.group(1)}") or "")
            if alias.split("\0", 1)[0] == device.dt_path and device.dt_path:
                reasons += sources[tty] + [f"/{DT_BASE}/aliases/serial{match.group(1)}"]
    reasons += [f"earlycon={v}" if v else "earlycon" for v in earlycons
                if _earlycon_is(fs, v, device)]
    if reasons:
        what = ", ".join(dict.fromkeys(reasons))
        yield HostUse("console", f"is the host console ({what}): detaching it cuts off the "
                      "console", "boot with the console elsewhere (console=tty0, or a serial "
                      "port you keep) and without earlycon on it", f"the host console ({what})")


def _earlycon_is(fs: HostFs, value: str, device: Usable) -> bool:
    """``earlycon=NAME,[mmio32,]0xADDR`` at the device's address, or a bare earlycon
    whose /chosen/stdout-path is the device."""
    if not value:
        raw = fs.read_text(f"/{DT_BASE}/chosen/stdout-path") or ""
        target = raw.split("\0", 1)[0].split(":", 1)[0]
        if target and not target.startswith("/"):  # an alias
            alias = fs.read_text(f"/{DT_BASE}/aliases/{target}") if "/" not in target else None
            target = (alias or "").split("\0", 1)[0]
        return bool(target) and target == device.dt_path
    unit = device.name.split(".", 1)[0]
    for option in value.split(",")[1:]:
        try:
            if int(option, 16 if option.lower().startswith("0x") else 10) == int(unit, 16):
                return True
        except ValueError:
            continue
    return False


# ---------------------------------------------------------------- storage

def mount_entries(fs: HostFs) -> list[tuple[str, str, str | None]]:
    """(source, mount point, "MAJ:MIN" or None) of every mount of the host."""
    entries: list[tuple[str, str, str | None]] = []
    for line in _lines(fs, "/proc/self/mountinfo"):
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        tail = line.split(" - ", 1)[1].split()
        entries.append((_unescape(tail[1]) if len(tail) > 1 else "", _unescape(fields[4]),
                        fields[2]))
    if entries:
        return entries
    for line in _lines(fs, "/proc/self/mounts", "/proc/mounts"):
        fields = line.split()
        if len(fields) >= 2:
            entries.append((_unescape(fields[0]), _unescape(fields[1]), None))
    return entries


def _unescape(text: str) -> str:
    """The octal escapes (\\040 for a space) of /proc mount tables."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def _block_dirs(fs: HostFs, source: str, majmin: str | None) -> list[str]:
    """sysfs block directories behind a mount source, stacked devices followed."""
    start: str | None = None
    if majmin and fs.path(f"/sys/dev/block/{majmin}").exists():
        start = f"/sys/dev/block/{majmin}"
    elif source.startswith("/dev/"):
        node = fs.path(source)
        name = os.path.basename(os.path.realpath(node)) if node.exists() else \
            os.path.basename(source)
        if fs.path(f"/sys/class/block/{name}").exists():
            start = f"/sys/class/block/{name}"
    if start is None:
        return []
    found: list[str] = []
    stack = [start]
    while stack and len(found) < 64:
        current = stack.pop()
        found.append(current)
        slaves = fs.path(current + "/slaves")
        if slaves.is_dir():
            stack += [f"{current}/slaves/{s}" for s in sorted(os.listdir(slaves))]
    return found


def _storage_uses(fs: HostFs, base: str) -> Iterator[HostUse]:
    held: dict[str, list[str]] = {}
    for source, mountpoint, majmin in mount_entries(fs):
        if any(_below(fs, d, base) for d in _block_dirs(fs, source, majmin)):
            held.setdefault(source, []).append(mountpoint)
    for source, points in held.items():
        where = ", ".join(points)
        yield HostUse("mount", f"holds {source}, mounted on {where}: detaching it loses the "
                      "data being written there and can hang the host",
                      f"unmount {where} (and drop it from /etc/fstab) first",
                      f"{source} mounted on {where}")
    for line in _lines(fs, "/proc/swaps")[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "partition" and any(
                _below(fs, d, base) for d in _block_dirs(fs, fields[0], None)):
            yield HostUse("swap", f"holds the host's swap {fields[0]}: detaching it crashes "
                          "processes whose memory is swapped out", f"swapoff {fields[0]} first",
                          f"the host's swap {fields[0]}")


# ---------------------------------------------------------------- network

def default_route_interfaces(route: str, ipv6_route: str) -> list[str]:
    """Interfaces with a default route, from /proc/net/route and /proc/net/ipv6_route."""
    found: list[str] = []
    for line in route.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            if int(fields[3], 16) & 1:  # RTF_UP
                found.append(fields[0])
    for line in ipv6_route.splitlines():
        fields = line.split()
        if len(fields) >= 10 and set(fields[0]) == {"0"} and fields[1] == "00":
            if fields[9] != "lo" and not int(fields[8], 16) & _RTF_REJECT:
                found.append(fields[9])
    return list(dict.fromkeys(found))


def _network_uses(fs: HostFs, base: str) -> Iterator[HostUse]:
    interfaces = default_route_interfaces(fs.read_text("/proc/net/route") or "",
                                          fs.read_text("/proc/net/ipv6_route") or "")
    for iface in interfaces:
        if "/" not in iface and _below(fs, f"/sys/class/net/{iface}/device", base):
            yield HostUse("network", f"carries the host's default route ({iface}): detaching "
                          "it can cut off network access to the host",
                          f"move the default route off {iface} first",
                          f"the default route ({iface})")
