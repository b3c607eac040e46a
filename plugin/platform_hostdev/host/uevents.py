"""Waiting for a device's bind/unbind uevent instead of sleeping.

Use: open a watch BEFORE the write that triggers the event, then wait::

    with waiter.watch("platform", "a000000.virtio_mmio") as watch:
        write drivers_probe
        watch.wait("bind", done=lambda: driver link present, timeout=5.0)

``done`` is checked first and after every event for the device: the kernel
probes synchronously for most drivers, so the link is usually there when the
write returns and no time is spent waiting. The event matters when a driver
probes asynchronously. If neither happens before ``timeout``,
:class:`UeventTimeoutError` says which event did not come.

Which one a host gets is decided once, in
:func:`platform_hostdev.host.boundary.host_at`.

* :class:`UdevWaiter`: the live host, a pyudev netlink monitor filtered by
  subsystem (the bus); udev's rebroadcast when udevd runs, else the kernel's
  own uevents (an initramfs without udevd).
* :class:`SynchronousWaiter`: a fake kernel that acts during the write calls
  :meth:`SynchronousWaiter.notify`; nothing can arrive later, so an unmet
  wait fails at once instead of sleeping.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from platform_hostdev.errors import HostError
from platform_hostdev.host.fs import HostFs

__all__ = [
    "Watch",
    "Waiter",
    "UdevWaiter",
    "SynchronousWaiter",
    "UeventTimeoutError",
]


class UeventTimeoutError(HostError):
    """The expected bind/unbind did not happen in time."""

    code = "uevent-timeout"

    def __init__(self, bus: str, device: str, action: str, timeout: float) -> None:
        super().__init__(
            f"no {action} of {bus} device {device} within {timeout:g} s "
            f"(no '{action}' uevent and the driver link did not change)",
            "the driver may still be probing or hung: check dmesg; increase --timeout if "
            "the driver probes slowly",
            device=device, bus=bus, action=action,
        )
        self.bus = bus
        self.device = device
        self.action = action


class Watch(Protocol):
    def wait(self, action: str, done: Callable[[], bool], timeout: float) -> None: ...


class Waiter(Protocol):
    def watch(self, bus: str, device: str) -> Any:
        """A context manager yielding a :class:`Watch`, started before the triggering write."""
        ...


class _UdevWatch:
    def __init__(self, monitor: Any, bus: str, device: str,
                 clock: Callable[[], float]) -> None:
        self._monitor = monitor
        self._bus = bus
        self._device = device
        self._clock = clock
        self.seen: list[str] = []

    def wait(self, action: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = self._clock() + timeout
        while not done():
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise UeventTimeoutError(self._bus, self._device, action, timeout)
            event = self._monitor.poll(timeout=remaining)
            if event is not None and event.sys_name == self._device and event.action == action:
                self.seen.append(action)  # ours: done() confirms on the next turn


class UdevWaiter:
    """Bind/unbind uevents of the live host through pyudev (imported only when used)."""

    def __init__(self, fs: HostFs, clock: Callable[[], float]) -> None:
        self.fs = fs
        self._clock = clock

    @contextmanager
    def watch(self, bus: str, device: str) -> Iterator[_UdevWatch]:
        try:  # first needed here, before the write it waits for: a missing pyudev changes nothing
            import pyudev
        except ImportError as exc:
            raise HostError("pyudev is not installed: cannot wait for bind uevents",
                            "install python3-pyudev (apt) or pyudev (pip)",
                            code="missing-dependency") from exc
        context = pyudev.Context()
        source = "udev" if os.path.exists(self.fs.path("/run/udev/control")) else "kernel"
        monitor = pyudev.Monitor.from_netlink(context, source=source)
        monitor.filter_by(subsystem=bus)
        monitor.start()  # the socket closes when the monitor is collected
        yield _UdevWatch(monitor, bus, device, self._clock)


class _SyncWatch:
    def __init__(self, bus: str, device: str) -> None:
        self.bus = bus
        self.device = device
        self.events: list[str] = []

    def wait(self, action: str, done: Callable[[], bool], timeout: float) -> None:
        if not done():
            raise UeventTimeoutError(self.bus, self.device, action, timeout)


class SynchronousWaiter:
    """Waiter for a kernel that acts during the write (a fake kernel) and reports its events."""

    def __init__(self) -> None:
        self._watches: list[_SyncWatch] = []
        self.history: list[tuple[str, str, str]] = []

    @contextmanager
    def watch(self, bus: str, device: str) -> Iterator[_SyncWatch]:
        watch = _SyncWatch(bus, device)
        self._watches.append(watch)
        try:
            yield watch
        finally:
            self._watches.remove(watch)

    def notify(self, bus: str, device: str, action: str) -> None:
        """Called by the kernel model when it sends a uevent."""
        self.history.append((bus, device, action))
        for watch in self._watches:
            if watch.bus == bus and watch.device == device:
                watch.events.append(action)
