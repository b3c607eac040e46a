"""Suite-wide set-up: import paths, the --update-golden option, the guest-tier guard.

The repository root (for ``tests.support`` and ``board``) and ``plugin/`` (for
``platform_hostdev`` without installing it) go first on sys.path.
tests/guest runs only INSIDE the emulated board (board/guest_init.sh exports
PLATFORM_HOSTDEV_BOARD=1); on the host it is not collected at all: tests/board
runs it in the guest and reports its result.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for _entry in (REPO / "plugin", REPO):
    if str(_entry) not in sys.path:
        sys.path.insert(0, str(_entry))

INSIDE_BOARD = os.environ.get("PLATFORM_HOSTDEV_BOARD") == "1"
collect_ignore_glob = [] if INSIDE_BOARD else ["guest/*", "guest"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of "
                          "comparing against it")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to regenerate golden files."""
    return bool(request.config.getoption("--update-golden"))


def _prerequisite(getter: Callable[[], Path]) -> Path:
    """Run a corpus getter; a missing prerequisite FAILS the test with its message."""
    from tests.support.corpus import CorpusUnavailable

    try:
        return getter()
    except CorpusUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kernel_dtbs() -> Path:
    """The DTB directory of Debian's arm64 6.12 kernel package (fetched once, cached)."""
    from tests.support.corpus import kernel_dtb_dir

    return _prerequisite(kernel_dtb_dir)


@pytest.fixture(scope="session")
def raspi3b_dtb() -> Path:
    """Debian's broadcom/bcm2837-rpi-3-b.dtb from the DTB corpus (the fake raspi3b host)."""
    from tests.support.corpus import board_dtb
    from tests.support.raspi import RASPI3B_DTB

    return _prerequisite(lambda: board_dtb(RASPI3B_DTB))


@pytest.fixture(scope="session")
def virt_dtb() -> Path:
    """QEMU's virt machine DT (qemu-system-aarch64 -M virt,dumpdtb=...), cached."""
    from tests.support.corpus import qemu_virt_dtb

    return _prerequisite(qemu_virt_dtb)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.support.corpus import CORPUS_STATS

    stats = terminalreporter.config.stash.get(CORPUS_STATS, None)
    if stats is not None and stats.dtbs:
        terminalreporter.section("DTB corpus")
        for line in stats.summary():
            terminalreporter.write_line(line)
