"""Crash-safe state files: atomic replacement, exclusive directory locks, record stores.

Shared by the binding journal, the ownership records and the guest DT store,
whose files must never be seen half-written after a crash and whose changes
must be serialised between concurrent hook calls. :class:`RecordStore` is the
one store under the journal and the ownership records: a directory, one JSON
file per device, named after the device and checked against it, every field
checked by type (:func:`decode_fields` and the checks below it).

A damaged record (bytes that are no UTF-8 JSON, a field of the wrong type or
value, a record naming another device, a directory or a symbolic link in its
place) is set aside within its directory as ``.DEVICE.json.damaged-<unix
time>`` (a dot name: no listing takes it for a record) and reported; it
affects only its device: :meth:`RecordStore.all` skips it and goes on with
the others, :meth:`RecordStore.read` of that device refuses as long as a
set-aside copy exists (a device whose record cannot be read is never handed
to another domain), :meth:`RecordStore.damaged` lists what is set aside.
Every OSError of a store's own writes is a :class:`StateUnwritableError`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Generic, NamedTuple, TextIO, TypeVar

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import monotonic_clock, wall_clock
from platform_hostdev.host.boundary import sleep as default_sleep
from platform_hostdev.host.fs import HostFs

__all__ = [
    "atomic_write", "sync_dir", "exclusive_lock", "holds_lock", "RecordStore",
    "DamagedRecord", "StateUnwritableError", "check_device_name", "decode_fields",
    "Check", "sysfs_name", "text", "domain_name", "one_of", "boolean", "count", "seconds",
    "optional", "matching", "owner_ids", "PID_MAX",
]

PID_MAX = 4 * 1024 * 1024
"""The largest pid Linux hands out (PID_MAX_LIMIT, include/linux/threads.h)."""
RECORD_MAX = 1 << 20
"""Bytes a record may hold; a larger file is damaged (records are a few hundred bytes)."""


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or unlink in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, rename; readers see old or new, never half.

    The temporary ``.<name>.<pid>.tmp`` is always a new file (O_EXCL, O_NOFOLLOW,
    never O_TRUNC): a name left there by a crashed process of the same pid, or
    planted (a symbolic link to a file of the host), is unlinked (the link, not
    its target) and the creation tried once more. ``durable`` adds an fsync of
    the file and of the directory, so the change also survives a power loss.
    State under /run needs no fsync: /run is a tmpfs that a reboot empties (and
    the devices it describes start afresh), while a crashed process loses
    nothing it wrote (the page cache keeps it).
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, _CREATE, mode)
    except FileExistsError:
        os.unlink(temp)
        fd = os.open(temp, _CREATE, mode)
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


_HELD: dict[tuple[int, int], int] = {}
"""The lock files (st_dev, st_ino) this process holds through :func:`exclusive_lock`."""


def holds_lock(lock_file: Path) -> bool:
    """Whether this process holds ``lock_file`` through :func:`exclusive_lock`."""
    try:
        st = os.stat(lock_file)
    except OSError:
        return False
    return _HELD.get((st.st_dev, st.st_ino), 0) > 0


def _acquire(lock_file: Path, timeout: float, busy: Callable[[], Exception],
             clock: Callable[[], float], sleep: Callable[[float], None]) -> int:
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if clock() >= deadline:
                    raise busy() from None
                sleep(0.02)
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def exclusive_lock(lock_file: Path, timeout: float, busy: Callable[[], Exception],
                   clock: Callable[[], float] = monotonic_clock,
                   sleep: Callable[[float], None] = default_sleep,
                   unusable: Callable[[OSError], Exception] | None = None) -> Iterator[None]:
    """Hold an flock on ``lock_file``; raise ``busy()`` if not had within ``timeout``.

    The kernel drops the lock when the holder dies, so a crash never leaves it held.
    Not re-entrant: a second lock of the same file in one process waits for the first.
    ``unusable(exc)`` is raised for an OSError taking the lock (its directory or file
    cannot be made or opened); without it the OSError itself.
    """
    try:
        fd = _acquire(lock_file, timeout, busy, clock, sleep)
    except OSError as exc:
        if unusable is None:
            raise
        raise unusable(exc) from None
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
        os.close(fd)  # closing the descriptor releases the flock


R = TypeVar("R")


def check_device_name(device: str) -> str:
    """A sysfs device name fit to be a file name: not empty, no '/', not starting with '.'."""
    if not _is_sysfs_name(device):
        raise HostdevError(f"device name {device!r} is not a sysfs device name",
                           "the domain XML or the record names the device wrongly",
                           code="invalid-device-spec", device=device)
    return device


def _is_sysfs_name(name: object) -> bool:
    return (isinstance(name, str) and bool(name) and "/" not in name and "\0" not in name
            and not name.startswith("."))


# ------------------------------------------------------------ field checks

Check = Callable[[Any], Any]
"""A field's check: the value as the record keeps it; ValueError says what is wrong."""


def decode_fields(data: Any, checks: Mapping[str, Check],
                  defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a parsed JSON record, each through its check (in ``checks`` order).

    A key outside ``checks`` is refused, one without a default must be there;
    ValueError names the first problem and its key.
    """
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(data) - set(checks))
    if unknown:
        raise ValueError(f"unknown keys {unknown}")
    fields: dict[str, Any] = {}
    for key, check in checks.items():
        if key not in data:
            if key not in defaults:
                raise ValueError(f"{key!r} missing")
            continue
        try:
            fields[key] = check(data[key])
        except ValueError as exc:
            raise ValueError(f"{key!r} {exc}") from None
    return fields


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def sysfs_name(value: Any) -> str:
    """A sysfs name (device, driver, bus): not empty, no '/', no NUL, not starting with '.'."""
    if not _is_sysfs_name(value):
        raise ValueError(f"is {_shown(value)}, not a sysfs name (not empty, no '/', no NUL, "
                         "not starting with '.')")
    return str(value)


def text(value: Any) -> str:
    """A string that is not empty."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"is {_shown(value)}, not a string that is not empty")
    return value


def domain_name(value: Any) -> str:
    """A libvirt domain name: not empty, no '/', no newline, no NUL (it may start with '.';
    libvirt's virDomainDefParseName and virXMLCheckIllegalChars refuse the rest)."""
    if not isinstance(value, str) or not value or any(c in value for c in "/\n\0"):
        raise ValueError(f"is {_shown(value)}, not a domain name (not empty, no '/', "
                         "no newline)")
    return value


def one_of(*values: str) -> Check:
    """One of ``values``."""
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"is {_shown(value)}, not {' or '.join(values)}")
        return value
    return check


def boolean(value: Any) -> bool:
    """true or false (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"is {_shown(value)}, not true or false")
    return value


def count(limit: int) -> Check:
    """An integer from 0 to ``limit`` (not a boolean, not a float)."""
    def check(value: Any) -> int:
        if type(value) is not int or not 0 <= value <= limit:
            raise ValueError(f"is {_shown(value)}, not an integer from 0 to {limit}")
        return value
    return check


def seconds(value: Any) -> float:
    """A finite number of seconds, not negative (not a boolean, not a string)."""
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"is {_shown(value)}, not a number of seconds (finite, not negative)")
    return value


def optional(check: Check) -> Check:
    """null, or what ``check`` takes."""
    def checked(value: Any) -> Any:
        return None if value is None else check(value)
    return checked


def matching(pattern: str, what: str) -> Check:
    """A string all of which matches ``pattern`` (ASCII), described as ``what``."""
    compiled = re.compile(pattern, re.ASCII)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"is {_shown(value)}, not {what}")
        return value
    return check


_ID_MAX = 2**32 - 2   # (uid_t)-1 means "leave unchanged" to chown(2)


def owner_ids(value: Any) -> list[int]:
    """A file's owner and mode before us: [] (none recorded) or [uid, gid, mode]."""
    if value == [] and isinstance(value, list):
        return []
    if (isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value)
            and 0 <= value[0] <= _ID_MAX and 0 <= value[1] <= _ID_MAX
            and 0 <= value[2] <= 0o7777):
        return list(value)
    raise ValueError(f"is {_shown(value)}, not [] or [uid, gid, mode] (integers, not "
                     "negative, mode at most 0o7777)")


# ------------------------------------------------------------ the store

class StateUnwritableError(HostdevError):
    """A state directory or record file that cannot be written: nothing was changed."""

    code = "state-unwritable"


class DamagedRecord(NamedTuple):
    """A record that could not be read, set aside (or left in place) and reported."""

    device: str
    path: str        # host path of the set-aside copy (of the record when left in place)
    reason: str      # what is wrong with it: "is corrupt (...)", "describes device 'x'", ...
    found: str       # host path of the record file it was
    set_aside: bool  # False: still in place (the lock was another process's, or no rename)
    fix: str         # what to do about it
    describes: str | None = None  # the other device a record under this name describes

    def describe(self, what: str) -> str:
        """One line for a log or the recover report."""
        where = (f"set aside as {self.path}" if self.set_aside else "left in place")
        return f"{what} {self.found} {self.reason}; {where}"


class _Damage(Exception):
    def __init__(self, reason: str, recorded: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recorded = recorded  # the device a record of another device names


_ASIDE = re.compile(r"\.(?P<device>.+)\.json\.damaged-(?P<time>[0-9]+)(?:\.[0-9]+)?", re.ASCII)


class RecordStore(Generic[R]):
    """One JSON record per device in a directory under a host root, under one lock.

    ``<directory>/<device>.json``, written atomically without fsync (the
    stores live under /run, see :func:`atomic_write`); a record must name the
    device of its file (a renamed or copied file is damaged, never acted on
    for another device). ``decode`` validates a parsed record (ValueError
    names the problem), ``encode`` gives its JSON data, ``device_of`` its
    device. A damaged record is set aside (module docstring) and logged on
    ``err`` (default: standard error). A refused read is ``error`` (a
    HostdevError class) with ``what`` naming the record;
    ``corrupt_fix(device, host_file)`` says how to repair one. A failed write
    is a :class:`StateUnwritableError`.
    """

    def __init__(self, fs: HostFs, directory: str, *, what: str,
                 decode: Callable[[Any], R], encode: Callable[[R], Any],
                 device_of: Callable[[R], str], error: type[HostdevError],
                 corrupt_fix: Callable[[str, str], str],
                 busy: Callable[[float], Exception], indent: int | None = None,
                 clock: Callable[[], float] = monotonic_clock,
                 sleep: Callable[[float], None] = default_sleep,
                 now: Callable[[], float] = wall_clock, err: TextIO | None = None) -> None:
        self.fs = fs
        self.directory = directory
        self.what = what
        self._decode, self._encode, self._device_of = decode, encode, device_of
        self._error, self._corrupt_fix, self._busy = error, corrupt_fix, busy
        self._indent = indent
        self._clock, self._sleep, self._now = clock, sleep, now
        self._err = err
        self._in_place: dict[str, DamagedRecord] = {}  # damaged records left in place

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

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._read_error(exc, self.directory) from None

    def devices(self) -> list[str]:
        """Devices that have a record file (sound or not), sorted."""
        return sorted(n[:-5] for n in self._names()
                      if n.endswith(".json") and not n.startswith("."))

    def read(self, device: str) -> R | None:
        """The device's record, None if it has none.

        ``error`` (code journal-corrupt) when it is damaged (it is set aside) or
        a set-aside copy of an earlier one is there, or when it has no record but
        a set-aside one under another device's name describes it (a renamed
        record); StateUnwritableError when it cannot be set aside.
        """
        self.file(device)
        record, damage = self._examine(device, strict=True)
        if damage is None:  # a copy set aside for it, or one of its record under another name
            damage = next((d for d in self._set_aside() if d.device == device or (
                record is None and d.describes == device)), None)
        if damage is not None:
            raise self._refusal(damage, device)
        return record

    def all(self) -> list[R]:
        """Every sound record, in device order. A damaged one is set aside, logged and
        skipped; so is a device with a set-aside copy (:meth:`damaged` lists them)."""
        aside = {d.device for d in self._set_aside()}
        records = []
        for device in self.devices():
            record, damage = self._examine(device, strict=False)
            if record is not None and damage is None and device not in aside:
                records.append(record)
        return records

    def damaged(self) -> list[DamagedRecord]:
        """The damaged records: the set-aside copies in the directory (why each is damaged,
        read again from the copy) and those this store found but had to leave in place."""
        found = {d.path: d for d in self._set_aside()}
        for damage in self._in_place.values():
            found.setdefault(damage.path, damage)
        return sorted(found.values())

    def describe(self, damage: DamagedRecord) -> str:
        """:meth:`DamagedRecord.describe` with this store's kind of record."""
        return damage.describe(self.what)

    def _set_aside(self) -> list[DamagedRecord]:
        found = []
        for name in sorted(self._names()):
            match = _ASIDE.fullmatch(name)
            if match is None or not _is_sysfs_name(match["device"]):
                continue
            device = match["device"]
            try:
                self._load(device, self.path / name)
                damage = _Damage(f"was damaged (set aside at unix time {match['time']}); "
                                 "the copy reads as a sound record now")
            except _Damage as found_now:
                damage = found_now
            found.append(self._damaged(device, damage, f"{self.directory}/{name}"))
        return found

    def _damaged(self, device: str, damage: _Damage, path: str) -> DamagedRecord:
        where = self.host_file(device)
        fix = self._corrupt_fix(device, path)
        if damage.recorded is not None:
            other = self.host_file(damage.recorded)
            fix = (f"the file was renamed or copied: if {other} is missing, check "
                   f"{damage.recorded}'s state and move {path} back to {other}; else "
                   f"delete {path}")
        return DamagedRecord(device, path, damage.reason, where, path != where, fix,
                             damage.recorded)

    def _load(self, device: str, path: Path) -> R | None:
        """The record in ``path`` for ``device``; None if there is none; _Damage if damaged."""
        where = self.fs.host_path(path)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._read_error(exc, where, device) from None
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                    "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file")
            raise _Damage(f"is {kind}, not a record file")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # replaced meanwhile
                raise _Damage(f"is not a regular file ({exc.strerror})") from None
            raise self._read_error(exc, where, device) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _Damage("is not a regular file")
            chunks, size = [], 0
            while size <= RECORD_MAX:
                chunk = os.read(fd, RECORD_MAX + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise self._read_error(exc, where, device) from None
        finally:
            os.close(fd)
        if size > RECORD_MAX:
            raise _Damage(f"is corrupt (larger than {RECORD_MAX} bytes)")
        try:
            parsed = json.loads(b"".join(chunks).decode("utf-8"))
            record = self._decode(parsed)
        except UnicodeDecodeError as exc:
            raise _Damage(f"is corrupt (not UTF-8: {exc.reason} at byte {exc.start})") from None
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
            raise _Damage(f"is corrupt ({exc})") from None
        recorded = self._device_of(record)
        if recorded != device:
            raise _Damage(f"describes device {recorded!r}", recorded)
        return record

    def _examine(self, device: str, strict: bool) -> tuple[R | None, DamagedRecord | None]:
        """The device's record, or what is wrong with it (then set aside if the lock is
        ours or free: never while another process may be rewriting it)."""
        path = self.file(device)
        try:
            record = self._load(device, path)
            self._in_place.pop(device, None)  # sound (again)
            return record, None
        except _Damage as damage:
            first = damage
        lock = self.path / ".lock"
        if holds_lock(lock):
            return None, self._put_aside(device, first, strict)
        try:
            with exclusive_lock(lock, 0.0, _LockTaken, self._clock, self._sleep):
                try:  # rewritten before we had the lock?
                    return self._load(device, path), None
                except _Damage as damage:
                    return None, self._put_aside(device, damage, strict)
        except (_LockTaken, OSError):
            return None, self._leave(device, first, "another process holds the lock")

    def _put_aside(self, device: str, damage: _Damage, strict: bool) -> DamagedRecord:
        """Rename the damaged record aside (the lock is held); report it."""
        source = self.file(device)
        stamp = int(self._now())
        name = f".{device}.json.damaged-{stamp}"
        for n in range(1, 1000):
            if not os.path.lexists(self.path / name):
                break
            name = f".{device}.json.damaged-{stamp}.{n}"
        target = f"{self.directory}/{name}"
        try:
            os.rename(source, self.path / name)
        except OSError as exc:
            error = self._unwritable(exc, f"set aside the damaged {self.what}",
                                     self.host_file(device), device)
            if strict:
                raise error from None
            return self._leave(device, damage, error.what)
        found = self._damaged(device, damage, target)
        self._in_place.pop(device, None)
        self._log(f"platform-hostdev: {self.describe(found)}; {device} is refused until it "
                  "is removed")
        return found

    def _leave(self, device: str, damage: _Damage, why: str) -> DamagedRecord:
        found = self._damaged(device, damage, self.host_file(device))
        self._in_place[device] = found
        self._log(f"platform-hostdev: {self.describe(found)} ({why}); {device} is refused")
        return found

    def _log(self, line: str) -> None:
        print(line, file=self._err if self._err is not None else sys.stderr, flush=True)

    def _refusal(self, damage: DamagedRecord, device: str) -> HostdevError:
        what = f"{self.what} {damage.found} {damage.reason}"
        what += (f"; it is set aside as {damage.path}" if damage.set_aside
                 else "; it is left in place")
        what += f", and {device} is refused while it is there"
        return self._error(what, damage.fix, code="journal-corrupt", device=device,
                           path=damage.path, found=damage.found, reason=damage.reason)

    def write(self, record: R) -> None:
        """Replace the record of its device atomically (StateUnwritableError if it cannot)."""
        device = self._device_of(record)
        path = self.file(device)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise self._unwritable(exc, "create the directory", self.directory, device) from None
        data = json.dumps(self._encode(record), indent=self._indent, sort_keys=True)
        try:
            atomic_write(path, data.encode() + b"\n", durable=False)  # /run: see atomic_write
        except OSError as exc:
            raise self._unwritable(exc, f"write the {self.what}", self.host_file(device),
                                   device) from None

    def remove(self, device: str) -> None:
        """Delete the device's record (no error if it has none; its set-aside copies stay)."""
        try:
            self.file(device).unlink(missing_ok=True)
        except OSError as exc:
            raise self._unwritable(exc, f"remove the {self.what}", self.host_file(device),
                                   device) from None

    def locked(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the store's lock (``<directory>/.lock``); ``busy(timeout)`` past ``timeout``."""
        lock = f"{self.directory}/.lock"
        return exclusive_lock(self.path / ".lock", timeout, lambda: self._busy(timeout),
                              self._clock, self._sleep,
                              lambda exc: self._unwritable(exc, "take the lock", lock))

    # -------------------------------------------------------- errors

    def _read_error(self, exc: OSError, where: str, device: str | None = None) -> HostdevError:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return self._error(f"cannot read {self.what} {where}: {exc.strerror}",
                               "run as root", code="permission-denied", device=device,
                               path=where)
        return self._unwritable(exc, "read", where, device)

    def _unwritable(self, exc: OSError, action: str, where: str,
                    device: str | None = None) -> StateUnwritableError:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        state = "changed" if action == "read" else "changed by this write"
        what = (f"cannot {action} {where}: {exc.strerror or exc} ({name}); the device "
                f"state was not {state}")
        return StateUnwritableError(what, self._unwritable_fix(exc.errno, where), path=where,
                                    errno=name, device=device)

    def _unwritable_fix(self, number: int | None, where: str) -> str:
        top = self.directory.strip("/").split("/")[0]
        if number in (errno.ENOSPC, errno.EDQUOT):
            return f"free space on the file system of {self.directory} (df /{top}), then retry"
        if number == errno.EROFS:
            return f"remount /{top} read-write (mount -o remount,rw /{top}), then retry"
        if number in (errno.EACCES, errno.EPERM):
            return "run as root"
        if number in (errno.ENOTDIR, errno.EEXIST):
            blocker = self._blocker()
            if blocker is not None:
                return (f"remove the file {blocker}: it stands where the directory "
                        f"{blocker} belongs, then retry")
        if number == errno.EISDIR:
            return f"remove the directory {where}: a record file belongs there, then retry"
        return (f"check {self.directory}: free space on its file system, /{top} mounted "
                f"read-write, a directory (not a file) at {self.directory}, running as root; "
                "then retry")

    def _blocker(self) -> str | None:
        """The first component of the directory's path that exists and is no directory."""
        parts = self.directory.strip("/").split("/")
        for n in range(1, len(parts) + 1):
            host = "/" + "/".join(parts[:n])
            try:
                st = os.lstat(self.fs.path(host))
            except OSError:
                return None
            if not stat.S_ISDIR(st.st_mode):
                return host
        return None


class _LockTaken(Exception):
    """The store's lock is another process's (no waiting to set a record aside)."""
