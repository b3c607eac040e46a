"""Crash-safe state files: atomic replacement and exclusive directory locks.

Shared by the binding journal, the ownership records and the guest DT store,
whose files must never be seen half-written after a crash and whose changes
must be serialised between concurrent hook calls.
"""
from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from platform_hostdev.host.boundary import monotonic_clock
from platform_hostdev.host.boundary import sleep as default_sleep

__all__ = ["atomic_write", "sync_dir", "exclusive_lock"]


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
    lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
