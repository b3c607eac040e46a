"""address: reg splitting by the parent's cells and translation through every `ranges`."""
from __future__ import annotations

import pytest
from platform_hostdev.dt.address import reg_entries
from platform_hostdev.errors import DeviceTreeError

from tests.support.fdtwriter import node
from tests.support.synthetic import tree_of

# Three translation levels, each with an offset:
#   /bus@40000000 (2 -> 2 cells): child 0:0 -> CPU 0x1:0x40000000
#   /bus@.../sub@100000 (1 -> 2 cells): child 0 -> 0:0x100000
#   /bus@.../sub@.../leaf@2000 (1 -> 1 cell): child 0 -> 0x20000
MULTI = node("", {"#address-cells": 2, "#size-cells": 2}, [
    node("bus@140000000", {"compatible": "simple-bus", "#address-cells": 2, "#size-cells": 1,
                           "ranges": [0, 0, 0x1, 0x40000000, 0x10000000]}, [
        node("sub@100000", {"compatible": "simple-bus", "#address-cells": 1, "#size-cells": 1,
                            "ranges": [0, 0, 0x100000, 0x100000]}, [
            node("leaf@20000", {"compatible": "simple-bus", "#address-cells": 1,
                                "#size-cells": 1, "ranges": [0, 0x20000, 0x10000]}, [
                node("dev@2000", {"reg": [0x2000, 0x1000, 0x3000, 0x80]}),
                node("far@20000", {"reg": [0x20000, 0x10]}),
            ]),
        ]),
        node("i2c@0,5000", {"reg": [0, 0x5000, 0x100], "#address-cells": 1,
                            "#size-cells": 0}, [node("rtc@51", {"reg": 0x51})]),
        node("odd@0", {"reg": [0, 0x10, 0x20, 0x30]}),
    ]),
    node("flat", {"compatible": "simple-bus", "#address-cells": 1, "#size-cells": 1,
                  "ranges": True}, [node("x@9000000", {"reg": [0x9000000, 0x1000]})]),
])


def test_three_level_ranges_translate_each_entry() -> None:
    tree = tree_of(MULTI)
    entries = reg_entries(tree.node("/bus@140000000/sub@100000/leaf@20000/dev@2000"))
    # 0x2000 -> 0x22000 -> 0:0x122000 -> 0x1_4012_2000
    assert [(e.index, e.bus_address, hex(e.cpu_address or 0), e.size) for e in entries] == [
        (0, (0x2000,), "0x140122000", 0x1000),
        (1, (0x3000,), "0x140123000", 0x80),
    ]


def test_address_outside_ranges_is_untranslatable_with_reason() -> None:
    tree = tree_of(MULTI)
    (entry,) = reg_entries(tree.node("/bus@140000000/sub@100000/leaf@20000/far@20000"))
    assert entry.cpu_address is None
    assert entry.untranslatable_reason is not None
    assert "outside every 'ranges' entry of /bus@140000000/sub@100000/leaf@20000" \
        in entry.untranslatable_reason


def test_empty_ranges_is_identity() -> None:
    (entry,) = reg_entries(tree_of(MULTI).node("/flat/x@9000000"))
    assert entry.cpu_address == 0x9000000


def test_bus_without_ranges_makes_children_untranslatable() -> None:
    (entry,) = reg_entries(tree_of(MULTI).node("/bus@140000000/i2c@0,5000/rtc@51"))
    assert entry.cpu_address is None and entry.size == 0
    assert "has no 'ranges'" in (entry.untranslatable_reason or "")


def test_reg_not_a_multiple_of_cells_is_located() -> None:
    with pytest.raises(DeviceTreeError) as info:
        reg_entries(tree_of(MULTI).node("/bus@140000000/odd@0"))
    assert info.value.what.startswith("node /bus@140000000/odd@0, property reg: 4 cells is not "
                                      "a multiple of #address-cells (2) + #size-cells (1)")
    assert "/bus@140000000" in info.value.fix


def test_reg_length_not_a_multiple_of_four_bytes() -> None:
    tree = tree_of(node("", {}, [node("x@0", {"reg": b"\0\0\0\0\0\0"})]))
    with pytest.raises(DeviceTreeError, match="length 6 is not a multiple of 4"):
        reg_entries(tree.node("/x@0"))


def test_pci_ranges_match_the_space_code() -> None:
    pci = node("", {"#address-cells": 2, "#size-cells": 2}, [
        node("pcie@10000000", {"device_type": "pci", "#address-cells": 3, "#size-cells": 2,
                               "ranges": [0x01000000, 0, 0, 0, 0x3eff0000, 0, 0x10000,
                                          0x02000000, 0, 0x10000000, 0, 0x10000000, 0,
                                          0x2eff0000]}, [
            node("dev@0", {"reg": [0x02000000, 0, 0x10001000, 0, 0x1000,
                                   0x01000000, 0, 0x100, 0, 0x10]}),
        ]),
    ])
    entries = reg_entries(tree_of(pci).node("/pcie@10000000/dev@0"))
    assert [e.cpu_address for e in entries] == [0x10001000, 0x3eff0100]
