"""The guest tier, reported on the host: one host test per guest test and machine.

Each machine's guest suite runs once per session inside the emulated board
(see conftest.py): virt runs the virt-marked tests/guest modules and
tests/contract, raspi3b its own. Collection needs the guest's test ids, so
the first collection of this module builds and boots the boards;
``--collect-only`` and a marker expression that deselects ``board`` do not. If
a board cannot be built, or its guest hangs or crashes, a single
``<machine>/guest-suite`` case fails with the reason.
"""

from __future__ import annotations

import pytest

from board.machines import MACHINES
from tests.board.conftest import GuestSuite, case_module, guest_suite

pytestmark = pytest.mark.board

_NOT_RUN = "guest-suite"


def _board_deselected(config: pytest.Config) -> bool:
    """True when this session will not run board tests (no reason to boot)."""
    if config.option.collectonly:
        return True
    markexpr = config.option.markexpr
    if not markexpr:
        return False
    try:
        from _pytest.mark.expression import Expression
    except ImportError:  # pytest moved its private expression parser: boot to be safe
        return False

    def is_board(name: str, /, **_: object) -> bool:
        return name == "board"

    return not Expression.compile(markexpr).evaluate(is_board)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "guest_case_id" in metafunc.fixturenames:
        params = []
        for machine in MACHINES:
            if _board_deselected(metafunc.config):
                ids = [_NOT_RUN]
            else:
                ids = sorted(guest_suite(metafunc.config, machine).cases) or [_NOT_RUN]
            params += [pytest.param(machine, case_id, id=f"{machine}/{case_id}")
                       for case_id in ids]
        metafunc.parametrize(("machine", "guest_case_id"), params)
    elif "machine" in metafunc.fixturenames:
        metafunc.parametrize("machine", list(MACHINES))


@pytest.fixture
def guest_run(request: pytest.FixtureRequest, machine: str) -> GuestSuite:
    """This session's run of ``machine``'s guest suite."""
    return guest_suite(request.config, machine)


def _context(suite: GuestSuite) -> str:
    log = f"; whole console in {suite.console_log}" if suite.console_log else ""
    if suite.result is None:
        return f"\n({suite.machine}{log})"
    return (f"\n({suite.machine}: guest exit code {suite.result.exit_code}, boot "
            f"{suite.result.boot_time:.1f} s, run {suite.result.duration:.1f} s{log})")


def test_guest_suite_ran_clean(guest_run: GuestSuite) -> None:
    """The guest pytest ended (no hang, no crash), ran every expected module, and exited 0."""
    if guest_run.error:
        pytest.fail(guest_run.error + _context(guest_run), pytrace=False)
    assert guest_run.result is not None
    if not guest_run.cases:
        pytest.fail("the guest pytest collected no tests" + _context(guest_run), pytrace=False)
    expected = guest_run.expected_modules
    ran = {case_module(case, expected) for case in guest_run.cases.values()}
    stray = sorted(case.id for case in guest_run.cases.values()
                   if case_module(case, expected) is None)
    missing = sorted(set(expected) - ran)
    if missing or stray:
        pytest.fail(f"the {guest_run.machine} guest suite should run exactly "
                    f"{', '.join(expected)}; no cases from: {', '.join(missing) or 'none'}; "
                    f"cases from elsewhere: {', '.join(stray) or 'none'}" + _context(guest_run),
                    pytrace=False)
    if guest_run.result.exit_code != 0:
        bad = [c.id for c in guest_run.cases.values() if c.outcome in ("failed", "error")]
        tail = "\n".join(guest_run.result.output.splitlines()[-20:])
        pytest.fail(f"the guest pytest exited {guest_run.result.exit_code}; failing: "
                    f"{', '.join(bad) or 'none reported'}\n{tail}" + _context(guest_run),
                    pytrace=False)


def test_guest(guest_run: GuestSuite, guest_case_id: str) -> None:
    """Mirror one guest test's outcome."""
    case = guest_run.cases.get(guest_case_id)
    if case is None:
        pytest.fail((guest_run.error or "the guest suite reported no tests")
                    + _context(guest_run), pytrace=False)
    if case.outcome == "skipped":  # no tier skips silently, the guest's neither
        pytest.fail(f"skipped in the guest ({case.message}): a guest test must pass or "
                    "fail" + _context(guest_run), pytrace=False)
    if case.outcome == "xfailed":
        pytest.xfail(f"xfailed in the guest: {case.message}")
    if case.outcome != "passed":
        pytest.fail(f"{case.outcome} in the guest: {case.message}\n{case.details}"
                    + _context(guest_run), pytrace=False)
