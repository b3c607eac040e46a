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

Operations on the journal directory are serialised by ``flock`` on
``<dir>/.lock``: the kernel drops the lock of a killed process, so a record
whose lock is free belongs to no running operation.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import monotonic_clock, sleep
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import RecordStore

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
        """Validate a decoded record; ValueError names the first problem."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        unknown = sorted(set(data) - set(cls._fields))
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        for key in ("device", "bus", "op", "step", "vfio_driver"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"{key!r} missing or not a string")
        for key in ("original_driver", "original_override"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key!r} is neither a string nor null")
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this version reads {FORMAT}")
        if data["op"] not in _OPS:
            raise ValueError(f"op {data['op']!r} is not detach or reattach")
        if data["step"] not in _OPS[data["op"]]:
            raise ValueError(f"step {data['step']!r} is not a {data['op']} step")
        if "/" in data["device"] or data["device"].startswith("."):
            raise ValueError(f"device {data['device']!r} is not a sysfs device name")
        if not isinstance(data.get("pid", 0), int) or not isinstance(
                data.get("started", 0.0), (int, float)):
            raise ValueError("pid/started have the wrong type")
        if not isinstance(data.get("original_known", True), bool):
            raise ValueError("'original_known' is not a boolean")
        consumers = data.get("consumers", [])
        if not isinstance(consumers, list) or not all(
                isinstance(c, list) and len(c) == 3 and all(isinstance(v, str) and v for v in c)
                and "/" not in "".join(c) and not c[1].startswith(".") for c in consumers):
            raise ValueError("'consumers' is not a list of [bus, device, driver] names")
        return cls(**{**data, "consumers": tuple(tuple(c) for c in consumers)})


class Journal(RecordStore[JournalRecord]):
    """The journal directory under a host root (one :class:`RecordStore`)."""

    def __init__(self, fs: HostFs, directory: str = JOURNAL_DIR,
                 clock: Callable[[], float] = monotonic_clock,
                 sleep: Callable[[float], None] = sleep) -> None:
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
            indent=1, clock=clock, sleep=sleep)

    def locked(self, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Hold the journal lock; JournalBusyError if another process keeps it past ``timeout``."""
        return super().locked(timeout)
