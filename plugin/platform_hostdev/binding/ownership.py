"""One device, one domain: who owns each passed-through device.

One JSON record per device under ``<root>/run/platform-hostdev/owners/`` (a
:class:`~platform_hostdev.host.statefiles.RecordStore`, as the binding
journal), written atomically, all changes made under an exclusive file lock
(``owners/.lock``) so concurrent domain starts are serialised. A record must
name the device of its file: a renamed or copied record is refused, never
given back for another device; every field is checked by type (a node path
is one the hook hands over, never /etc/shadow), and a damaged record is set
aside and refuses its device only (see the RecordStore). A record names
the domain (name and UUID), whether the device is managed, whether we
detached it (then release re-attaches it), and the /dev/vfio node's original
owner and mode (restored at release). A device on the iommufd backend records
its vfio cdev (/dev/vfio/devices/vfioN) instead of its group node, and
/dev/iommu's original owner: /dev/iommu is shared, so it is restored when the
last record holding it goes.

The hook never asks libvirt whether an owner is running (it would deadlock).
A record is live while what cannot lie says so:

* once the domain has started (libvirt's "started" phase, or "reconnect"
  after a daemon restart) the record holds QEMU's pid and that process's
  start time (``/proc/PID/stat`` field 22, fs/proc/array.c do_task_stat): the
  owner runs exactly while that process exists with that start time, so a
  reused pid is not taken for it;
* before that, while libvirt's own pid file ``/run/libvirt/qemu/<name>.pid``
  names a live QEMU process (any name libvirt accepts, including one that
  starts with "."), or while a "preparing" record's hook process is alive, or
  while the record is younger than the start grace period (the domain is
  between its prepare hook and QEMU's exec).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TextIO

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import pid_alive, wall_clock
from platform_hostdev.host.fs import BUSES, HostFs
from platform_hostdev.host.statefiles import (
    PID_MAX,
    Check,
    RecordStore,
    boolean,
    count,
    decode_fields,
    domain_name,
    matching,
    one_of,
    optional,
    owner_ids,
    seconds,
    sysfs_name,
    text,
)

__all__ = ["OwnerRecord", "Owners", "OwnersBusyError", "OWNERS_DIR", "START_GRACE",
           "process_start"]

OWNERS_DIR = "/run/platform-hostdev/owners"
LIBVIRT_RUN = "/run/libvirt/qemu"
START_GRACE = 300.0  # seconds a prepared domain may take to get its QEMU running


def process_start(fs: HostFs, pid: int) -> int | None:
    """Process ``pid``'s start time in clock ticks since boot (``/proc/PID/stat`` field
    22, fs/proc/array.c do_task_stat); None if there is no such process.

    The command name (field 2) is in parentheses and may hold spaces and
    parentheses itself: the fields after it are counted from its last ')'.
    """
    if pid <= 0:
        return None
    text = fs.read_text(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state): field 22 is fields[19]
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


class OwnersBusyError(HostdevError):
    """Another hook call holds the ownership lock for too long."""

    code = "state-busy"


class OwnerRecord(NamedTuple):
    device: str
    bus: str
    domain: str
    uuid: str
    managed: bool
    detached_by_us: bool
    state: str                       # "preparing", "prepared", "started" or "released"
    group: str | None = None
    node: str | None = None          # /dev/vfio/N we handed over
    node_owner: Sequence[int] = ()   # [uid, gid, mode] before
    since: float = 0.0
    pid: int = 0                     # the hook process while state == "preparing"
    cdev: str | None = None          # /dev/vfio/devices/vfioN we handed over (iommufd)
    cdev_owner: Sequence[int] = ()   # [uid, gid, mode] before
    iommu_owner: Sequence[int] = ()  # /dev/iommu's [uid, gid, mode] before us (iommufd)
    qemu_pid: int = 0                # QEMU's pid, recorded at "started" and "reconnect"
    qemu_start: int = 0              # its start time (/proc/PID/stat field 22, clock ticks)

    def at(self, **changes: Any) -> OwnerRecord:
        return self._replace(**changes)

    @classmethod
    def from_json(cls, data: Any) -> OwnerRecord:
        """Validate a decoded record field by field; ValueError names the first problem."""
        return cls(**decode_fields(data, _FIELDS, cls._field_defaults))


STATES = ("preparing", "prepared", "started", "released")
# Every field by type. The paths are chowned back as root at release: only the nodes the
# hook hands over pass (vfio's group nodes, "%s%d" with "noiommu-" for a no-IOMMU group:
# drivers/vfio/group.c vfio_group_alloc(); its cdevs "vfio%d" under /dev/vfio/devices:
# drivers/vfio/vfio_main.c vfio_init_device(), vfio_device_devnode()).
_FIELDS: dict[str, Check] = {
    "device": sysfs_name,
    "bus": one_of(*BUSES),
    "domain": domain_name,
    "uuid": text,
    "managed": boolean,
    "detached_by_us": boolean,
    "state": one_of(*STATES),
    "group": optional(matching(r"[0-9]+", "an IOMMU group number")),
    "node": optional(matching(r"/dev/vfio/(noiommu-)?[0-9]+", "/dev/vfio/N or "
                              "/dev/vfio/noiommu-N")),
    "node_owner": owner_ids,
    "since": seconds,
    "pid": count(PID_MAX),
    "cdev": optional(matching(r"/dev/vfio/devices/vfio[0-9]+", "/dev/vfio/devices/vfioN")),
    "cdev_owner": owner_ids,
    "iommu_owner": owner_ids,
    "qemu_pid": count(PID_MAX),
    "qemu_start": count(2**64 - 1),
}
assert list(_FIELDS) == list(OwnerRecord._fields)


class Owners(RecordStore[OwnerRecord]):
    """The ownership records of a host (one :class:`RecordStore`, rooted through HostFs)."""

    def __init__(self, fs: HostFs, clock: Callable[[], float] = wall_clock,
                 grace: float = START_GRACE,
                 pid_alive: Callable[[int], bool] = pid_alive,
                 err: TextIO | None = None) -> None:
        super().__init__(
            fs, OWNERS_DIR, what="ownership record", decode=OwnerRecord.from_json,
            encode=OwnerRecord._asdict, device_of=lambda r: r.device, error=HostdevError,
            corrupt_fix=lambda device, where: (
                f"check {device}'s state (platform-hostdev nodedev-list) and remove {where}"),
            busy=lambda timeout: OwnersBusyError(
                f"another platform-hostdev hook holds {OWNERS_DIR}/.lock for more than "
                f"{timeout:.0f} s", "retry the domain start", path=f"{OWNERS_DIR}/.lock"),
            now=clock, err=err)
        self.clock = clock
        self.grace = grace
        self.pid_alive = pid_alive

    def locked(self, timeout: float = 60.0) -> AbstractContextManager[None]:
        """Hold the ownership lock; OwnersBusyError past ``timeout``."""
        return super().locked(timeout)

    def qemu_pid(self, domain: str) -> int | None:
        """The pid of the domain's QEMU: libvirt's pid file names a live QEMU process.

        libvirt accepts any domain name without '/' (its objectName is ``[^/\\n]+``);
        the file is ``<name>.pid`` in one directory, so no name leads out of it.
        """
        if not domain or "/" in domain or "\0" in domain or "\n" in domain:
            return None
        text = self.fs.read_text(f"{LIBVIRT_RUN}/{domain}.pid")
        if not text or not text.strip().isdigit():
            return None
        pid = int(text.strip())
        cmdline = self.fs.read_text(f"/proc/{pid}/cmdline") or ""
        return pid if "qemu" in cmdline else None

    def domain_running(self, domain: str) -> bool:
        """libvirt's pid file for the domain names a live QEMU process."""
        return self.qemu_pid(domain) is not None

    def is_live(self, record: OwnerRecord) -> bool:
        """The owner runs, its prepare is still running, or it is within its start grace.

        A "preparing" record whose hook process is gone was left by a killed
        prepare: not live, whatever its age. A record that holds QEMU's pid is
        live exactly while that process runs (same pid, same start time).
        """
        if record.state == "released":  # its domain's release could not finish
            return False
        if record.qemu_pid:
            started = process_start(self.fs, record.qemu_pid)
            return started is not None and started == record.qemu_start
        if self.domain_running(record.domain):
            return True
        if record.state == "preparing":
            # Our own pid in a "preparing" record can only be an earlier, dead process's.
            return record.pid != os.getpid() and self.pid_alive(record.pid)
        return self.clock() - record.since < self.grace
