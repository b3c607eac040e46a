"""Which emulated board a test module is for, and leaving out the others' modules.

A module named ``test_*_<machine>.py`` (``<machine>`` in :data:`MACHINES`) is
for that board; every other module is for QEMU's virt machine, the default.
Inside a board (``PLATFORM_HOSTDEV_BOARD=1``), whose machine is
``PLATFORM_HOSTDEV_BOARD_MACHINE`` (default ``virt``), a module for another
machine is left out of a directory run (:func:`ignore_other_machines`, used
by the conftests' ``pytest_ignore_collect``); named on the command line it is
collected, and it fails saying which board it needs.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["MACHINES", "INSIDE_BOARD", "BOARD_MACHINE", "machine_of", "named_on_command_line",
           "ignore_other_machines"]

MACHINES = ("raspi3b",)
INSIDE_BOARD = os.environ.get("PLATFORM_HOSTDEV_BOARD") == "1"
BOARD_MACHINE = os.environ.get("PLATFORM_HOSTDEV_BOARD_MACHINE", "virt")


def machine_of(path: Path) -> str | None:
    """The board a ``test_*_<machine>.py`` module is for (None: QEMU virt)."""
    if path.suffix != ".py":
        return None
    return next((m for m in MACHINES if path.stem.endswith("_" + m)), None)


def named_on_command_line(path: Path, config: pytest.Config) -> bool:
    """Whether the module ``path`` was given to pytest explicitly (a directory is not)."""
    base = Path(config.invocation_params.dir)
    for arg in config.invocation_params.args:
        candidate = Path(str(arg).split("::", 1)[0])
        candidate = candidate if candidate.is_absolute() else base / candidate
        if candidate.resolve() == path.resolve():
            return True
    return False


def ignore_other_machines(collection_path: Path, config: pytest.Config) -> bool | None:
    """``pytest_ignore_collect``: True for another board's module inside a board."""
    machine = machine_of(collection_path)
    if INSIDE_BOARD and machine is not None and machine != BOARD_MACHINE \
            and not named_on_command_line(collection_path, config):
        return True
    return None
