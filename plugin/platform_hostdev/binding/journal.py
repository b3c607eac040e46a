"""The binding journal: what a detach or re-attach is about to change, kept across crashes.

One JSON file per device, ``<root>/run/platform-hostdev/<device>.json`` (a
:class:`~platform_hostdev.host.statefiles.RecordStore`, as the ownership
records), written atomically (temporary file, rename; no fsync: /run is a
tmpfs that a reboot empties, when the devices start afresh too) BEFORE the
first sysfs write and rewritten after each step. It records the
device, its bus, the driver and driver_override it had before the detach, the
operation and the last step done. A completed detach keeps its record (the
re-attach needs the original driver); a completed re-attach or a rolled-back
detach removes it. Whatever a crash leaves is what ``recover`` restores.
Every field is checked by type on reading; a damaged record is set aside and
refuses its device only (:class:`~platform_hostdev.host.statefiles.RecordStore`).

Operations on the journal directory are serialised by ``flock`` on
``<dir>/.lock``: the kernel drops the lock of a killed process, so a record
whose lock is free belongs to no running operation.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TextIO

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import monotonic_clock, sleep
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import (
    PID_MAX,
    Check,
    RecordStore,
    boolean,
    count,
    decode_fields,
    one_of,
    optional,
    seconds,
    sysfs_name,
    text,
)
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

__all__ = [
    "JOURNAL_DIR",
    "DETACH_STEPS",
    "REATTACH_STEPS",
    "JournalRecord",
    "Journal",
    "JournalError",
    "JournalBusyError",
]

JOURNAL_DIR = "/run/platform-hostdev"
FORMAT = 1
DETACH_STEPS = ("planned", "override-written", "unbound", "probed", "detached")
"""Detach steps in order; "detached" is the only final one (the record is kept)."""
REATTACH_STEPS = ("planned", "override-cleared", "unbound", "probed")
"""Re-attach steps in order; the record is removed once the original driver is back."""
_OPS = {"detach": DETACH_STEPS, "reattach": REATTACH_STEPS}


class JournalError(HostdevError):
    """A journal file that cannot be read or understood."""

    code = "journal-corrupt"


class JournalBusyError(HostdevError):
    """Another platform-hostdev operation holds the journal lock."""

    code = "state-busy"


class JournalRecord(NamedTuple):
    """One device's pending or completed binding change."""

    device: str
    bus: str
    op: str                      # "detach" or "reattach"
    step: str                    # one of DETACH_STEPS / REATTACH_STEPS
    vfio_driver: str
    original_driver: str | None
    original_override: str | None
    original_known: bool = True  # False: re-attach of a device detached without this tool
    pid: int = 0
    started: float = 0.0
    format: int = FORMAT
    consumers: tuple[tuple[str, str, str], ...] = ()  # (bus, name, driver) to give back

    @property
    def complete_detach(self) -> bool:
        return self.op == "detach" and self.step == "detached"

    def at(self, step: str, op: str | None = None) -> JournalRecord:
        return self._replace(step=step, op=op or self.op)

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Any) -> JournalRecord:
        """Validate a decoded record field by field; ValueError names the first problem."""
        fields = decode_fields(data, _FIELDS, cls._field_defaults)
        if fields["step"] not in _OPS[fields["op"]]:
            raise ValueError(f"step {fields['step']!r} is not a {fields['op']} step")
        if fields["vfio_driver"] != VFIO_DRIVERS[fields["bus"]]:
            raise ValueError(f"vfio_driver {fields['vfio_driver']!r} is not the vfio driver of "
                             f"the {fields['bus']} bus ({VFIO_DRIVERS[fields['bus']]})")
        return cls(**fields)


def _format(value: Any) -> int:
    if type(value) is not int or value != FORMAT:
        raise ValueError(f"names format {value!r}, this version reads {FORMAT}")
    return value


def _consumers(value: Any) -> tuple[tuple[str, str, str], ...]:
    """[[bus, device, driver], ...]: sysfs names (a consumer may be on any bus: a device
    link's consumer is named "consumer:BUS:NAME", drivers/base/core.c)."""
    if not isinstance(value, list) or not all(isinstance(c, list) and len(c) == 3
                                              for c in value):
        raise ValueError("is not a list of [bus, device, driver] names")
    try:
        return tuple((sysfs_name(bus), sysfs_name(name), sysfs_name(driver))
                     for bus, name, driver in value)
    except ValueError as exc:
        raise ValueError(f"holds a name that {exc}") from None


_DRIVER = optional(sysfs_name)
# Every field by type (in the order of JournalRecord); step and vfio_driver are checked
# against op and bus once all are read.
_FIELDS: dict[str, Check] = {
    "device": sysfs_name,
    "bus": one_of(*VFIO_DRIVERS),
    "op": one_of(*_OPS),
    "step": text,
    "vfio_driver": one_of(*VFIO_DRIVERS.values()),
    "original_driver": _DRIVER,
    "original_override": _DRIVER,
    "original_known": boolean,
    "pid": count(PID_MAX),
    "started": seconds,
    "format": _format,
    "consumers": _consumers,
}
assert list(_FIELDS) == list(JournalRecord._fields)


class Journal(RecordStore[JournalRecord]):
    """The journal directory under a host root (one :class:`RecordStore`)."""

    def __init__(self, fs: HostFs, directory: str = JOURNAL_DIR,
                 clock: Callable[[], float] = monotonic_clock,
                 sleep: Callable[[float], None] = sleep, err: TextIO | None = None) -> None:
        super().__init__(
            fs, directory, what="journal file", decode=JournalRecord.from_json,
            encode=JournalRecord.to_json, device_of=lambda r: r.device, error=JournalError,
            corrupt_fix=lambda device, where: (
                f"check {device}'s driver and driver_override under "
                f"/sys/bus/*/devices/{device}, put them back by hand if needed, then "
                f"delete {where}"),
            busy=lambda _: JournalBusyError(
                f"another platform-hostdev operation holds {directory}/.lock",
                "wait for it to finish; the lock is released when it exits",
                path=f"{directory}/.lock"),
            indent=1, clock=clock, sleep=sleep, err=err)

    def locked(self, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Hold the journal lock; JournalBusyError if another process keeps it past ``timeout``."""
        return super().locked(timeout)
