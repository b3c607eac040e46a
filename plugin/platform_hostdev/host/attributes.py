"""Writing sysfs attributes the kernel acts on (driver_override, unbind, drivers_probe, ...).

A sysfs attribute must be written with one ``write(2)`` of the whole value:
the kernel's store callback sees exactly that buffer, and its return value
(an errno such as ENODEV from ``unbind`` when the device is not bound to that
driver) comes back as the write's error. :class:`WritableHostFs` is the one
place that does such writes; a fake kernel subclasses it and acts on the
writes the way the real kernel does.
"""
from __future__ import annotations

import errno
import os

from platform_hostdev.host.fs import HostFs

__all__ = ["WritableHostFs", "AttributeWriteError", "writable", "read_bool_param"]


class AttributeWriteError(OSError):
    """A sysfs write the kernel refused; ``errno`` is what its store callback returned."""

    def __init__(self, err: int, host_path: str, value: str) -> None:
        super().__init__(err, os.strerror(err), host_path)
        self.host_path = host_path
        self.value = value

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.errno or 0, str(self.errno))


class WritableHostFs(HostFs):
    """A :class:`HostFs` that can also write attributes; the kernel acts on each write."""

    def write_attr(self, host_path: str, value: str) -> None:
        """Write ``value`` to the attribute with one write(2); AttributeWriteError on refusal."""
        data = value.encode()
        try:
            fd = os.open(self.path(host_path), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise AttributeWriteError(exc.errno or errno.EIO, host_path, value) from None
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise AttributeWriteError(exc.errno or errno.EIO, host_path, value) from None
        finally:
            os.close(fd)
        if written != len(data):
            raise AttributeWriteError(errno.EIO, host_path, value)


def writable(fs: HostFs) -> WritableHostFs:
    """``sysfs`` itself when it can write (e.g. a fake kernel), else a writer on the same root."""
    return fs if isinstance(fs, WritableHostFs) else WritableHostFs(fs.root)


def read_bool_param(fs: HostFs, host_path: str) -> bool | None:
    """A bool module parameter ("Y"/"N" in sysfs); None when the file does not exist."""
    text = fs.read_text(host_path)
    if text is None:
        return None
    return text.strip()[:1] in ("Y", "y", "1")
