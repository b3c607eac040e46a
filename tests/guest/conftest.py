"""Guest-side tests: they run only inside the emulated ARM64 board (see board/).

The board's /init sets PLATFORM_HOSTDEV_BOARD=1 and writes
/run/platform-hostdev-board before it runs the command. Anywhere else this
conftest stops collection with an error on purpose: a skip would let a host run
look green without having tested anything. Run them with
``python3 -m pytest tests/board`` on the host (boots the board once and reports
each guest test), or ``python3 -m board run -- python3 -m pytest tests/guest``. Modules named
``test_*_<machine>.py`` run only in that board (tests/support/machines.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.machines import ignore_other_machines

BOARD_MARKER = Path("/run/platform-hostdev-board")


def _inside_board() -> bool:
    return os.environ.get("PLATFORM_HOSTDEV_BOARD") == "1" and BOARD_MARKER.is_file()


if not _inside_board():
    raise pytest.UsageError(
        "tests/guest runs only inside the emulated ARM64 board (no PLATFORM_HOSTDEV_BOARD=1 "
        f"and no {BOARD_MARKER} here). On the host run `python3 -m pytest tests/board`, or "
        "`python3 -m board run -- python3 -m pytest tests/guest`; for host-only tests pass "
        "their directories (e.g. `pytest tests/unit tests/fakehost`)."
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A module for another board (test_*_raspi3b.py) is left out unless named: see
    tests/support/machines.py."""
    return ignore_other_machines(collection_path, config)


@pytest.fixture(scope="session")
def fs() -> Path:
    """The guest's real /sys."""
    return Path("/sys")


@pytest.fixture(scope="session")
def board_out() -> Path:
    """The writable share back to the host ($BOARD_OUT, /out)."""
    return Path(os.environ.get("BOARD_OUT", "/out"))
