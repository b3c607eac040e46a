"""tests/support/machines.py: another board's modules are left out unless named."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import machines


def config(tmp_path: Path, *args: str) -> Any:
    return SimpleNamespace(invocation_params=SimpleNamespace(dir=tmp_path, args=args))


@pytest.mark.parametrize(("inside", "machine", "args", "ignored"), [
    (False, "virt", ("tests/guest",), None),              # on the host: the fake backend runs
    (True, "virt", ("tests/guest",), True),               # the virt board leaves it out
    (True, "raspi3b", ("tests/guest",), None),            # its own board runs it
    (True, "virt", ("tests/guest/test_x_raspi3b.py",), None),           # named: runs, fails
    (True, "virt", ("tests/guest/test_x_raspi3b.py::test_a",), None),
])
def test_other_boards_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: bool,
                              machine: str, args: tuple[str, ...], ignored: bool | None) -> None:
    monkeypatch.setattr(machines, "INSIDE_BOARD", inside)
    monkeypatch.setattr(machines, "BOARD_MACHINE", machine)
    module = tmp_path / "tests/guest/test_x_raspi3b.py"
    assert machines.machine_of(module) == "raspi3b"
    assert machines.ignore_other_machines(module, config(tmp_path, *args)) is ignored
    plain = tmp_path / "tests/guest/test_x.py"
    assert machines.machine_of(plain) is None
    assert machines.ignore_other_machines(plain, config(tmp_path, *args)) is None
    assert machines.ignore_other_machines(tmp_path / "tests/guest", config(tmp_path)) is None
