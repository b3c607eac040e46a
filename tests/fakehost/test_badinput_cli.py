"""Bad input: every case prints ``error:`` + ``hint:``, exits 1, no traceback, writes nothing."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from platform_hostdev.dt.fdt import RawNode

from tests.support.boards import run_cli
from tests.support.fakehost import build_fake_host, tree_state
from tests.support.fdtwriter import node, to_dtb
from tests.support.synthetic import CLK_PHANDLE, gic_soc, write_dtb

BAD_BOARD = gic_soc(
    node("odd@1000", {"compatible": "v,odd", "reg": [0x1000, 0x10, 0x2000]}),
    node("loop@2000", {"compatible": "v,loop", "reg": [0x2000, 0x10], "interrupts": [1],
                       "interrupt-parent": 0x31}),
    node("a", {"interrupt-parent": 0x32, "phandle": 0x31}),
    node("b", {"interrupt-parent": 0x31, "phandle": 0x32}),
    node("dangling@3000", {"compatible": "v,d", "reg": [0x3000, 0x10], "clocks": [0x99]}),
    node("orphanirq@4000", {"compatible": "v,o", "reg": [0x4000, 0x10],
                            "interrupt-parent": 0x98, "interrupts": [0, 1, 4]}),
    node("ok@5000", {"compatible": "v,ok", "reg": [0x5000, 0x1000], "clocks": [CLK_PHANDLE]}),
)
LATIN1 = gic_soc(node("bad@1000", {"compatible": b"caf\xe9\0", "reg": [0x1000, 0x10]}))

Setup = Callable[[Path], list[str]]


def _dtb_case(raw: RawNode, *argv: str) -> Setup:
    def setup(tmp: Path) -> list[str]:
        return ["--dtb", str(write_dtb(tmp / "board.dtb", raw)), *argv]
    return setup


def _truncated_dtb(tmp: Path) -> list[str]:
    (tmp / "cut.dtb").write_bytes(to_dtb(BAD_BOARD)[:200])
    return ["--dtb", str(tmp / "cut.dtb"), "nodedev-list"]


def _host(tmp: Path) -> Path:
    build_fake_host(tmp / "root", write_dtb(tmp / "board.dtb", gic_soc(
        node("gpio@9030000", {"compatible": ["arm,pl061", "arm,primecell"],
                              "reg": [0x9030000, 0x1000], "interrupts": [0, 7, 4]}),
        node("virtio@a000000", {"compatible": "virtio,mmio", "reg": [0xa000000, 0x200]}),
    )), drivers={"arm,pl061": "pl061_gpio"})
    return tmp / "root"


def _dt(tmp: Path) -> Path:
    return tmp / "root/sys/firmware/devicetree/base"


def _truncated_reg_file(tmp: Path) -> list[str]:
    root = _host(tmp)
    (_dt(tmp) / "soc/gpio@9030000/reg").write_bytes(b"\0\x90\x30\0\0\0")
    return ["--root", str(root), "show", "9030000.gpio"]


def _truncated_cells_file(tmp: Path) -> list[str]:
    root = _host(tmp)
    (_dt(tmp) / "soc/#address-cells").write_bytes(b"\0\1")
    return ["--root", str(root), "show", "/soc/virtio@a000000"]


def _latin1_compatible_file(tmp: Path) -> list[str]:
    root = _host(tmp)
    (_dt(tmp) / "soc/virtio@a000000/compatible").write_bytes(b"virtio,mm\xefo\0")
    return ["--root", str(root), "nodedev-list"]


def _symlinked_property(tmp: Path) -> list[str]:
    root = _host(tmp)
    os.symlink("/etc/passwd", _dt(tmp) / "soc/gpio@9030000/model")
    return ["--root", str(root), "nodedev-list"]


def _symlinked_node(tmp: Path) -> list[str]:
    root = _host(tmp)
    os.symlink("/etc", _dt(tmp) / "soc/escape@0")
    return ["--root", str(root), "show", "9030000.gpio"]


def _host_spec(*argv: str) -> Setup:
    def setup(tmp: Path) -> list[str]:
        return ["--root", str(_host(tmp)), *argv]
    return setup


CASES: dict[str, Setup] = {
    "truncated-dtb": _truncated_dtb,
    "not-a-dtb": lambda tmp: ["--dtb", str(Path(__file__)), "nodedev-list"],
    "missing-dtb": lambda tmp: ["--dtb", str(tmp / "nope.dtb"), "nodedev-list"],
    "reg-not-multiple-of-cells": _dtb_case(BAD_BOARD, "show", "/soc/odd@1000"),
    "interrupt-parent-cycle": _dtb_case(BAD_BOARD, "show", "2000.loop"),
    "dangling-clock-phandle": _dtb_case(BAD_BOARD, "nodedev-dumpxml", "/soc/dangling@3000"),
    "dangling-interrupt-parent": _dtb_case(BAD_BOARD, "show", "/soc/orphanirq@4000"),
    "non-utf8-compatible-dtb": _dtb_case(LATIN1, "nodedev-list"),
    "truncated-reg-file": _truncated_reg_file,
    "truncated-cells-file": _truncated_cells_file,
    "non-utf8-compatible-file": _latin1_compatible_file,
    "symlinked-property": _symlinked_property,
    "symlinked-node-dir": _symlinked_node,
    "dotdot-name": _host_spec("show", "../../etc/passwd"),
    "dotdot-path": _host_spec("show", "/soc/../x"),
    "dot-name": _host_spec("nodedev-dumpxml", ".."),
    "slash-name": _host_spec("show", "soc/gpio@9030000"),
    "empty-component": _host_spec("show", "//soc"),
    "control-char": _host_spec("show", "gpio\n"),
    "unknown-device": _host_spec("show", "nosuch0"),
    "node-not-a-device": _host_spec("show", "/intc@8000000/nothing"),
    "no-devicetree": lambda tmp: ["--root", str(tmp), "nodedev-list"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_clean_user_error(case: str, tmp_path: Path) -> None:
    argv = CASES[case](tmp_path)
    before = tree_state(tmp_path)
    result = run_cli(*argv)
    assert result.code == 1, (result.out, result.err)
    lines = result.err.splitlines()
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ") + 10, result.err
    assert any(line.startswith("hint: ") for line in lines[1:]), result.err
    assert "Traceback" not in result.err and result.out == ""
    assert tree_state(tmp_path) == before, f"{case}: the command wrote to the tree"


def test_located_messages_name_node_and_property(tmp_path: Path) -> None:
    """The DT cases say where: node and property, and what was found."""
    expected = {
        "reg-not-multiple-of-cells": "error: node /soc/odd@1000, property reg: 3 cells",
        "interrupt-parent-cycle": "error: node /soc/loop@2000, property interrupt-parent: "
                                  "interrupt-parent chain loops",
        "dangling-clock-phandle": "error: node /soc/dangling@3000, property clocks: "
                                  "phandle 0x99 refers to no node",
        "truncated-reg-file": "error: node /soc/gpio@9030000, property reg: length 6",
        "truncated-cells-file": "error: node /soc, property #address-cells: holds 2 bytes",
        "non-utf8-compatible-file": "error: node /soc/virtio@a000000, property compatible: "
                                    "not valid UTF-8",
        "symlinked-property": "error: node /soc/gpio@9030000, property model: is a symlink",
        "dotdot-path": "error: DT path '/soc/../x' has an invalid component '..'",
    }
    for case, start in expected.items():
        case_dir = tmp_path / case
        case_dir.mkdir()
        result = run_cli(*CASES[case](case_dir))
        assert result.err.startswith(start), (case, result.err)


def test_a_closed_pipe_ends_quietly(virt_dtb: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    # 'true' exits at once: every write of ours meets a closed pipe
    cmd = f"{sys.executable} -m platform_hostdev --dtb {virt_dtb} nodedev-list --json | true"
    done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(repo / "plugin"), "PATH": "/usr/bin:/bin"})
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
