"""devicetree: typed property access, inherited cells, phandles, aliases."""
from __future__ import annotations

import pytest
from platform_hostdev.errors import DeviceTreeError

from tests.support.fdtwriter import node
from tests.support.synthetic import tree_of


def test_cells_are_inherited_with_linux_defaults() -> None:
    tree = tree_of(node("", {}, [
        node("a", {"#address-cells": 2}, [node("b", {})]),
    ]))
    assert tree.root.address_cells() == 1 and tree.root.size_cells() == 1
    assert tree.node("/a/b").address_cells() == 2
    assert tree.node("/a/b").size_cells() == 1


def test_more_than_four_cells_is_a_located_error() -> None:
    tree = tree_of(node("", {"#address-cells": 5}))
    with pytest.raises(DeviceTreeError, match=r"^node /, property #address-cells: 5 cells"):
        tree.root.address_cells()


def test_duplicate_phandle_names_both_nodes() -> None:
    raw = node("", {}, [node("a", {"phandle": 3}), node("b", {"phandle": 3})])
    with pytest.raises(DeviceTreeError) as info:
        tree_of(raw)
    assert "phandle 0x3 is also used by" in info.value.what


@pytest.mark.parametrize("value", [0, 0xFFFFFFFF])
def test_reserved_phandle_values_are_refused(value: int) -> None:
    with pytest.raises(DeviceTreeError, match="not a valid phandle"):
        tree_of(node("", {}, [node("a", {"phandle": value})]))


def test_aliases_keep_only_absolute_paths() -> None:
    tree = tree_of(node("", {}, [
        node("aliases", {"serial0": "/uart@1", "bogus": "uart@1", "name": "aliases"}),
        node("uart@1", {}),
    ]))
    assert tree.aliases == {"serial0": "/uart@1"}
    assert tree.alias_target("serial0") is tree.node("/uart@1")
    assert tree.aliases_of(tree.node("/uart@1")) == ["serial0"]


def test_strings_non_utf8_and_unterminated_are_located() -> None:
    tree = tree_of(node("", {}, [node("x", {"compatible": b"caf\xe9\0", "model": b"abc"})]))
    x = tree.node("/x")
    with pytest.raises(DeviceTreeError, match=r"^node /x, property compatible: not valid UTF-8"):
        _ = x.compatible
    with pytest.raises(DeviceTreeError, match="not NUL-terminated"):
        x.strings("model")


@pytest.mark.parametrize("status,available", [(None, True), ("okay", True), ("ok", True),
                                              ("disabled", False), ("fail", False)])
def test_status(status: str | None, available: bool) -> None:
    props = {} if status is None else {"status": status}
    assert tree_of(node("", {}, [node("x", props)])).node("/x").is_available() is available


def test_unknown_path_and_dangling_phandle() -> None:
    tree = tree_of(node("", {}, [node("x", {})]))
    with pytest.raises(DeviceTreeError, match="no such node"):
        tree.node("/y")
    with pytest.raises(DeviceTreeError, match=r"node /x, property clocks: phandle 0x9 refers to"):
        tree.phandle(9, tree.node("/x"), "clocks")


def test_walk_is_depth_first_in_dt_order() -> None:
    tree = tree_of(node("", {}, [node("a", {}, [node("a1", {})]), node("b", {})]))
    assert [n.path for n in tree] == ["/", "/a", "/a/a1", "/b"]
    assert len(tree) == 4
