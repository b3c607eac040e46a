"""Guest tier: binding against the real kernel where only the board can tell.

* a detach really killed (SIGKILL) between steps, then ``recover``;
* the kernel's own bind/unbind uevents reaching :class:`UdevWaiter`
  (source "kernel": the initramfs runs no udevd).

Run inside the emulated board:
``python3 -m board run -- python3 -m pytest -p no:cacheprovider tests/guest``.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import device_state, reattach, recover
from platform_hostdev.host.attributes import WritableHostFs
from platform_hostdev.host.boundary import live_host, monotonic_clock
from platform_hostdev.host.inventory import load_inventory
from platform_hostdev.host.uevents import UdevWaiter

PL061 = "9030000.pl061"
_KILLER = textwrap.dedent("""
    import os, signal, sys
    from platform_hostdev.binding.operations import detach
    from platform_hostdev.host.boundary import live_host
    from platform_hostdev.host.inventory import load_inventory

    step = sys.argv[1]
    device = load_inventory("/").resolve(sys.argv[2])

    def hook(name, record):
        if record.step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    live = live_host()
    live.observer = hook  # the live host's boundaries, with a step observer that kills
    detach(live, device)
    sys.exit(3)  # not reached when the step happens
""")


@pytest.fixture
def live() -> WritableHostFs:
    fs = WritableHostFs("/")
    assert device_state(fs, "amba", PL061).driver == "pl061_gpio", "board not pristine"
    assert Journal(fs).devices() == []
    return fs


@pytest.mark.parametrize("step", ["override-written", "unbound", "probed"])
def test_sigkill_between_steps_then_recover(live: WritableHostFs, step: str) -> None:
    fs = live
    run = subprocess.run([sys.executable, "-c", _KILLER, step, PL061],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr
    record = Journal(fs).read(PL061)
    assert record is not None and record.step == step
    expected_driver = {"override-written": "pl061_gpio", "unbound": None,
                       "probed": "vfio-amba"}[step]
    assert device_state(fs, "amba", PL061).driver == expected_driver

    actions = recover(live_host(fs))
    assert [(a.device, a.action) for a in actions] == [(PL061, "restored")]
    state = device_state(fs, "amba", PL061)
    assert (state.driver, state.override) == ("pl061_gpio", None)
    assert Journal(fs).devices() == []
    assert recover(live_host(fs)) == []


def test_kernel_uevents_reach_the_waiter(live: WritableHostFs) -> None:
    fs = live
    base = f"/sys/bus/amba/devices/{PL061}"
    with UdevWaiter(fs, monotonic_clock).watch("amba", PL061) as watch:
        fs.write_attr(base + "/driver_override", "vfio-amba\n")
        fs.write_attr("/sys/bus/amba/drivers/pl061_gpio/unbind", PL061)
        watch.wait("unbind", lambda: "unbind" in watch.seen, timeout=10)
        fs.write_attr("/sys/bus/amba/drivers_probe", PL061)
        watch.wait("bind", lambda: "bind" in watch.seen, timeout=10)
    assert device_state(fs, "amba", PL061).driver == "vfio-amba"
    # bound by hand, no journal: reattach clears the override and takes whatever binds
    device = load_inventory("/").resolve(PL061)
    result = reattach(live_host(fs), device)
    assert (result.driver, result.original_known) == ("pl061_gpio", False)
    assert device_state(fs, "amba", PL061).override is None
