"""interrupts: parents, decoding by the controller's binding, interrupts-extended,
interrupt-map nexus, cycles."""
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
        node("gpio@1000", {"compatible": "arm,pl061", "reg": [0x1000, 0x100],
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
    assert (specs[1].binding, specs[1].irq_type, specs[1].line) == ("arm,pl061", 2, "gpio 3")


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


ARMCTRL = 7
L1 = 8
GICV3 = 9
SYSIRQ = 10
ROUTER = 11
UNKNOWN = 12
SMP2P_IN = 13


def controllers() -> DeviceTree:
    """One device per controller binding kind, as the kernel's bindings write them."""
    return tree_of(gic_soc(
        node("local-intc@40000000", {"compatible": "brcm,bcm2836-l1-intc",
                                      "reg": [0x40000000, 0x100], "interrupt-controller": True,
                                      "#interrupt-cells": 2, "phandle": L1}),
        node("interrupt-controller@7e00b200", {
            "compatible": "brcm,bcm2836-armctrl-ic", "reg": [0x7e00b200, 0x200],
            "interrupt-controller": True, "#interrupt-cells": 2, "phandle": ARMCTRL,
            "interrupt-parent": L1, "interrupts": [8, 4]}),
        # bcm2837-rpi-3-b's dma-controller@7e007000: banks and lines as Debian's DTB has them
        node("dma-controller@7e007000", {"compatible": "brcm,bcm2835-dma",
                                          "reg": [0x7e007000, 0xf00], "interrupt-parent": ARMCTRL,
                                          "interrupts": [1, 16, 1, 17, 1, 18, 1, 19, 1, 20]}),
        node("timer", {"compatible": "arm,armv7-timer", "interrupt-parent": L1,
                       "interrupts": [0, 8, 1, 8]}),
        node("gic@9000000", {"compatible": "arm,gic-v3", "reg": [0x9000000, 0x10000],
                             "interrupt-controller": True, "#interrupt-cells": 4,
                             "phandle": GICV3}, [
            node("ppi-partitions", {}, [node("little", {"affinity": [0], "phandle": 14})])]),
        node("pmu", {"compatible": "arm,armv8-pmuv3", "interrupt-parent": GICV3,
                     "interrupts": [1, 7, 4, 14, 0, 5, 4, 0, 2, 3, 1, 0]}),
        node("sysirq@10200620", {"compatible": ["mediatek,mt8173-sysirq",
                                                "mediatek,mt6577-sysirq"],
                                 "reg": [0x10200620, 0x20], "interrupt-controller": True,
                                 "#interrupt-cells": 3, "phandle": SYSIRQ}),
        node("uart@11002000", {"compatible": "mediatek,mt6577-uart",
                               "reg": [0x11002000, 0x400], "interrupt-parent": SYSIRQ,
                               "interrupts": [0, 83, 8, 1, 9, 4]}),
        node("interrupt-controller@a00000", {"compatible": "ti,sci-intr",
                                             "interrupt-controller": True,
                                             "#interrupt-cells": 1, "phandle": ROUTER,
                                             "ti,intr-trigger-type": 4}),
        node("gpio@600000", {"compatible": "ti,j721e-gpio", "reg": [0x600000, 0x100],
                             "interrupt-parent": ROUTER, "interrupts": [256, 257]}),
        node("intc@3000", {"compatible": "vendor,unheard-of", "interrupt-controller": True,
                           "#interrupt-cells": 2, "phandle": UNKNOWN}),
        node("dev@4000", {"compatible": "vendor,dev", "reg": [0x4000, 0x100],
                          "interrupt-parent": UNKNOWN, "interrupts": [5, 4]}),
        node("smp2p", {"compatible": "qcom,smp2p"}, [
            node("slave-kernel", {"interrupt-controller": True, "#interrupt-cells": 2,
                                  "phandle": SMP2P_IN})]),
        node("remoteproc@5000", {"compatible": "qcom,msm8916-mss-pil",
                                 "reg": [0x5000, 0x100], "interrupts-extended": [
                                     GIC_PHANDLE, 0, 24, 1, SMP2P_IN, 0, 1]}),
    ))


def test_bcm2836_armctrl_specifiers_are_bank_and_line_all_level() -> None:
    tree = controllers()
    res = resolve_interrupts(tree, tree.node("/soc/dma-controller@7e007000"))
    assert [(s.line, s.trigger, s.irq_type, s.untyped, s.kind) for s in res.specs] == [
        (f"bank 1 irq {n}", "level", 0, True, None) for n in range(16, 21)]
    assert {s.binding for s in res.specs} == {"brcm,bcm2836-armctrl-ic"}


def test_bcm2836_l1_lines_are_per_cpu_with_flags() -> None:
    tree = controllers()
    specs = resolve_interrupts(tree, tree.node("/soc/timer")).specs
    assert [(s.line, s.trigger, s.per_cpu) for s in specs] == [
        ("local 0", "level-low", True), ("local 1", "level-low", True)]


def test_gic_v3_four_cells_partition_and_extended_ranges() -> None:
    tree = controllers()
    specs = resolve_interrupts(tree, tree.node("/soc/pmu")).specs
    assert [(s.kind, s.number, s.hwirq, s.trigger, s.partition) for s in specs] == [
        ("PPI", 7, 23, "level-high", "/soc/gic@9000000/ppi-partitions/little"),
        ("SPI", 5, 37, "level-high", None),
        ("ESPI", 3, 4099, "edge-rising", None),
    ]
    assert specs[0].line == "PPI 7 (partition /soc/gic@9000000/ppi-partitions/little)"


def test_gic_v2_has_no_extended_types() -> None:
    tree = tree_of(gic_soc(node("d@1000", {"compatible": "x", "reg": [0x1000, 4],
                                           "interrupts": [0, 1, 4, 2, 3, 4]})))
    res = resolve_interrupts(tree, tree.node("/soc/d@1000"))
    assert len(res.specs) == 1
    assert res.stopped == ("entry 1: node /soc/d@1000, property interrupts: entry 1: GIC "
                           "interrupt type 2 is not SPI/PPI (a GICv2)")


def test_gic_spi_controllers_take_spis_only() -> None:
    tree = controllers()
    res = resolve_interrupts(tree, tree.node("/soc/uart@11002000"))
    assert [(s.kind, s.number, s.trigger, s.binding) for s in res.specs] == [
        ("SPI", 83, "level-low", "mediatek,mt6577-sysirq")]
    assert res.stopped is not None and "takes GIC SPI specifiers only, not type 1" in res.stopped


def test_ti_sci_router_type_comes_from_its_property() -> None:
    tree = controllers()
    specs = resolve_interrupts(tree, tree.node("/soc/gpio@600000")).specs
    assert [(s.line, s.trigger, s.irq_type) for s in specs] == [
        ("input 256", "level-high", 4), ("input 257", "level-high", 4)]


def test_unknown_binding_decodes_nothing() -> None:
    tree = controllers()
    (spec,) = resolve_interrupts(tree, tree.node("/soc/dev@4000")).specs
    assert (spec.binding, spec.trigger, spec.irq_type, spec.line, spec.decoded) == (
        "", None, None, "0x5 0x4", False)


def test_compatible_less_controller_uses_its_parents_binding() -> None:
    tree = controllers()
    specs = resolve_interrupts(tree, tree.node("/soc/remoteproc@5000")).specs
    assert [(s.controller, s.binding, s.line, s.trigger) for s in specs] == [
        ("/intc@8000000", "arm,gic-400", "SPI 24", "edge-rising"),
        ("/soc/smp2p/slave-kernel", "qcom,smp2p", "bit 0", "edge-rising"),
    ]


def test_a_specifier_of_the_wrong_size_for_its_binding_stops_the_count() -> None:
    tree = tree_of(gic_soc(
        node("intc@1000", {"compatible": "brcm,l2-intc", "reg": [0x1000, 0x10],
                           "interrupt-controller": True, "#interrupt-cells": 2, "phandle": 30}),
        node("d@2000", {"compatible": "x", "reg": [0x2000, 4], "interrupt-parent": 30,
                        "interrupts": [3, 4]})))
    res = resolve_interrupts(tree, tree.node("/soc/d@2000"))
    assert res.specs == [] and res.stopped is not None
    assert "2 cells for /soc/intc@1000, whose binding (brcm,l2-intc) takes 1" in res.stopped
