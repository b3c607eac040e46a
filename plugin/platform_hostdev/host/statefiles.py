"""Crash-safe state files: atomic replacement, exclusive directory locks, record stores.

Shared by the binding journal, the ownership records and the guest DT store,
whose files must never be seen half-written after a crash and whose changes
must be serialised between concurrent hook calls. :class:`RecordStore` is the
one store under the journal and the ownership records: a directory, one JSON
file per device, named after the device and checked against it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import monotonic_clock
from platform_hostdev.host.boundary import sleep as default_sleep
from platform_hostdev.host.fs import HostFs

__all__ = ["atomic_write", "sync_dir", "exclusive_lock", "RecordStore", "check_device_name"]


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or unlink in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, rename; readers see old or new, never half.

    ``durable`` adds an fsync of the file and of the directory, so the change
    also survives a power loss. State under /run needs no fsync: /run is a
    tmpfs that a reboot empties (and the devices it describes start afresh),
    while a crashed process loses nothing it wrote (the page cache keeps it).
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        sync_dir(path.parent)


@contextmanager
def exclusive_lock(lock_file: Path, timeout: float, busy: Callable[[], Exception],
                   clock: Callable[[], float] = monotonic_clock,
                   sleep: Callable[[float], None] = default_sleep) -> Iterator[None]:
    """Hold an flock on ``lock_file``; raise ``busy()`` if not had within ``timeout``.

    The kernel drops the lock when the holder dies, so a crash never leaves it held.
    Not re-entrant: a second lock of the same file in one process waits for the first.
    """
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno != errno.EROFS or not lock_file.is_file():
            raise
        # a read-only /run: flock needs no write access, and giving back what needs no
        # state write (a /dev node's owner) is still worth doing under the lock
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        deadline = clock() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if clock() >= deadline:
                    raise busy() from None
                sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


R = TypeVar("R")


def check_device_name(device: str) -> str:
    """A sysfs device name fit to be a file name: not empty, no '/', not starting with '.'."""
    if not device or "/" in device or device.startswith(".") or "\0" in device:
        raise HostdevError(f"device name {device!r} is not a sysfs device name",
                           "the domain XML or the record names the device wrongly",
                           code="invalid-device-spec", device=device)
    return device


class RecordStore(Generic[R]):
    """One JSON record per device in a directory under a host root, under one lock.

    ``<directory>/<device>.json``, written atomically without fsync (the
    stores live under /run, see :func:`atomic_write`); a record must name the
    device of its file (a renamed or copied file is refused, never acted on
    for another device). ``decode`` validates a parsed record (ValueError
    names the problem), ``encode`` gives its JSON data, ``device_of`` its
    device. Errors are ``error`` (a HostdevError class) with ``what`` naming
    the record; ``corrupt_fix(device, host_file)`` says how to repair one.
    """

    def __init__(self, fs: HostFs, directory: str, *, what: str,
                 decode: Callable[[Any], R], encode: Callable[[R], Any],
                 device_of: Callable[[R], str], error: type[HostdevError],
                 corrupt_fix: Callable[[str, str], str],
                 busy: Callable[[float], Exception], indent: int | None = None,
                 clock: Callable[[], float] = monotonic_clock,
                 sleep: Callable[[float], None] = default_sleep) -> None:
        self.fs = fs
        self.directory = directory
        self.what = what
        self._decode, self._encode, self._device_of = decode, encode, device_of
        self._error, self._corrupt_fix, self._busy = error, corrupt_fix, busy
        self._indent = indent
        self._clock, self._sleep = clock, sleep

    @property
    def path(self) -> Path:
        """The directory (under the root)."""
        return self.fs.path(self.directory)

    def file(self, device: str) -> Path:
        """The record file of a device (under the root)."""
        return self.path / f"{check_device_name(device)}.json"

    def host_file(self, device: str) -> str:
        """The record file of a device as the host names it, for messages."""
        return f"{self.directory}/{device}.json"

    def devices(self) -> list[str]:
        """Devices that have a record, sorted."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def read(self, device: str) -> R | None:
        """The device's record, None if it has none; ``error`` if unreadable or foreign."""
        path = self.file(device)
        where = self.host_file(device)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(f"cannot read {self.what} {where}: {exc.strerror}",
                              "run as root", code="permission-denied", device=device,
                              path=where) from None
        try:
            record = self._decode(json.loads(text))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise self._error(f"{self.what} {where} is corrupt ({exc})",
                              self._corrupt_fix(device, where), code="journal-corrupt",
                              device=device, path=where) from None
        recorded = self._device_of(record)
        if recorded != device:
            raise self._error(
                f"{self.what} {where} describes device {recorded!r}",
                f"the file was renamed or copied: move it back to "
                f"{self.host_file(recorded)} if that file is missing, else delete {where}",
                code="journal-corrupt", device=device, path=where)
        return record

    def all(self) -> list[R]:
        """Every record, in device order (the first unreadable one raises)."""
        return [r for r in (self.read(d) for d in self.devices()) if r is not None]

    def write(self, record: R) -> None:
        """Replace the record of its device atomically."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(self._encode(record), indent=self._indent, sort_keys=True)
        atomic_write(self.file(self._device_of(record)), data.encode() + b"\n",
                     durable=False)  # /run: see atomic_write

    def remove(self, device: str) -> None:
        """Delete the device's record (no error if it has none)."""
        self.file(device).unlink(missing_ok=True)

    def locked(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the store's lock (``<directory>/.lock``); ``busy(timeout)`` past ``timeout``."""
        return exclusive_lock(self.path / ".lock", timeout, lambda: self._busy(timeout),
                              self._clock, self._sleep)
