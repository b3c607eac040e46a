"""A writer for the cpio "newc" format the kernel unpacks as an initramfs.

Entries are written in call order with uid/gid 0 and mtime 0, so the same
input tree gives the same archive (the cache key, not the archive, decides
reuse). See the kernel's Documentation/driver-api/early-userspace/buffer-format.rst.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

__all__ = ["CpioWriter", "Writable"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class Writable(Protocol):
    """Where the archive goes: a file or a compressor."""

    def write(self, data: bytes, /) -> object: ...


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Append newc entries to a binary stream; call :meth:`close` to write the trailer."""

    def __init__(self, stream: Writable) -> None:
        self._stream = stream
        self._ino = 0
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name = name.strip("/") or "."
        if name in self._names and name != _TRAILER:
            raise ValueError(f"duplicate initramfs entry {name!r}")
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = _MAGIC + b"".join(b"%08X" % value for value in fields)
        self._stream.write(header + encoded + _pad(len(header) + len(encoded)))
        self._stream.write(data + _pad(len(data)))

    def __contains__(self, name: str) -> bool:
        return name.strip("/") in self._names

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        """A directory (its parent must come first)."""
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """A regular file with ``data`` as content."""
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        """A symbolic link to ``target``."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """A character device node, e.g. /dev/console (5, 1)."""
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def add_tree(self, root: Path, prefix: str = "") -> None:
        """Everything under ``root`` (dirs, files, symlinks), parents first, sorted."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            rel = here.relative_to(root).as_posix()
            base = "/".join(part for part in (prefix.strip("/"), rel) if part not in ("", "."))
            if base and base not in self:
                self.add_dir(base, stat.S_IMODE(here.lstat().st_mode))
            for entry in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
                path = here / entry
                name = f"{base}/{entry}" if base else entry
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    self.add_symlink(name, os.readlink(path))
                elif stat.S_ISREG(info.st_mode):
                    self.add_file(name, path.read_bytes(), stat.S_IMODE(info.st_mode))

    def close(self) -> None:
        """Write the trailer entry (the stream stays open)."""
        self._entry(_TRAILER, 0, nlink=1)
