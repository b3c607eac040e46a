"""Waiting for bind/unbind uevents: pyudev mocked (the live host), and the synchronous waiter."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from platform_hostdev.host.boundary import monotonic_clock
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.uevents import SynchronousWaiter, UdevWaiter, UeventTimeoutError
from pytest_mock import MockerFixture


def _event(name: str, action: str) -> Any:
    return SimpleNamespace(sys_name=name, action=action)


def _fake_pyudev(mocker: MockerFixture, events: list[Any]) -> Any:
    pyudev = mocker.MagicMock(name="pyudev")
    monitor = pyudev.Monitor.from_netlink.return_value
    monitor.poll.side_effect = lambda timeout: events.pop(0) if events else None
    mocker.patch.dict(sys.modules, {"pyudev": pyudev})
    return pyudev


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("udevd, source", [(False, "kernel"), (True, "udev")])
def test_monitor_started_before_the_write(tmp_path: Path, mocker: MockerFixture,
                                          udevd: bool, source: str) -> None:
    if udevd:
        (tmp_path / "run/udev").mkdir(parents=True)
        (tmp_path / "run/udev/control").touch()
    pyudev = _fake_pyudev(mocker, [])
    monitor = pyudev.Monitor.from_netlink.return_value
    with UdevWaiter(HostFs(tmp_path), monotonic_clock).watch("amba", "9030000.pl061"):
        # inside the block is where the caller writes: the monitor must already listen
        assert monitor.start.called
    assert pyudev.Monitor.from_netlink.call_args.kwargs == {"source": source}
    monitor.filter_by.assert_called_once_with(subsystem="amba")


def test_done_already_needs_no_event(tmp_path: Path, mocker: MockerFixture) -> None:
    pyudev = _fake_pyudev(mocker, [])
    waiter = UdevWaiter(HostFs(tmp_path), monotonic_clock)
    with waiter.watch("platform", "a000000.virtio_mmio") as watch:
        watch.wait("bind", lambda: True, timeout=5)
    pyudev.Monitor.from_netlink.return_value.poll.assert_not_called()


def test_waits_for_own_bind_event(tmp_path: Path, mocker: MockerFixture) -> None:
    bound = {"now": False}
    events = [_event("a000200.virtio_mmio", "bind"), _event("a000000.virtio_mmio", "unbind"),
              _event("a000000.virtio_mmio", "bind")]
    pyudev = _fake_pyudev(mocker, events)
    poll = pyudev.Monitor.from_netlink.return_value.poll

    def done() -> bool:
        # the link appears with the bind event of OUR device, not before
        if poll.call_count == 3:
            bound["now"] = True
        return bound["now"]

    waiter = UdevWaiter(HostFs(tmp_path), monotonic_clock)
    with waiter.watch("platform", "a000000.virtio_mmio") as watch:
        watch.wait("bind", done, timeout=5)
        assert watch.seen == ["bind"]
    assert poll.call_count == 3


def test_timeout_is_a_clear_error(tmp_path: Path, mocker: MockerFixture) -> None:
    clock = Clock()
    pyudev = _fake_pyudev(mocker, [])
    poll = pyudev.Monitor.from_netlink.return_value.poll

    def slow_poll(timeout: float) -> None:
        clock.now += timeout  # nothing arrives: the whole remaining time passes
        return None

    poll.side_effect = slow_poll
    waiter = UdevWaiter(HostFs(tmp_path), clock=clock)
    with waiter.watch("amba", "9030000.pl061") as watch:
        with pytest.raises(UeventTimeoutError) as caught:
            watch.wait("bind", lambda: False, timeout=2.5)
    assert "no bind of amba device 9030000.pl061 within 2.5 s" in caught.value.what
    assert "dmesg" in caught.value.fix
    assert poll.call_args_list[0].kwargs == {"timeout": 2.5}


def test_synchronous_waiter_never_sleeps() -> None:
    waiter = SynchronousWaiter()
    with waiter.watch("amba", "9030000.pl061") as watch:
        waiter.notify("amba", "9030000.pl061", "unbind")
        waiter.notify("amba", "9010000.pl031", "bind")
        assert watch.events == ["unbind"]
        watch.wait("unbind", lambda: True, timeout=5)
        with pytest.raises(UeventTimeoutError):
            watch.wait("bind", lambda: False, timeout=5)
    assert waiter.history[-1] == ("amba", "9010000.pl031", "bind")
