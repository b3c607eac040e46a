"""The binding journal: what a detach or re-attach is about to change, kept across crashes.

One JSON file per device, ``<root>/run/platform-hostdev/<device>.json``,
written atomically (temporary file, rename; no fsync: /run is a tmpfs that a
reboot empties, when the devices start afresh too) BEFORE the first sysfs
write and rewritten after each step. It records the
device, its bus, the driver and driver_override it had before the detach, the
operation and the last step done. A completed detach keeps its record (the
re-attach needs the original driver); a completed re-attach or a rolled-back
detach removes it. Whatever a crash leaves is what ``recover`` restores.

Operations on the journal directory are serialised by ``flock`` on
``<dir>/.lock``: the kernel drops the lock of a killed process, so a record
whose lock is free belongs to no running operation.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import monotonic_clock, sleep
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import atomic_write, exclusive_lock

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


class Journal:
    """The journal directory under a host root."""

    def __init__(self, fs: HostFs, directory: str = JOURNAL_DIR,
                 clock: Callable[[], float] = monotonic_clock,
                 sleep: Callable[[float], None] = sleep) -> None:
        self.fs = fs
        self.directory = directory
        self._clock = clock
        self._sleep = sleep

    @property
    def path(self) -> Path:
        return self.fs.path(self.directory)

    def file(self, device: str) -> Path:
        return self.path / f"{device}.json"

    def host_file(self, device: str) -> str:
        return f"{self.directory}/{device}.json"

    def devices(self) -> list[str]:
        """Devices that have a record, sorted."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def read(self, device: str) -> JournalRecord | None:
        """The device's record, None if it has none; JournalError if it is unreadable."""
        path = self.file(device)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(f"cannot read journal file {self.host_file(device)}: "
                               f"{exc.strerror}", "run as root", code="permission-denied",
                               device=device, path=self.host_file(device)) from None
        try:
            record = JournalRecord.from_json(json.loads(text))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise JournalError(
                f"journal file {self.host_file(device)} is corrupt ({exc})",
                f"check {device}'s driver and driver_override under /sys/bus/*/devices/{device}, "
                f"put them back by hand if needed, then delete {self.host_file(device)}",
                device=device, path=self.host_file(device)) from None
        if record.device != device:
            raise JournalError(
                f"journal file {self.host_file(device)} describes device {record.device!r}",
                f"the file was renamed or copied; delete {self.host_file(device)}",
                device=device, path=self.host_file(device))
        return record

    def write(self, record: JournalRecord) -> None:
        """Replace the device's record atomically (temp file, rename; /run: no fsync)."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(self.file(record.device), data, durable=False)

    def remove(self, device: str) -> None:
        """Delete the device's record (no error if it has none)."""
        self.file(device).unlink(missing_ok=True)

    def locked(self, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Hold the journal lock; JournalBusyError if another process keeps it past ``timeout``."""
        return exclusive_lock(
            self.path / ".lock", timeout,
            lambda: JournalBusyError(
                f"another platform-hostdev operation holds {self.directory}/.lock",
                "wait for it to finish; the lock is released when it exits",
                path=f"{self.directory}/.lock"),
            self._clock, self._sleep)
