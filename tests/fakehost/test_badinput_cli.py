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
TWINS = gic_soc(node("uart@1000", {"compatible": "ns16550a", "reg": [0x1000, 0x100]}),
                node("uart@1000", {"compatible": "ns16550a", "reg": [0x1000, 0x100]}))
WIDE_IRQ = gic_soc(node("dev@1000", {"compatible": "v,dev", "reg": [0x1000, 0x100],
                                     "interrupt-parent": 0x30, "interrupts": list(range(17))}),
                   top=(node("intc2", {"compatible": "v,intc", "interrupt-controller": True,
                                       "#interrupt-cells": 17, "phandle": 0x30}),))
WIDE_CLOCK = gic_soc(node("dev@1000", {"compatible": "v,dev", "reg": [0x1000, 0x100],
                                       "clocks": [0x31, *range(17)]}),
                     top=(node("clk2", {"#clock-cells": 17, "phandle": 0x31}),))
# the interrupt-map nexus of issue 12: #address-cells 0x10000000 in a 200-byte tree
NEXUS_BOMB = gic_soc(node("dev@1000", {"compatible": "v,dev", "reg": [0x1000, 0x100],
                                       "interrupt-parent": 0x40, "interrupts": [0]}),
                     top=(node("nexus", {"#interrupt-cells": 1, "#address-cells": 0x10000000,
                                         "phandle": 0x40,
                                         "interrupt-map": [0, 1, 0, 5, 4]}),))
HOSTILE_TEXT = gic_soc(
    node("x@1000", {"compatible": "v,\x1b[31mred\x1b[0m\nhint: fake", "reg": [0x1000, 0x100]}),
    node("y\x1b]0;owned\x07@2000", {"compatible": "v,\ufffe\u202e", "reg": [0x2000, 0x100]}),
    node("z@3000", {"compatible": "v,z", "reg": [0x3000, 0x100], "clocks": [0x99],
                    "interrupts": [0, 3, 4]}, [node("c\x1b[2J", {"reg": [0]})]),
    top=(node("aliases", {"weird0": "/soc/y\x1b]0;owned\x07@2000"}),),
)


def _deep(levels: int) -> RawNode:
    leaf = node("n", {})
    for _ in range(levels - 1):
        leaf = node("n", {}, [leaf])
    return gic_soc(top=(leaf,))

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


def _oversized_dtb(tmp: Path) -> list[str]:
    (tmp / "big.dtb").write_bytes(to_dtb(gic_soc(node("blob", {"data": b"\0" * (2 << 20)}))))
    return ["--dtb", str(tmp / "big.dtb"), "nodedev-list"]


def _non_ascii_node_dir(tmp: Path) -> list[str]:
    root = _host(tmp)
    os.mkdir(os.fsencode(_dt(tmp) / "soc") + b"/caf\xc3\xa9@0")
    return ["--root", str(root), "nodedev-list"]


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
    "duplicate-sibling-nodes": _dtb_case(TWINS, "nodedev-list"),
    "interrupt-cells-beyond-max": _dtb_case(WIDE_IRQ, "show", "/soc/dev@1000"),
    "phandle-args-beyond-max": _dtb_case(WIDE_CLOCK, "show", "/soc/dev@1000"),
    "nesting-beyond-fdt-max-depth": _dtb_case(_deep(63), "nodedev-list"),
    "dtb-beyond-max-fdt-size": _oversized_dtb,
    "dtb-is-dev-zero": lambda tmp: ["--dtb", "/dev/zero", "nodedev-list"],  # never read to end
    "non-ascii-node-dir": _non_ascii_node_dir,
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
        "duplicate-sibling-nodes": "error: node /soc/uart@1000: /soc has two child nodes "
                                   "named 'uart@1000'",
        "interrupt-cells-beyond-max": "error: node /intc2, property #interrupt-cells: 17 cells "
                                      "is more than the 16 Linux supports (MAX_PHANDLE_ARGS",
        "phandle-args-beyond-max": "error: node /clk2, property #clock-cells: 17 cells is more "
                                   "than the 16 Linux supports (MAX_PHANDLE_ARGS",
        "nesting-beyond-fdt-max-depth": "error: node " + "/n" * 62 + ": child node 'n' is 63 "
                                        "levels below the root",
        "dtb-beyond-max-fdt-size": "error: node ",
        "dtb-is-dev-zero": "error: node /dev/zero: bad magic 0x00000000, not a DTB",
        "non-ascii-node-dir": "error: node /soc: name is not ASCII: 'café@0'",
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


def test_dt_text_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """Control characters in node names and strings (ESC sequences, a newline faking a
    line) never reach the terminal raw: nodedev-list, show and errors escape them."""
    dtb = str(write_dtb(tmp_path / "board.dtb", HOSTILE_TEXT))
    listing = run_cli("--dtb", dtb, "nodedev-list")
    assert listing.code == 0 and listing.out.isascii()
    assert not any(c in listing.out for c in "\x1b\x07\r\u202e")
    rows = listing.out.splitlines()
    assert len(rows) == 2 + 4  # header, rule, soc and the three devices: one line each
    assert "v,\\x1b[31mred\\x1b[0m\\nhint: fake" in rows[3]
    assert rows[4].startswith("2000.y\\x1b]0;owned\\x07 ") and "v,\\ufffe\\u202e" in rows[4]
    show = run_cli("--dtb", dtb, "show", "/soc/x@1000")
    assert show.code == 0 and "\x1b" not in show.out
    assert "Compatible:  v,\\x1b[31mred\\x1b[0m\\nhint: fake\n" in show.out
    error = run_cli("--dtb", dtb, "show", "/soc/z@3000")  # the dangling clock: an error
    assert error.code == 1 and error.err.startswith("error: node /soc/z@3000, property clocks")
    child = run_cli("--dtb", dtb, "nodedev-dumpxml", "/soc/z@3000", "--json")
    assert child.code == 1 and "\x1b" not in child.out
    for result in (listing, show, error):
        assert all(line.isprintable() for line in (result.out + result.err).splitlines())


def test_dumpxml_of_hostile_dt_text_is_well_formed_xml(tmp_path: Path) -> None:
    """lxml refuses control characters and U+FFFE ("All strings must be XML compatible"):
    the text is escaped, the document parses, nothing raised."""
    from lxml import etree

    dtb = str(write_dtb(tmp_path / "board.dtb", HOSTILE_TEXT))
    for spec, path, compatible in (
            ("/soc/x@1000", "/soc/x@1000", "v,\\x1b[31mred\\x1b[0m\\nhint: fake"),
            ("weird0", "/soc/y\x1b]0;owned\x07@2000", "v,\\ufffe\\u202e")):
        result = run_cli("--dtb", dtb, "nodedev-dumpxml", spec)
        assert result.code == 0, result.err
        root = etree.fromstring(result.out.encode())
        assert root.findtext("capability/devicetree/compatible") == compatible
        assert root.find("capability/devicetree").get("path") == path.replace(
            "\x1b", "\\x1b").replace("\x07", "\\x07")
        assert all(line.isprintable() for line in result.out.splitlines())


def test_a_200_byte_nexus_bomb_answers_at_once_in_little_memory(tmp_path: Path) -> None:
    """Issue 12: a nexus with #address-cells = 0x10000000 made show allocate 8.5 GB over
    35 s. Run as a user would, in 1 GiB of address space: the interrupt count stops at the
    entry, located, with the kernel's limit."""
    import resource
    import subprocess
    import sys

    dtb = write_dtb(tmp_path / "nexus.dtb", NEXUS_BOMB)
    assert len(dtb.read_bytes()) < 1024
    repo = Path(__file__).resolve().parents[2]

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    for argv in (["show", "/soc/dev@1000"], ["nodedev-dumpxml", "/soc/dev@1000"]):
        done = subprocess.run([sys.executable, "-m", "platform_hostdev", "--dtb", str(dtb),
                               *argv], capture_output=True, text=True, timeout=60,
                              preexec_fn=cap, env={"PYTHONPATH": f"{repo / 'plugin'}:{repo}",
                                                   "PATH": "/usr/bin:/bin"})
        assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr, done.stderr
        assert done.returncode == 0, done.stderr
    assert ("interrupt count stops at entry 0: node /nexus, property #address-cells: as an "
            "interrupt nexus, #address-cells (268435456) + #interrupt-cells (1) is more than the "
            "16 cells Linux supports") in run_cli("--dtb", str(dtb), "show", "/soc/dev@1000").out
