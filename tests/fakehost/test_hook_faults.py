"""Crash safety and concurrency of the hook, on a fake host with the fake kernel.

A kill is simulated by raising a BaseException that no rollback code catches,
at the N-th write of any kind (sysfs attribute, journal record, ownership
record, /dev/vfio chown), for every N until the phase completes. After each
kill, the next hook call (libvirt's release after a failed start, or a later
recover) must leave every device either owned by a running domain or back on
its original driver with driver_override cleared, and no record behind.
"""
from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.hook.qemu import HookEnv, dispatch, release_stale

from tests.fakehost.test_hook import make_kernel, mark_running, run_hook
from tests.support.domains import libvirt_domain, with_guest_dt
from tests.support.fakekernel import FakeKernel

DEVICES = ["a000000.virtio_mmio", "a000200.virtio_mmio"]


class Killed(BaseException):
    """The process died here: nothing after this point runs, no rollback."""


@contextmanager
def killer(monkeypatch: pytest.MonkeyPatch, at: int) -> Iterator[list[str]]:
    """Raise Killed at the ``at``-th write; yields the list of writes seen."""
    seen: list[str] = []

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            seen.append(f"{getattr(owner, '__name__', owner)}.{name}")
            if len(seen) == at:
                raise Killed(seen[-1])
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)

    for owner, name in ((FakeKernel, "write_attr"), (Journal, "write"), (Journal, "remove"),
                        (Owners, "write"), (Owners, "remove"), (os, "chown")):
        wrap(owner, name)
    yield seen
    monkeypatch.undo()


def consistent(kernel: FakeKernel, running: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Problems: devices neither owned by a running domain nor back where they were."""
    problems = []
    owners = {r.device: r for r in Owners(kernel).all()}
    for name in DEVICES:
        state = device_state(kernel, "platform", name)
        record = owners.get(name)
        if record is not None and record.domain in running:
            if state.driver != "vfio-platform":
                problems.append(f"{name} owned by running {record.domain} but on {state.driver}")
            continue
        if record is not None:
            problems.append(f"{name} still recorded for {record.domain}")
        if state.driver is not None or state.override is not None:
            problems.append(f"{name} left on {state.driver} (override {state.override})")
    journal = Journal(kernel)
    for name in journal.devices():
        record = journal.read(name)
        owner = owners.get(name)
        in_use = owner is not None and owner.domain in running
        if not (in_use and record is not None and record.complete_detach):
            problems.append(f"journal left for {name}: {record}")
    return problems


def _phase(kernel: FakeKernel, op: str, xml: bytes) -> int:
    return dispatch(["vm1", op, "begin" if op == "prepare" else "end", "-"], xml,
                    HookEnv(kernel.as_host(), err=io.StringIO()))


def _recover(kernel: FakeKernel) -> None:
    """'platform-hostdev recover' run after the start grace period."""
    env = HookEnv(kernel.as_host(), err=io.StringIO())
    owners = Owners(kernel, clock=lambda: 1e12)
    with owners.locked():
        release_stale(env, owners, Journal(kernel))


def _kill_points(tmp_path: Path, dtb: Path, monkeypatch: pytest.MonkeyPatch,
                 scenario: Callable[[FakeKernel, bytes], None], op: str,
                 then: Callable[[FakeKernel, bytes], None]) -> int:
    """Kill ``op`` at every write in turn; return how many kill points there were."""
    at = 1
    while True:
        kernel = make_kernel(tmp_path / f"{op}-{at}", dtb)
        xml = with_guest_dt(kernel.root, libvirt_domain("vm1", DEVICES))  # as synced
        scenario(kernel, xml)
        with killer(monkeypatch, at) as seen:
            try:
                _phase(kernel, op, xml)
            except Killed:
                pass
        if len(seen) < at:  # the phase finished before the at-th write: all points done
            return at - 1
        then(kernel, xml)
        assert consistent(kernel) == [], f"killed at write {at} ({seen[-1]})"
        at += 1


def _nothing(kernel: FakeKernel, xml: bytes) -> None:
    pass


def _prepared(kernel: FakeKernel, xml: bytes) -> None:
    assert _phase(kernel, "prepare", xml) == 0


def _release_again(kernel: FakeKernel, xml: bytes) -> None:
    _phase(kernel, "release", xml)


def _recover_later(kernel: FakeKernel, xml: bytes) -> None:
    _recover(kernel)


@pytest.mark.parametrize("then", [_release_again, _recover_later], ids=["release", "recover"])
def test_killed_prepare_leaves_nothing_stranded(tmp_path: Path, virt_dtb: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                then: Callable[[FakeKernel, bytes], None]) -> None:
    points = _kill_points(tmp_path, virt_dtb, monkeypatch, _nothing, "prepare", then)
    assert points >= 12  # 2 devices x (records, override, probe, journal steps, chown)


@pytest.mark.parametrize("then", [_release_again, _recover_later], ids=["release", "recover"])
def test_killed_release_leaves_nothing_stranded(tmp_path: Path, virt_dtb: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                then: Callable[[FakeKernel, bytes], None]) -> None:
    points = _kill_points(tmp_path, virt_dtb, monkeypatch, _prepared, "release", then)
    assert points >= 8


def _race(kernel: FakeKernel, domain: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    xml = libvirt_domain(domain, [DEVICES[0]])
    results.put((domain, run_hook(kernel, domain, "prepare", xml)[0]))


def test_domains_racing_for_one_device_get_exactly_one_owner(tmp_path: Path,
                                                             virt_dtb: Path) -> None:
    kernel = make_kernel(tmp_path / "race", virt_dtb)
    ctx = multiprocessing.get_context("fork")
    for round_ in range(8):
        domains = [f"r{round_}-vm{i}" for i in range(4)]
        barrier = ctx.Barrier(len(domains))
        results = ctx.Queue()
        procs = [ctx.Process(target=_race, args=(kernel, d, barrier, results)) for d in domains]
        for p in procs:
            p.start()
        outcome = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        winners = [d for d, code in outcome.items() if code == 0]
        assert len(winners) == 1, outcome
        owner = Owners(kernel).read(DEVICES[0])
        assert owner is not None and owner.domain == winners[0]
        assert device_state(kernel, "platform", DEVICES[0]).driver == "vfio-platform"
        assert run_hook(kernel, winners[0], "release", libvirt_domain(winners[0],
                                                                      [DEVICES[0]]))[0] == 0
        assert consistent(kernel) == []


def test_running_owner_survives_recover(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make_kernel(tmp_path / "run", virt_dtb)
    xml = with_guest_dt(kernel.root, libvirt_domain("vm1", DEVICES))
    assert _phase(kernel, "prepare", xml) == 0
    mark_running(kernel, "vm1")
    _recover(kernel)
    assert consistent(kernel, running={"vm1"}) == []
    assert len(Owners(kernel).all()) == 2


# ------------------------------------------------------------------ OSError faults
# The same walk with OSErrors instead of kills (tests/support/faults.py): the phase
# must end in a clean exit code (no exception escapes dispatch, no traceback text),
# another running domain's device is never touched, and once the cause is gone one
# recover leaves every device owned by a running domain or back where it was.

OTHER = "a000400.virtio_mmio"  # vm2's, running all along


def _with_running_neighbour(kernel: FakeKernel) -> None:
    xml = with_guest_dt(kernel.root, libvirt_domain("vm2", [OTHER]))
    assert dispatch(["vm2", "prepare", "begin", "-"], xml,
                    HookEnv(kernel.as_host(), err=io.StringIO())) == 0
    mark_running(kernel, "vm2", pid=5151, start=99)
    assert dispatch(["vm2", "started", "begin", "-"], xml,
                    HookEnv(kernel.as_host(), err=io.StringIO())) == 0


def _neighbour_intact(kernel: FakeKernel) -> list[str]:
    record = Owners(kernel).read(OTHER)
    state = device_state(kernel, "platform", OTHER)
    node = kernel.path(f"/dev/vfio/{state.iommu_group}")
    if record is None or record.domain != "vm2" or state.driver != "vfio-platform" \
            or not node.exists() or node.stat().st_uid == 0:
        return [f"vm2's {OTHER} was touched: {record}, {state}"]
    return []


def _fault_points(tmp_path: Path, dtb: Path, monkeypatch: pytest.MonkeyPatch, op: str,
                  persistent: bool) -> int:
    from tests.support.faults import failing

    at = 1
    while True:
        kernel = make_kernel(tmp_path / f"{op}-{persistent}-{at}", dtb)
        _with_running_neighbour(kernel)
        xml = with_guest_dt(kernel.root, libvirt_domain("vm1", DEVICES))
        if op == "release":
            _prepared(kernel, xml)
        err = io.StringIO()
        with failing(monkeypatch, at, persistent, sysfs=FakeKernel) as seen:
            code = dispatch(["vm1", op, "begin" if op == "prepare" else "end", "-"], xml,
                            HookEnv(kernel.as_host(), err=err))
        if len(seen) < at:
            return at - 1
        where = f"{'from' if persistent else 'at'} write {at} ({seen[at - 1]})"
        assert code in (0, 1), where
        assert "Traceback" not in err.getvalue(), where
        if code == 1:
            assert "refused:" in err.getvalue() and "hint:" in err.getvalue(), where
        if op == "prepare" and code == 1 and not persistent:
            # a one-off fault: the rollback itself worked, nothing waits for recover
            assert consistent(kernel, running={"vm2"}) == [], where
        assert _neighbour_intact(kernel) == [], where
        _recover(kernel)
        assert consistent(kernel, running={"vm2"}) == [], where
        assert _neighbour_intact(kernel) == [], where
        at += 1


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "from-then-on"])
@pytest.mark.parametrize("op", ["prepare", "release"])
def test_an_oserror_at_any_write_leaves_nothing_stranded(tmp_path: Path, virt_dtb: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         op: str, persistent: bool) -> None:
    points = _fault_points(tmp_path, virt_dtb, monkeypatch, op, persistent)
    assert points >= (12 if op == "prepare" else 8)
