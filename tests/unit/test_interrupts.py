"""interrupts: parents, GIC decoding, interrupts-extended, interrupt-map nexus, cycles."""
from __future__ import annotations

import pytest
from platform_hostdev.dt.interrupts import find_interrupt_parent, resolve_interrupts
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError

from tests.support.fdtwriter import node
from tests.support.synthetic import GIC_PHANDLE, gic_soc, tree_of

GPIO = 5
NEXUS = 6


def board() -> DeviceTree:
    return tree_of(gic_soc(
        node("gpio@1000", {"compatible": "vendor,gpio", "reg": [0x1000, 0x100],
                           "interrupt-controller": True, "#interrupt-cells": 2,
                           "phandle": GPIO, "interrupts": [0, 20, 4]}),
        node("uart@2000", {"compatible": "ns16550a", "reg": [0x2000, 0x100],
                           "interrupts": [0, 7, 4, 1, 9, 0xf04, 0, 8, 1]}),
        node("mixed@3000", {"compatible": "vendor,mixed", "reg": [0x3000, 0x100],
                            "interrupts-extended": [GIC_PHANDLE, 0, 11, 4, GPIO, 3, 2]}),
        node("nexus@4000", {"compatible": "simple-bus", "reg": [0x4000, 0x100],
                            "#address-cells": 1, "#size-cells": 1, "ranges": True,
                            "#interrupt-cells": 1, "phandle": NEXUS,
                            "interrupt-map-mask": [0xF000, 0x7],
                            "interrupt-map": [0x5000, 1, GIC_PHANDLE, 0, 40, 4,
                                              0x5000, 2, GIC_PHANDLE, 0, 41, 1,
                                              0x6000, 1, GIC_PHANDLE, 0, 42, 4]}, [
            node("leaf@5000", {"compatible": "vendor,leaf", "reg": [0x5000, 0x100],
                               "interrupt-parent": NEXUS, "interrupts": [1, 2, 3]}),
        ]),
        node("loop1", {"compatible": "x", "interrupt-parent": 21, "phandle": 20,
                       "interrupts": [1]}),
        node("loop2", {"interrupt-parent": 20, "phandle": 21}),
        node("bad@7000", {"compatible": "x", "reg": [0x7000, 4], "interrupts": [0, 1]}),
    ))


def test_gic_spi_ppi_and_trigger_decoding() -> None:
    tree = board()
    res = resolve_interrupts(tree, tree.node("/soc/uart@2000"))
    assert res.stopped is None
    assert [(s.kind, s.number, s.hwirq, s.trigger, s.level) for s in res.specs] == [
        ("SPI", 7, 39, "level-high", True),
        ("PPI", 9, 25, "level-high", True),
        ("SPI", 8, 40, "edge-rising", False),
    ]
    assert all(s.controller == "/intc@8000000" for s in res.specs)


def test_interrupt_parent_is_inherited_from_the_root() -> None:
    tree = board()
    parent = find_interrupt_parent(tree, tree.node("/soc/uart@2000"))
    assert parent is not None and parent.path == "/intc@8000000"


def test_interrupts_extended_goes_to_two_controllers() -> None:
    tree = board()
    specs = resolve_interrupts(tree, tree.node("/soc/mixed@3000")).specs
    assert [(s.controller, s.kind, s.specifier, s.trigger) for s in specs] == [
        ("/intc@8000000", "SPI", (0, 11, 4), "level-high"),
        ("/soc/gpio@1000", None, (3, 2), "edge-falling"),
    ]


def test_interrupt_map_nexus_is_walked_with_the_mask() -> None:
    tree = board()
    res = resolve_interrupts(tree, tree.node("/soc/nexus@4000/leaf@5000"))
    # unit address 0x5000 & 0xF000 = 0x5000; 1 -> SPI 40, 2 -> SPI 41; 3 matches nothing
    assert [(s.number, s.trigger) for s in res.specs] == [(40, "level-high"), (41, "edge-rising")]
    assert res.stopped is not None and res.stopped.startswith("entry 2: node /soc/nexus@4000")
    assert "no interrupt-map entry of /soc/nexus@4000 matches" in res.stopped


def test_interrupt_parent_cycle_is_a_located_error() -> None:
    tree = board()
    with pytest.raises(DeviceTreeError) as info:
        resolve_interrupts(tree, tree.node("/soc/loop1"))
    assert info.value.node == "/soc/loop1" and "loops" in info.value.what


def test_wrong_cell_count_is_located() -> None:
    tree = board()
    with pytest.raises(DeviceTreeError, match=r"^node /soc/bad@7000, property interrupts: 2 "
                                              r"cells is not a multiple of #interrupt-cells \(3\)"):
        resolve_interrupts(tree, tree.node("/soc/bad@7000"))
