"""Giving devices back: a domain's release, the sweep of stale owners, ``recover``.

Everything here works from our own records, the ownership records (who owns
a device, what its /dev nodes were before) and the binding journal (the
driver to give it back to), found by the domain's UUID: never from the
host's current device list or the domain XML's metadata, which may have
changed since the start (a device hot-unplugged, an overlay or a module
removed, ``virsh metadata --live`` edited). A device that vanished is
released as far as it can be (its nodes' owners, its records) and reported.

One device's failure never stops the others: each step of each device is
tried, what failed is reported with its path, and a record is kept exactly
while something of its device is still to give back, so that the next
release or ``recover`` finishes it. A failure to release another domain's
stale device is a warning for an unrelated domain's start, never a refusal.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TextIO

from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.ownership import OwnerRecord, Owners
from platform_hostdev.binding.preflight import device_state, node_holders, vfio_holders
from platform_hostdev.errors import HostdevError
from platform_hostdev.hook.env import HookDevice, HookEnv
from platform_hostdev.host.boundary import Host
from platform_hostdev.host.fs import HostFs
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

if TYPE_CHECKING:
    from platform_hostdev.binding.operations import RecoverAction

__all__ = ["GiveBack", "StaleRelease", "give_back", "give_back_domain", "release_stale",
           "recover_host", "oserror"]


class GiveBack(NamedTuple):
    """What giving one device back did: ``problems`` (each names its path) left its
    record in place for the next try; ``notes`` are facts worth a line (a vanished
    device)."""

    device: str
    problems: list[str]
    notes: list[str]

    @property
    def done(self) -> bool:
        return not self.problems


class StaleRelease(NamedTuple):
    """What release_stale() did: journal recovery actions, devices given back, devices
    kept (their VFIO node is open: the owner runs), failures (records kept)."""

    journal: list[RecoverAction]
    released: list[str]
    kept: list[str] = []
    failed: list[str] = []


def oserror(exc: OSError, doing: str, fix: str, **data: object) -> HostdevError:
    """A HostdevError for an OSError of a host write: what was done, the path, the errno."""
    import errno as errnos

    path = exc.filename if isinstance(exc.filename, str) else data.get("path")
    name = errnos.errorcode.get(exc.errno or 0, str(exc.errno))
    where = f" {path}" if path else ""
    code = "permission-denied" if exc.errno in (errnos.EPERM, errnos.EACCES) \
        else "state-unwritable"
    return HostdevError(f"{doing}{where} failed: {exc.strerror} ({name})", fix, code=code,
                        **{"path": path, **data, "errno": name})


def _attempt(problems: list[str], what: str, action: Callable[[], object]) -> bool:
    """Run one give-back step; a failure is added to ``problems``, never raised."""
    try:
        action()
        return True
    except HostdevError as exc:
        problems.append(f"{what}: {exc.what}")
    except OSError as exc:
        problems.append(f"{what}: {oserror(exc, what, '').what}")
    return False


def _restore_node(fs: HostFs, node: str | None, owner: Sequence[int]) -> None:
    """Give a /dev node its recorded [uid, gid, mode] back (gone already: nothing to do)."""
    if node and owner:
        path = fs.path(node)
        if path.exists():
            uid, gid, mode = owner
            os.chown(path, uid, gid)
            os.chmod(path, mode)


def _present(fs: HostFs, bus: str, name: str) -> bool:
    return fs.path(f"/sys/bus/{bus}/devices/{name}").exists()


def _reserved(fs: HostFs, bus: str, name: str) -> bool:
    """Whether the device is reserved for vfio at boot (nodedev-detach --persistent): then
    release leaves it on vfio, as the next boot would bind it there anyway. An unreadable
    reservation file counts as no reservation (the device goes back, as without one)."""
    from platform_hostdev.binding.reservations import Reservations

    reservations = Reservations(fs)
    if not reservations.exists():
        return False
    try:
        return reservations.is_reserved(fs.dt_path_of(f"/sys/bus/{bus}/devices/{name}"))
    except HostdevError:
        return False


def give_back(record: OwnerRecord, env: HookEnv, owners: Owners, journal: Journal) -> GiveBack:
    """Give one recorded device back: its /dev nodes' owners, its original driver (when we
    detached it and it is not reserved for vfio), then its record. Never raises for a
    host failure: every step is tried and each failure reported."""
    fs, name = env.fs, record.device
    problems: list[str] = []
    notes: list[str] = []
    nodes: list[tuple[str | None, Sequence[int]]] = [(record.node, record.node_owner),
                                                      (record.cdev, record.cdev_owner)]
    for node, owner in nodes:
        def restore(node: str | None = node, owner: Sequence[int] = owner) -> None:
            _restore_node(fs, node, owner)
        _attempt(problems, f"restoring the owner of {node}", restore)
    if record.iommu_owner and not any(other.iommu_owner for other in owners.all()
                                      if other.device != name):
        from platform_hostdev.vfio.cdev import IOMMU_NODE

        if owners.damaged():  # a record set aside may be another holder of /dev/iommu
            notes.append(f"{IOMMU_NODE} is left with QEMU's user while a damaged ownership "
                         "record is set aside (platform-hostdev recover lists it)")
        else:
            _attempt(problems, f"restoring the owner of {IOMMU_NODE}",
                     lambda: _restore_node(fs, IOMMU_NODE, record.iommu_owner))
    env.host.step(f"release:{name}:node-restored", record)
    if not _present(fs, record.bus, name):
        notes.append(f"{name} is no longer on the host (hot-unplugged, its overlay or module "
                     "removed): nothing to re-attach; its records are removed")
        _attempt(problems, f"removing the journal record {journal.host_file(name)}",
                 lambda: _forget_journal(journal, name))
    elif record.detached_by_us and not _reserved(fs, record.bus, name):
        state = device_state(fs, record.bus, name)
        if state.driver == VFIO_DRIVERS.get(record.bus):
            from platform_hostdev.binding.operations import reattach

            _attempt(problems, f"re-attaching {name}", lambda: reattach(
                env.host, HookDevice(name, record.bus, None, (), True), journal))
    env.host.step(f"release:{name}:reattached", record)
    if not problems:
        _attempt(problems, f"removing the ownership record {owners.host_file(name)}",
                 lambda: owners.remove(name))
    return GiveBack(name, problems, notes)


def _forget_journal(journal: Journal, name: str) -> None:
    with journal.locked():
        journal.remove(name)


def give_back_domain(uuid: str, env: HookEnv, owners: Owners,
                     journal: Journal) -> list[GiveBack]:
    """Give back every device recorded for the domain ``uuid`` (call with the lock held).

    A record whose device could not be given back in full is marked "released"
    (the domain is gone: no start grace keeps it), so that the next ``recover``
    finishes it at once; if even that write fails, the grace runs out first.
    """
    results = []
    for record in owners.all():
        if record.uuid != uuid:
            continue
        result = give_back(record, env, owners, journal)
        if not result.done:
            _attempt([], "marking the record released",
                     functools.partial(owners.write, record.at(state="released")))
        results.append(result)
    return results


def _holders(fs: HostFs, record: OwnerRecord) -> list[tuple[int, str]]:
    """Processes that have the record's VFIO group node (or cdev) open."""
    holders = vfio_holders(fs, record.group) if record.group else []
    if record.cdev:
        holders += node_holders(fs, {record.cdev})
    return holders


def release_stale(env: HookEnv, owners: Owners, journal: Journal,
                  timeout: float | None = None) -> StaleRelease:
    """Finish interrupted binding work; give back devices whose owner is gone.

    A record whose owner looks gone but whose VFIO node a process still holds
    open is kept: that process is the owner (or uses the device), and pulling
    the device from under it would block or break it. Failures are returned,
    never raised: they concern other domains' devices. Call with the
    ownership lock held.
    """
    actions: list[RecoverAction] = []
    failed: list[str] = []
    if journal.devices():  # a record only exists while we have moved a device
        from platform_hostdev.binding.operations import DEFAULT_TIMEOUT, recover

        try:
            actions = recover(env.host, journal, timeout=timeout or DEFAULT_TIMEOUT)
        except HostdevError as exc:
            failed.append(f"finishing interrupted binding work: {exc.what}")
        except OSError as exc:
            failed.append("finishing interrupted binding work: "
                          + oserror(exc, "a journal write", "").what)
    released, kept = [], []
    for record in owners.all():
        if owners.is_live(record):
            continue
        holders = _holders(env.fs, record)
        if holders:
            users = ", ".join(f"{comm} (pid {pid})" for pid, comm in holders)
            kept.append(f"{record.device}: kept for domain {record.domain}: its VFIO node is "
                        f"open by {users}")
            continue
        result = give_back(record, env, owners, journal)
        if result.done:
            released.append(f"{record.device}: released from domain {record.domain}, which "
                            "is no longer running" + "".join(f"; {n}" for n in result.notes))
        else:
            failed.append(f"{record.device} (domain {record.domain}): "
                          + "; ".join(result.problems))
    return StaleRelease(actions, released, kept, failed)


def recover_host(host: Host, *, err: TextIO | None = None,
                 timeout: float | None = None) -> StaleRelease:
    """What ``platform-hostdev recover`` does: finish interrupted binding work, then give
    back the devices of domains that are gone (the hook's own sweep, under its lock).

    A device stays with its domain while the QEMU recorded at its start runs
    (same pid, same start time), while libvirt's pid file names a live QEMU,
    while a process holds its VFIO node open, or while the domain is within
    its start grace period.
    """
    env = HookEnv(host, err=err)
    owners = env.owners()
    with owners.locked():
        return release_stale(env, owners, env.journal(), timeout=timeout)
