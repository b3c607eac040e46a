"""The host boundary: everything the package reads, runs or waits for on a host.

A :class:`Host` carries the filesystem root (a :class:`~platform_hostdev.host.fs.HostFs`,
or a :class:`~platform_hostdev.host.attributes.WritableHostFs` such as a fake
kernel), the bind/unbind uevent waiter, one runner per kind of process
(modprobe, the QEMU probe, QEMU's dumpdtb), the clocks and the pid check.
:func:`host_at` is the one place that decides between the live host and a
host below another root:

* root ``/``: pyudev uevents, modprobe, the QEMU runners, the system clocks,
  ``kill(pid, 0)`` (:func:`live_host`);
* any other root (a fake host, a chroot): the files below it, a waiter that
  only checks the result (nothing there sends uevents), no modprobe (it would
  load modules into this machine's kernel, not that host's). The QEMU probe
  and dumpdtb run this machine's emulator, the one the libvirt connection
  names; they change nothing, so they are kept.

Tests build a Host around their fake kernel (its waiter, its modprobe) and may
set ``observer``: it is called after each named step of a binding operation
or a hook phase (fault injection); production never sets it.

Light on purpose: the libvirt hook builds its Host on every domain start
(no dataclasses, no subprocess at import).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platform_hostdev.host.attributes import WritableHostFs
from platform_hostdev.host.fs import DT_BASE, HostFs
from platform_hostdev.host.processes import (
    DumpdtbRunner,
    ModprobeRunner,
    QemuProbeRunner,
    run_dumpdtb,
    run_modprobe,
    run_qemu_probe,
)
from platform_hostdev.host.uevents import SynchronousWaiter, UdevWaiter, Waiter

__all__ = [
    "Host",
    "Clock",
    "Observer",
    "live_host",
    "host_at",
    "is_live_root",
    "wall_clock",
    "monotonic_clock",
    "sleep",
    "pid_alive",
]

Clock = Callable[[], float]
"""A clock: seconds as a float."""

Observer = Callable[[str, Any], None]
"""Called with a step's name (``detach:planned``, ``prepare:DEVICE:recorded``) and its
record (a journal or ownership record, or None)."""


def wall_clock() -> float:
    """Seconds since the epoch (ownership records, journal start times)."""
    return time.time()


def monotonic_clock() -> float:
    """A clock that never goes back (timeouts, lock waits)."""
    return time.monotonic()


def sleep(seconds: float) -> None:
    """Wait (lock retries)."""
    time.sleep(seconds)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (``kill(pid, 0)``; EPERM means it does)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live_root(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is this machine's own ``/``."""
    return os.path.realpath(root) == "/"


class Host:
    """The boundaries of one host; build it with :func:`host_at` (or by hand in tests)."""

    __slots__ = ("fs", "waiter", "modprobe", "qemu_probe", "dumpdtb", "clock", "monotonic",
                 "sleep", "pid_alive", "observer", "live")

    def __init__(self, fs: HostFs, waiter: Waiter, *,
                 modprobe: ModprobeRunner | None = None,
                 qemu_probe: QemuProbeRunner | None = None,
                 dumpdtb: DumpdtbRunner | None = None,
                 clock: Clock = wall_clock,
                 monotonic: Clock = monotonic_clock,
                 sleep: Callable[[float], None] = sleep,
                 pid_alive: Callable[[int], bool] = pid_alive,
                 observer: Observer | None = None,
                 live: bool = False) -> None:
        self.fs = fs
        """The filesystem root every host path goes through."""
        self.waiter = waiter
        """Bind/unbind uevents (:mod:`platform_hostdev.host.uevents`)."""
        self.modprobe = modprobe
        """Loads kernel modules; None: none are loaded (a host below another root)."""
        self.qemu_probe = qemu_probe
        """Asks an emulator what it can do; None: emulators are not probed."""
        self.dumpdtb = dumpdtb
        """Runs QEMU for its machine DT; None: no guest DT can be generated."""
        self.clock = clock
        """Wall-clock seconds."""
        self.monotonic = monotonic
        """Monotonic seconds (timeouts)."""
        self.sleep = sleep
        """Waits a number of seconds."""
        self.pid_alive = pid_alive
        """Whether a process id exists."""
        self.observer = observer
        """Step observer for tests (fault injection); None in production."""
        self.live = live
        """Whether this is the machine's own root (pyudev enumerates its devices)."""

    @property
    def root(self) -> Path:
        """The filesystem root."""
        return self.fs.root

    def writable(self) -> WritableHostFs:
        """The root as a writer of sysfs attributes (the fake kernel itself in tests)."""
        return self.fs if isinstance(self.fs, WritableHostFs) else WritableHostFs(self.fs.root)

    def has_device_tree(self) -> bool:
        """Whether the host was booted with a device tree (/sys/firmware/devicetree/base)."""
        return self.fs.path("/" + DT_BASE).is_dir()

    def step(self, name: str, record: Any = None) -> None:
        """Report a step to the observer, if one is set."""
        if self.observer is not None:
            self.observer(name, record)

    def replace(self, **changes: Any) -> Host:
        """A copy with some boundaries replaced (e.g. ``clock=``)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        fs, waiter = fields.pop("fs"), fields.pop("waiter")
        return Host(fs, waiter, **fields)

    def __repr__(self) -> str:
        return f"Host(root={str(self.fs.root)!r}, live={self.live})"


def live_host(fs: HostFs | None = None) -> Host:
    """This machine: root ``/``, pyudev uevents, modprobe, QEMU, the system clocks."""
    fs = fs if fs is not None else HostFs("/")
    return Host(fs, UdevWaiter(fs, monotonic_clock), modprobe=run_modprobe,
                qemu_probe=run_qemu_probe, dumpdtb=run_dumpdtb, live=True)


def host_at(root: str | os.PathLike[str] = "/") -> Host:
    """The host rooted at ``root``: the live host for ``/``, else the files below it.

    The one place that tells the live host from another root (module docstring).
    """
    if is_live_root(root):
        return live_host(HostFs(root))
    return Host(HostFs(root), SynchronousWaiter(), qemu_probe=run_qemu_probe,
                dumpdtb=run_dumpdtb)
