"""Guest tier: OSErrors injected at every write of the hook, on the real kernel.

The walk of tests/fakehost/test_hook_faults.py (tests/support/faults.py: a
sysfs write refused with EIO, a record write with ENOSPC, a record removal
with EROFS, a /dev node's chown or chmod with EPERM, once or from then on)
run in-process against the board's real vfio-platform: after each, the hook
has returned a clean exit code and one ``recover`` past the start grace puts
the board back as it booted. Run inside the board::

    python3 -m board run -- python3 -m pytest -q -p no:cacheprovider \
        tests/guest/test_hook_faults_guest.py
"""
from __future__ import annotations

import io
import time

import pytest
from platform_hostdev.binding.ownership import START_GRACE
from platform_hostdev.hook.giveback import recover_host
from platform_hostdev.hook.qemu import HookEnv, dispatch
from platform_hostdev.host.boundary import host_at

from tests.guest import test_hook_guest as guest
from tests.guest.test_hook_guest import VIRTIO, Used, _pristine, domain_xml
from tests.support.faults import failing

board = guest.board      # the fixtures: the rendered hook's setting, a pristine board after
domains = guest.domains


def _call(op: str, xml: bytes, err: io.StringIO) -> int:
    env = HookEnv(host_at("/"), err=err, allow_noiommu=True)
    return dispatch(["vm1", op, "begin" if op == "prepare" else "end", "-"], xml, env)


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "from-then-on"])
@pytest.mark.parametrize("op", ["prepare", "release"])
def test_an_oserror_at_any_write_leaves_the_real_board_as_it_was(
        board: object, domains: Used, monkeypatch: pytest.MonkeyPatch, op: str,
        persistent: bool) -> None:
    xml = domain_xml("vm1", [VIRTIO], domains)
    at, outcomes = 1, []
    while True:
        if op == "release":
            assert _call("prepare", xml, io.StringIO()) == 0
        err = io.StringIO()
        with failing(monkeypatch, at, persistent) as seen:
            code = _call(op, xml, err)
        if len(seen) < at:  # the phase completed before the at-th write: all points done
            assert code == 0, err.getvalue()
            if op == "prepare":
                assert _call("release", xml, io.StringIO()) == 0
            break
        where = f"{'from' if persistent else 'at'} write {at} ({seen[at - 1]})"
        assert code in (0, 1) and "Traceback" not in err.getvalue(), where
        done = recover_host(host_at("/").replace(clock=lambda: time.time() + START_GRACE + 1),
                            err=io.StringIO())
        assert done.failed == [], where
        assert _pristine() == [], where
        outcomes.append(f"{where}: exit {code}")
        at += 1
    assert at - 1 >= (6 if op == "prepare" else 4), outcomes
    print("; ".join(outcomes))
