"""Host side of the board tier: build the emulated ARM64 board, run tests/guest on each machine.

A missing prerequisite (qemu-system-aarch64, the aarch64 cross compiler, a
download) FAILS the tests that need the board, with the reason: a skip would
let a run look green without the real kernel having been exercised.

The guest suite runs once per machine of board/machines.py (virt, raspi3b)
and session: ``python3 -m pytest -p no:cacheprovider -q -rA
--junitxml=/out/guest-junit.xml <that machine's modules>`` in /repo. A
machine's modules are those of :data:`GUEST_PATHS` that
tests/support/machines.py assigns to it by name (``test_*_raspi3b.py`` for
raspi3b, every other module for virt). The junit XML comes back through the
board's /out (9p on virt, the console on raspi3b) and each guest test becomes a
host test (see test_guest_suite.py), which also checks that every expected
module reported cases and no other did. The machines boot one after the other
unless ``$PLATFORM_HOSTDEV_BOARD_PARALLEL=1`` runs them at once. The watchdog
limit is ``$PLATFORM_HOSTDEV_BOARD_TIMEOUT`` seconds per machine (default
300, boot included).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from board.build import Board, build_board
from board.errors import BoardError, GuestError
from board.host import check_host_tools
from board.machines import MACHINES
from board.run import DEFAULT_TIMEOUT, GuestResult, run_in_guest
from tests.support.machines import machine_of

REPO = Path(__file__).resolve().parents[2]
GUEST_PATHS = ("tests/guest", "tests/contract")
"""Where the guest suite's modules are, in run order (the former ``pytest tests/guest
tests/contract``)."""
DEFAULT_MACHINE = "virt"
"""The machine of a module without a ``_<machine>`` suffix (tests/support/machines.py)."""
GUEST_JUNIT = "guest-junit.xml"
_SUITES = pytest.StashKey[dict[str, "Future[GuestSuite]"]]()


@dataclass(frozen=True)
class GuestCase:
    """One guest test's outcome, from the guest's junit XML."""

    id: str  # e.g. test_board_kernel.test_fw_cfg_is_a_platform_device
    outcome: str  # passed, failed, error, skipped, xfailed
    message: str = ""
    details: str = ""
    module: str = ""  # e.g. tests.guest.test_board_kernel


@dataclass
class GuestSuite:
    """One machine's guest run in this session: its result, or why there is none."""

    machine: str = "virt"
    result: GuestResult | None = None
    cases: dict[str, GuestCase] = field(default_factory=dict)
    error: str = ""
    console_log: Path | None = None
    expected_modules: tuple[str, ...] = ()


def guest_modules(machine: str, repo: Path = REPO) -> dict[str, str]:
    """Dotted module name -> repository path of every test module ``machine`` runs."""
    modules: dict[str, str] = {}
    for directory in GUEST_PATHS:
        for path in sorted((repo / directory).glob("test_*.py")):
            if (machine_of(path) or DEFAULT_MACHINE) == machine:
                rel = path.relative_to(repo)
                modules[".".join(rel.with_suffix("").parts)] = rel.as_posix()
    return modules


def guest_command(machine: str, repo: Path = REPO) -> list[str]:
    """The guest pytest command of one machine (its modules, junit XML into /out).

    tests/guest modules come first, in name order (test_vfio_not_bound before
    test_vfio_real), then tests/contract: the order of the former ``pytest
    tests/guest tests/contract``.
    """
    paths = list(guest_modules(machine, repo).values())
    if not paths:
        raise ValueError(f"no guest test module names the {machine} machine")
    return ["python3", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
            f"--junitxml=/out/{GUEST_JUNIT}", *paths]


def board_timeout() -> float:
    """The watchdog limit for the guest suite, from $PLATFORM_HOSTDEV_BOARD_TIMEOUT."""
    return float(os.environ.get("PLATFORM_HOSTDEV_BOARD_TIMEOUT", DEFAULT_TIMEOUT))


def build_or_explain(machine: str = "virt") -> Board:
    """The built board; BoardError names what is missing (tool, download, build step)."""
    check_host_tools()
    return build_board(machine=machine)


def parse_junit(path: Path) -> dict[str, GuestCase]:
    """Guest cases by id (junit classname without ``tests.guest.``, then the test name)."""
    cases: dict[str, GuestCase] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        raw = case.get("classname", "")
        classname = raw.removeprefix("tests.guest.")
        case_id = f"{classname}.{case.get('name', '')}".strip(".")
        module = raw or case.get("name", "")  # a collection error names the module
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
            cases[case_id] = GuestCase(case_id, outcome, message, details, module)
    return cases


def case_module(case: GuestCase, expected: tuple[str, ...]) -> str | None:
    """The expected module a case belongs to (by dotted prefix), None if none."""
    for module in expected:
        if case.module == module or case.module.startswith(module + "."):
            return module
    return None


def run_guest_suite(board: Board, timeout: float) -> GuestSuite:
    """Run the guest modules of ``board.machine`` once and collect every case's outcome."""
    machine = board.machine.name
    expected = tuple(guest_modules(machine))
    out = Path(tempfile.mkdtemp(prefix=f"board-guest-suite-{machine}."))
    try:
        result = run_in_guest(guest_command(machine), timeout, board=board, out_dir=out)
        junit = out / GUEST_JUNIT
        if not junit.is_file():
            tail = "\n".join(result.output.splitlines()[-30:])
            return GuestSuite(machine, result, error=f"the guest pytest (exit "
                              f"{result.exit_code}) wrote no junit XML; last console "
                              f"lines:\n{tail}", expected_modules=expected)
        return GuestSuite(machine, result, cases=parse_junit(junit), expected_modules=expected)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _suite_or_error(machine: str, timeout: float) -> GuestSuite:
    """Build (or find cached) one machine's board and run its suite; a BoardError becomes
    the suite's error (console kept).

    The build comes right before the run, not at session start: another checkout
    with other board code may prune this one's cache entries while an earlier
    machine's suite runs (a warm build only checks keys).
    """
    console = ""
    try:
        suite = run_guest_suite(build_or_explain(machine), timeout)
        if suite.result is not None and (suite.error or suite.result.exit_code != 0):
            console = suite.result.output
    except BoardError as exc:
        suite = GuestSuite(machine, error=f"the emulated {machine} board did not run its guest "
                                          f"suite (watchdog {timeout:.0f} s, "
                                          f"$PLATFORM_HOSTDEV_BOARD_TIMEOUT): {exc}",
                           expected_modules=tuple(guest_modules(machine)))
        console = exc.output if isinstance(exc, GuestError) else ""
    if console:
        fd, name = tempfile.mkstemp(prefix=f"platform-hostdev-guest-console-{machine}.",
                                    suffix=".log")
        with os.fdopen(fd, "w") as log:
            log.write(console)
        suite.console_log = Path(name)
    return suite


def _start_suites(config: pytest.Config) -> dict[str, Future[GuestSuite]]:
    """Run every machine's guest suite, in turn or at once ($PLATFORM_HOSTDEV_BOARD_PARALLEL=1).

    At once, the boards are built first, one after the other (they share cache
    entries and downloads), so that the runs' own builds are warm checks.
    """
    timeout = board_timeout()
    parallel = os.environ.get("PLATFORM_HOSTDEV_BOARD_PARALLEL", "0") == "1"
    if parallel:
        for machine in MACHINES:
            try:
                build_or_explain(machine)
            except BoardError:
                pass  # the run's own build reports it
    pool = ThreadPoolExecutor(max_workers=len(MACHINES) if parallel else 1,
                              thread_name_prefix="board-guest")
    futures = {machine: pool.submit(_suite_or_error, machine, timeout) for machine in MACHINES}
    pool.shutdown(wait=False)
    return futures


def guest_suite(config: pytest.Config, machine: str) -> GuestSuite:
    """One machine's guest run (every machine is started on first use, then kept)."""
    if _SUITES not in config.stash:
        config.stash[_SUITES] = _start_suites(config)
    return config.stash[_SUITES][machine].result()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per machine whose guest suite ran: boot and run times, case count."""
    futures = terminalreporter.config.stash.get(_SUITES, None)
    if not futures:
        return
    terminalreporter.section("emulated board")
    for machine, future in futures.items():
        if not future.done():
            continue
        suite = future.result()
        if suite.result is None:
            terminalreporter.write_line(f"{machine}: no run ({suite.error.splitlines()[0]})")
            continue
        terminalreporter.write_line(
            f"{machine}: boot to /init {suite.result.boot_time:.1f} s, guest suite done at "
            f"{suite.result.duration:.1f} s, {len(suite.cases)} cases from "
            f"{len(suite.expected_modules)} modules, exit {suite.result.exit_code}")
