"""Host side of the board tier: build the emulated ARM64 board, run tests/guest in it once.

A missing prerequisite (qemu-system-aarch64, the aarch64 cross compiler, a
download) FAILS the tests that need the board, with the reason: a skip would
let a run look green without the real kernel having been exercised.

The guest suite runs once per session (``python3 -m pytest -p no:cacheprovider
-q -rA --junitxml=/out/guest-junit.xml tests/guest`` in /repo); its junit XML
comes back through the board's writable share and each guest test becomes a
host test (see test_guest_suite.py). The watchdog limit is
``$PLATFORM_HOSTDEV_BOARD_TIMEOUT`` seconds (default 300, boot included).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from board.build import Board, build_board
from board.errors import BoardError, GuestError
from board.host import check_host_tools
from board.run import DEFAULT_TIMEOUT, GuestResult, run_in_guest

GUEST_JUNIT = "guest-junit.xml"
GUEST_COMMAND = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                 f"--junitxml=/out/{GUEST_JUNIT}", "tests/guest", "tests/contract"]
_SUITE = pytest.StashKey["GuestSuite"]()


@dataclass(frozen=True)
class GuestCase:
    """One guest test's outcome, from the guest's junit XML."""

    id: str  # e.g. test_board_kernel.test_fw_cfg_is_a_platform_device
    outcome: str  # passed, failed, error, skipped, xfailed
    message: str = ""
    details: str = ""


@dataclass
class GuestSuite:
    """The session's single guest run: its result, or why there is none."""

    result: GuestResult | None = None
    cases: dict[str, GuestCase] = field(default_factory=dict)
    error: str = ""
    console_log: Path | None = None


def board_timeout() -> float:
    """The watchdog limit for the guest suite, from $PLATFORM_HOSTDEV_BOARD_TIMEOUT."""
    return float(os.environ.get("PLATFORM_HOSTDEV_BOARD_TIMEOUT", DEFAULT_TIMEOUT))


def build_or_explain() -> Board:
    """The built board; BoardError names what is missing (tool, download, build step)."""
    check_host_tools()
    return build_board()


def parse_junit(path: Path) -> dict[str, GuestCase]:
    """Guest cases by id (junit classname without ``tests.guest.``, then the test name)."""
    cases: dict[str, GuestCase] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "").removeprefix("tests.guest.")
        case_id = f"{classname}.{case.get('name', '')}".strip(".")
        outcome, message, details = "passed", "", ""
        for child in case:
            tag = child.tag
            if tag in ("failure", "error", "skipped"):
                message = child.get("message", "")
                details = (child.text or "").strip()
                if tag == "skipped":
                    outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
                else:
                    outcome = "failed" if tag == "failure" else "error"
                if tag != "skipped":
                    break
        earlier = cases.get(case_id)
        if earlier is None or earlier.outcome not in ("failed", "error"):
            cases[case_id] = GuestCase(case_id, outcome, message, details)
    return cases


def run_guest_suite(board: Board, timeout: float) -> GuestSuite:
    """Run tests/guest in the board once and collect every case's outcome."""
    out = Path(tempfile.mkdtemp(prefix="board-guest-suite."))
    try:
        result = run_in_guest(GUEST_COMMAND, timeout, board=board, out_dir=out)
        junit = out / GUEST_JUNIT
        if not junit.is_file():
            tail = "\n".join(result.output.splitlines()[-30:])
            return GuestSuite(result, error=f"the guest pytest (exit {result.exit_code}) wrote "
                                            f"no junit XML; last console lines:\n{tail}")
        return GuestSuite(result, cases=parse_junit(junit))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def guest_suite(config: pytest.Config) -> GuestSuite:
    """The session's guest run (built and booted on first use, then cached in the stash)."""
    if _SUITE not in config.stash:
        console = ""
        timeout = board_timeout()
        try:
            suite = run_guest_suite(build_or_explain(), timeout)
            if suite.result is not None and (suite.error or suite.result.exit_code != 0):
                console = suite.result.output
        except BoardError as exc:
            suite = GuestSuite(error=f"the emulated board did not run tests/guest (watchdog "
                                     f"{timeout:.0f} s, $PLATFORM_HOSTDEV_BOARD_TIMEOUT): {exc}")
            console = exc.output if isinstance(exc, GuestError) else ""
        if console:
            fd, name = tempfile.mkstemp(prefix="platform-hostdev-guest-console.", suffix=".log")
            with os.fdopen(fd, "w") as log:
                log.write(console)
            suite.console_log = Path(name)
        config.stash[_SUITE] = suite
    return config.stash[_SUITE]


@pytest.fixture(scope="session")
def board() -> Board:
    """The built emulated board (kernel, vfio modules, initramfs); fails if it cannot be."""
    try:
        return build_or_explain()
    except BoardError as exc:
        reason = str(exc)
    pytest.fail(f"the emulated ARM64 board cannot be built: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def guest_run(request: pytest.FixtureRequest, board: Board) -> GuestSuite:
    """The session's single run of tests/guest inside the board."""
    return guest_suite(request.config)
