"""Bounded DT reading: every kernel limit of platform_hostdev.dt.limits is a located error.

Each case is a tree one step past a limit the kernel keeps (drivers/of/address.c
OF_MAX_ADDR_CELLS, include/linux/of.h MAX_PHANDLE_ARGS, drivers/of/fdt.c
FDT_MAX_DEPTH, arch/arm64/include/asm/boot.h MAX_FDT_SIZE, NAME_MAX), and the
same tree one step short of it reads fine; the error names the node, the
property, the limit and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from platform_hostdev.dt import fdt
from platform_hostdev.dt.fdt import RawNode, parse_dtb, read_sysfs_tree
from platform_hostdev.dt.interrupts import resolve_interrupts
from platform_hostdev.dt.limits import MAX_FDT_SIZE, MAX_NODE_DEPTH, MAX_PHANDLE_ARGS, NAME_MAX
from platform_hostdev.dt.phandles import phandle_links
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError

from tests.support.fdtwriter import node, to_dtb
from tests.support.synthetic import GIC_PHANDLE, gic_soc, tree_of

NEXUS = 0x40


def _error(raw: RawNode) -> DeviceTreeError:
    """The error reading ``raw`` gives, by both DTB paths (RawNode and straight to the model)."""
    blob = to_dtb(raw)
    with pytest.raises(DeviceTreeError) as direct:
        DeviceTree.from_blob(blob, "t.dtb")
    with pytest.raises(DeviceTreeError) as via_raw:
        DeviceTree(parse_dtb(blob, "t.dtb"), "t.dtb")
    assert direct.value.what == via_raw.value.what
    return direct.value


@pytest.mark.parametrize("prop", ["#address-cells", "#size-cells"])
def test_address_and_size_cells_beyond_of_max_addr_cells(prop: str) -> None:
    tree = tree_of(node("", {}, [node("bus", {prop: 5}, [node("dev@0", {"reg": [0] * 10})])]))
    with pytest.raises(DeviceTreeError) as info:
        tree.node("/bus").address_cells() if prop == "#address-cells" \
            else tree.node("/bus").size_cells()
    assert info.value.what.startswith(f"node /bus, property {prop}: 5 cells is more than the "
                                      "4 Linux supports (OF_MAX_ADDR_CELLS in "
                                      "drivers/of/address.c")
    assert f"set {prop} of /bus" in info.value.fix and "at most 4" in info.value.fix
    ok = tree_of(node("", {}, [node("bus", {prop: 4})]))
    assert ok.node("/bus").address_cells() + ok.node("/bus").size_cells() == 5


def _controller(cells: int) -> RawNode:
    return node("intc@0", {"compatible": "v,intc", "interrupt-controller": True,
                           "#interrupt-cells": cells, "phandle": 0x30})


@pytest.mark.parametrize("prop", ["interrupts", "interrupts-extended"])
def test_interrupt_cells_beyond_max_phandle_args(prop: str) -> None:
    def board(cells: int) -> DeviceTree:
        value = [0x30, *range(cells)] if prop == "interrupts-extended" else list(range(cells))
        return tree_of(node("", {}, [_controller(cells), node("dev", {
            "interrupt-parent": 0x30, prop: value})]))

    tree = board(MAX_PHANDLE_ARGS + 1)
    with pytest.raises(DeviceTreeError) as info:
        resolve_interrupts(tree, tree.node("/dev"))
    assert info.value.what.startswith(
        "node /intc@0, property #interrupt-cells: 17 cells is more than the 16 Linux supports "
        "(MAX_PHANDLE_ARGS in include/linux/of.h)")
    assert "set #interrupt-cells of /intc@0" in info.value.fix
    ok = board(MAX_PHANDLE_ARGS)
    assert len(resolve_interrupts(ok, ok.node("/dev")).specs) == 1


def _nexus_board(nexus_cells: int, mask: bool, target_cells: int = 1) -> DeviceTree:
    """A device whose interrupt parent is a nexus with ``nexus_cells`` #address-cells,
    mapping to a controller with ``target_cells`` #address-cells."""
    key = [0] * nexus_cells + [7]
    props: dict[str, object] = {
        "#interrupt-cells": 1, "#address-cells": nexus_cells, "phandle": NEXUS,
        "interrupt-map": [*key, GIC_PHANDLE, *([0] * target_cells), 0, 5, 4]}
    if mask:
        props["interrupt-map-mask"] = [0] * nexus_cells + [0xFFFFFFFF]
    top = (node("nexus", props),)  # type: ignore[arg-type]
    raw = gic_soc(node("dev@1000", {"compatible": "v,dev", "reg": [0x1000, 0x100],
                                    "interrupt-parent": NEXUS, "interrupts": [7]}), top=top)
    raw.children[0].properties["#address-cells"] = target_cells.to_bytes(4, "big")
    return tree_of(raw)


@pytest.mark.parametrize("mask", [True, False], ids=["with-mask", "without-mask"])
def test_nexus_address_cells_are_bounded_before_anything_is_allocated(mask: bool) -> None:
    """of_irq_parse_raw() refuses #address-cells + #interrupt-cells above MAX_PHANDLE_ARGS;
    the count stops there, and says where."""
    tree = _nexus_board(MAX_PHANDLE_ARGS, mask)
    stopped = resolve_interrupts(tree, tree.node("/soc/dev@1000")).stopped
    assert stopped is not None
    assert stopped.startswith("entry 0: node /nexus, property #address-cells: as an interrupt "
                              "nexus, #address-cells (16) + #interrupt-cells (1) is more than "
                              "the 16 cells Linux supports"), stopped
    ok = _nexus_board(MAX_PHANDLE_ARGS - 1, mask)
    resolution = resolve_interrupts(ok, ok.node("/soc/dev@1000"))
    assert resolution.stopped is None and [s.line for s in resolution.specs] == ["SPI 5"]


def test_an_interrupt_map_target_beyond_max_phandle_args_is_located() -> None:
    tree = _nexus_board(1, True, target_cells=MAX_PHANDLE_ARGS - 2)  # + 3 interrupt cells
    stopped = resolve_interrupts(tree, tree.node("/soc/dev@1000")).stopped
    assert stopped is not None and stopped.startswith(
        "entry 0: node /intc@8000000, property #address-cells: as a target of /nexus's "
        "interrupt-map, #address-cells (14) + #interrupt-cells (3) is more than the 16"), stopped
    ok = _nexus_board(1, True, target_cells=MAX_PHANDLE_ARGS - 3)
    assert resolve_interrupts(ok, ok.node("/soc/dev@1000")).stopped is None


def test_phandle_argument_cells_beyond_max_phandle_args() -> None:
    def board(cells: int) -> DeviceTree:
        return tree_of(node("", {}, [
            node("clk", {"#clock-cells": cells, "phandle": 7}),
            node("dev", {"clocks": [7, *range(cells)]})]))

    tree = board(MAX_PHANDLE_ARGS + 1)
    with pytest.raises(DeviceTreeError) as info:
        phandle_links(tree, tree.node("/dev"))
    assert info.value.what.startswith("node /clk, property #clock-cells: 17 cells is more than "
                                      "the 16 Linux supports (MAX_PHANDLE_ARGS")
    ok = board(MAX_PHANDLE_ARGS)
    assert phandle_links(ok, ok.node("/dev"))[0].args == tuple(range(16))


def _chain(levels: int) -> RawNode:
    leaf = node("n", {})
    for _ in range(levels - 1):
        leaf = node("n", {}, [leaf])
    return node("", {}, [leaf])


def test_nesting_beyond_the_kernels_depth_is_refused() -> None:
    """unflatten_dt_nodes() skips nodes at depth FDT_MAX_DEPTH - 1 (63) and deeper."""
    assert len(DeviceTree.from_blob(to_dtb(_chain(MAX_NODE_DEPTH)))) == MAX_NODE_DEPTH + 1
    error = _error(_chain(MAX_NODE_DEPTH + 1))
    assert error.node == "/n" * MAX_NODE_DEPTH
    assert error.problem == ("child node 'n' is 63 levels below the root; the kernel keeps "
                             "nodes at most 62 levels below the root (drivers/of/fdt.c "
                             "unflatten_dt_nodes(), FDT_MAX_DEPTH)")
    assert "nest the nodes less deeply" in error.fix


def test_sysfs_nesting_beyond_the_kernels_depth_is_refused(tmp_path: Path) -> None:
    deep = tmp_path.joinpath("base", *["n"] * MAX_NODE_DEPTH)
    deep.mkdir(parents=True)
    assert len(DeviceTree(read_sysfs_tree(tmp_path / "base"))) == MAX_NODE_DEPTH + 1
    (deep / "n").mkdir()
    with pytest.raises(DeviceTreeError, match="child node 'n' is 63 levels below the root"):
        read_sysfs_tree(tmp_path / "base")


def test_names_longer_than_name_max_are_refused() -> None:
    long = "a" * (NAME_MAX + 1)
    error = _error(node("", {}, [node("soc", {}, [node(long, {})])]))
    assert error.what.startswith("node /soc: a child node name of 256 bytes is longer than the "
                                 "255 bytes a name can have under /sys/firmware/devicetree/base")
    error = _error(node("", {}, [node("soc", {long: 1})]))
    assert error.what.startswith("node /soc: a property name of 256 bytes is longer than")
    fine = DeviceTree.from_blob(to_dtb(node("", {}, [node("a" * NAME_MAX, {"b" * NAME_MAX: 1})])))
    assert len(fine) == 2


def test_a_dtb_larger_than_an_arm64_kernel_boots_is_refused() -> None:
    big = to_dtb(node("", {"blob": b"\0" * (MAX_FDT_SIZE - 200)}))
    assert len(big) <= MAX_FDT_SIZE and DeviceTree.from_blob(big).root.properties["blob"]
    with pytest.raises(DeviceTreeError) as info:
        parse_dtb(to_dtb(node("", {"blob": b"\0" * MAX_FDT_SIZE})), "big.dtb")
    assert info.value.what.startswith("node big.dtb: header says 2097")
    assert "more than the 2097152 (2 MiB) an arm64 kernel boots (MAX_FDT_SIZE" in info.value.what


def test_duplicate_sibling_nodes_are_refused_naming_both() -> None:
    error = _error(gic_soc(node("uart@1000", {"compatible": "v,a", "reg": [0x1000, 0x100]}),
                           node("uart@1000", {"compatible": "v,b", "reg": [0x1000, 0x100]})))
    assert error.what == ("node /soc/uart@1000: /soc has two child nodes named 'uart@1000'; "
                          "dtc refuses that (duplicate node name) and the kernel's sysfs can "
                          "hold only one of them")
    assert error.fix.startswith("rename or merge one of the two nodes")
    # the same name under two parents is two nodes
    tree = tree_of(node("", {}, [node("a", {}, [node("x", {})]), node("b", {}, [node("x", {})])]))
    assert {n.path for n in tree} == {"/", "/a", "/a/x", "/b", "/b/x"}


def test_a_duplicate_property_is_refused() -> None:
    blob = to_dtb(node("", {}, [node("dev", {"aa": 1, "ab": 2})]))
    # point the second property at a second copy of the first one's name
    blob = blob[:blob.rindex(b"ab\0")] + b"aa\0" + blob[blob.rindex(b"ab\0") + 3:]
    with pytest.raises(DeviceTreeError) as info:
        DeviceTree.from_blob(blob)
    assert info.value.what.startswith("node /dev, property aa: appears twice in the node")


def test_sysfs_names_must_be_ascii_as_in_a_dtb(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "soc").mkdir(parents=True)
    os.mkdir(os.fsencode(base / "soc") + b"/caf\xe9")
    with pytest.raises(DeviceTreeError) as info:
        read_sysfs_tree(base)
    assert info.value.what.startswith("node /soc: name is not ASCII: 'caf\\udce9'")


def test_a_sysfs_property_larger_than_a_dtb_is_not_read(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    with open(base / "huge", "wb") as f:
        f.truncate(64 * MAX_FDT_SIZE)  # sparse: what a crafted --root could hold
    with pytest.raises(DeviceTreeError) as info:
        read_sysfs_tree(base)
    assert info.value.what.startswith("node /, property huge: holds more than 2097152 bytes")


def test_the_sysfs_tree_budget_bounds_entries_and_bytes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base"
    for i in range(4):
        (base / f"n{i}").mkdir(parents=True)
        (base / f"n{i}" / "p").write_bytes(b"x" * 100)
    assert len(DeviceTree(read_sysfs_tree(base))) == 5
    monkeypatch.setattr(fdt, "MAX_LIVE_ENTRIES", 7)  # 4 nodes + 4 properties
    with pytest.raises(DeviceTreeError, match="the tree holds more than 7 nodes and properties"):
        read_sysfs_tree(base)
    monkeypatch.setattr(fdt, "MAX_LIVE_ENTRIES", 8)
    monkeypatch.setattr(fdt, "MAX_LIVE_BYTES", 399)
    with pytest.raises(DeviceTreeError, match="the property values add up to more than 399"):
        read_sysfs_tree(base)
