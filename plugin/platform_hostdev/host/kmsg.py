"""The kernel log lines an operation caused, read from ``/dev/kmsg``.

A :class:`KernelLog` is opened before the writes and positioned at the end
(``lseek(SEEK_END)`` on /dev/kmsg skips to the newest record); afterwards
:meth:`KernelLog.new_messages` returns the messages logged since. Records are
``<prio>,<seq>,<usec>,<flags>;<message>`` followed by continuation lines that
start with a space. A fake kernel appends the same format to a plain file at
``<root>/dev/kmsg``: the reader does not need to know which it has. A log
that cannot be opened (no permission, no /dev) yields no messages; callers
then explain failures from the device's state alone.
"""
from __future__ import annotations

import errno
import os
import re
from types import TracebackType

from platform_hostdev.host.fs import HostFs

__all__ = ["KernelLog", "probe_failure", "format_record"]

_PROBE_FAILED = re.compile(r"probe with driver (?P<driver>\S+) failed with error (?P<err>-?\d+)")


def format_record(message: str, seq: int, level: int = 3, usec: int = 0) -> str:
    """One /dev/kmsg record line (what a fake kernel writes)."""
    return f"{level},{seq},{usec},-;{message}\n"


class KernelLog:
    """Messages the kernel logs from now on; a context manager that owns the open log."""

    def __init__(self, fs: HostFs) -> None:
        self._path = fs.path("/dev/kmsg")
        self._fd: int | None = None
        self._pending = b""

    def __enter__(self) -> KernelLog:
        try:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self.close()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def new_messages(self) -> list[str]:
        """Messages logged since the log was opened or last read (continuation lines dropped)."""
        if self._fd is None:
            return []
        chunks = []
        while True:
            try:
                chunk = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before we read them
                    continue
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = self._pending + b"".join(chunks)
        lines = data.split(b"\n")
        self._pending = lines.pop()
        messages = []
        for raw in lines:
            line = raw.decode(errors="replace")
            if not line or line.startswith(" "):
                continue
            _, sep, message = line.partition(";")
            if sep:
                messages.append(message)
        return messages


def probe_failure(messages: list[str], device: str) -> tuple[str, int] | None:
    """(driver, errno) of the last "probe with driver X failed with error -N" for ``device``."""
    found = None
    for message in messages:
        if f" {device}: " not in message:
            continue
        match = _PROBE_FAILED.search(message)
        if match:
            found = (match["driver"], abs(int(match["err"])))
    return found
