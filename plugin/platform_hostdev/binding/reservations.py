"""Boot-time reservations: devices to bind to vfio whenever they appear, by DT path.

``nodedev-detach --persistent`` adds a device's DT path to
``/etc/platform-hostdev/reserved``; ``nodedev-reattach --persistent`` takes it
out. The DT path names the device across boots whatever the kernel calls it
(a sysfs name changes with its parent bus or a renamed node; the path is what
the kernel sends as ``OF_FULLNAME`` in every uevent of a DT device,
drivers/of/device.c of_device_uevent). At boot, the udev rule
(60-platform-hostdev.rules) and the unit (platform-hostdev-reserve.service)
apply the file (:mod:`~platform_hostdev.binding.boot`).

The file is plain text so an administrator can read it and udev's helper can
parse it fast: ``#`` comments, blank lines, one absolute DT path a line. It
is checked whenever it is read (every line a well-formed DT path, no path
twice): a malformed file is refused with its line, never half applied. It is
replaced atomically and durably (temporary file, fsync, rename, fsync of the
directory: it must survive a power cut, unlike the state under /run), with
changes serialised by a lock under /run.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.specs import check_spec
from platform_hostdev.host.statefiles import atomic_write, exclusive_lock

__all__ = ["RESERVED_FILE", "ReservationError", "Reservations", "parse_reservations"]

RESERVED_FILE = "/etc/platform-hostdev/reserved"
LOCK_FILE = "/run/platform-hostdev/reserved.lock"
HEADER = (
    "# Devices platform-hostdev binds to vfio-platform / vfio-amba at boot, by DT path.\n"
    "# Written by 'platform-hostdev nodedev-detach --persistent DEVICE'; remove a device\n"
    "# with 'platform-hostdev nodedev-reattach --persistent DEVICE'. Applied by\n"
    "# 60-platform-hostdev.rules (udev) and platform-hostdev-reserve.service.\n")


class ReservationError(HostdevError):
    """The reservation file cannot be read or holds something that is not a DT path."""

    code = "reservation-corrupt"


def parse_reservations(text: str, where: str = RESERVED_FILE) -> tuple[str, ...]:
    """The DT paths of a reservation file's text, in file order; ReservationError names the
    first bad line (not a well-formed absolute DT path, or a path given twice)."""
    paths: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        problem = None
        if not line.startswith("/"):
            problem = f"{line!r} is not a DT path (it must start with '/')"
        else:
            try:
                check_spec(line)
            except HostdevError as exc:
                problem = exc.what
        if problem is None and line in paths:
            problem = f"{line} is listed twice"
        if problem is not None:
            raise ReservationError(
                f"{where} line {number}: {problem}",
                f"fix or delete line {number} of {where} (one absolute DT path a line, "
                "e.g. /soc/ethernet@ff0e0000; '#' starts a comment), or manage it with "
                "'platform-hostdev nodedev-detach --persistent' / 'nodedev-reattach "
                "--persistent'", path=where, line=number)
        paths.append(line)
    return tuple(paths)


class Reservations:
    """The reservation file of a host (below its root)."""

    __slots__ = ("fs", "file")

    def __init__(self, fs: HostFs, file: str = RESERVED_FILE) -> None:
        self.fs = fs
        self.file = file

    def exists(self) -> bool:
        """Whether the host has a reservation file (then reservations are in use)."""
        return self.fs.path(self.file).is_file()

    def paths(self) -> tuple[str, ...]:
        """The reserved DT paths (none without a file); ReservationError if unreadable."""
        try:
            text = self.fs.path(self.file).read_text()
        except FileNotFoundError:
            return ()
        except UnicodeDecodeError:
            raise ReservationError(f"{self.file} is not UTF-8 text",
                                   f"delete {self.file} and reserve the devices again",
                                   path=self.file) from None
        except OSError as exc:
            raise ReservationError(f"cannot read {self.file}: {exc.strerror}",
                                   "run as root", code="permission-denied",
                                   path=self.file) from None
        return parse_reservations(text, self.file)

    def is_reserved(self, dt_path: str | None) -> bool:
        return dt_path is not None and dt_path in self.paths()

    @contextmanager
    def locked(self, timeout: float = 10.0) -> Iterator[None]:
        """Serialise changes of the file between platform-hostdev processes."""
        def busy() -> Exception:
            return HostdevError(f"another platform-hostdev call holds {LOCK_FILE} for more "
                                f"than {timeout:g} s", "retry when it has finished",
                                code="state-busy", path=LOCK_FILE)
        with exclusive_lock(self.fs.path(LOCK_FILE), timeout, busy):
            yield

    def add(self, dt_path: str) -> bool:
        """Reserve ``dt_path``; False if it already was. Call under :meth:`locked`."""
        check_spec(dt_path)
        current = self.paths()
        if dt_path in current:
            return False
        self._write((*current, dt_path))
        return True

    def remove(self, dt_path: str) -> bool:
        """Forget ``dt_path``; False if it was not reserved. Call under :meth:`locked`."""
        current = self.paths()
        if dt_path not in current:
            return False
        self._write(tuple(p for p in current if p != dt_path))
        return True

    def _write(self, paths: tuple[str, ...]) -> None:
        path = self.fs.path(self.file)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        text = HEADER + "".join(f"{p}\n" for p in paths)
        atomic_write(path, text.encode(), mode=0o644, durable=True)
