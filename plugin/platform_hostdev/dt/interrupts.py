"""Interrupt specifiers: which controller, which line, which trigger.

Follows drivers/of/irq.c: ``interrupts-extended`` wins over ``interrupts``;
the parent is found through ``interrupt-parent`` or the ancestors up to the
first node with #interrupt-cells (cycles are errors); nexus nodes with an
``interrupt-map`` are walked to the real controller. ARM GIC specifiers are
decoded (SPI/PPI/ESPI/EPPI, number, trigger). The i-th decoded entry is what
VFIO calls IRQ i; the count stops at the first entry that does not resolve.
"""
from __future__ import annotations

from typing import NamedTuple

from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.errors import DeviceTreeError

__all__ = [
    "IrqSpec", "IrqResolution", "resolve_interrupts", "is_gic",
    "find_interrupt_parent", "TRIGGERS",
]

# include/dt-bindings/interrupt-controller/irq.h
TRIGGERS = {
    0: "none",
    1: "edge-rising",
    2: "edge-falling",
    3: "edge-both",
    4: "level-high",
    8: "level-low",
}
_GIC_COMPATIBLES = frozenset({
    "arm,gic-v3", "arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic",
    "arm,cortex-a7-gic", "arm,gic-v2", "arm,arm11mp-gic", "arm,pl390", "qcom,msm-qgic2",
    "arm,eb11mp-gic", "arm,tc11mp-gic", "arm,arm1176jzf-devchip-gic", "nvidia,tegra210-agic",
})
# GIC specifier cell 0 -> (kind, hwirq offset); arm,gic.yaml and arm,gic-v3.yaml
_GIC_KINDS = {0: ("SPI", 32), 1: ("PPI", 16), 2: ("ESPI", 4096), 3: ("EPPI", 1056)}
_MAX_HOPS = 32


class IrqSpec(NamedTuple):
    """Interrupt entry ``index`` of a node, resolved to its final controller."""

    index: int  # type: ignore[assignment]  # the field, not tuple.index()
    prop: str
    controller: str
    specifier: tuple[int, ...]
    kind: str | None          # "SPI", "PPI", ... for a GIC; None otherwise
    number: int | None        # SPI/PPI number for a GIC; None otherwise
    hwirq: int | None         # the GIC INTID
    trigger: str | None       # "level-high", "edge-rising", ...; None if unknown

    @property
    def level(self) -> bool | None:
        return None if self.trigger is None else self.trigger.startswith("level")


def is_gic(node: Node) -> bool:
    return any(c in _GIC_COMPATIBLES for c in node.compatible)


def find_interrupt_parent(tree: DeviceTree, node: Node) -> Node | None:
    """of_irq_find_parent(): follow interrupt-parent/ancestors to a node with #interrupt-cells."""
    seen: set[int] = set()
    current: Node | None = node
    while current is not None:
        if id(current) in seen:
            raise node.error("interrupt-parent", f"interrupt-parent chain loops at {current.path}")
        seen.add(id(current))
        if "interrupt-parent" in current.properties:
            nxt: Node | None = tree.phandle(current.u32("interrupt-parent"), current,
                                            "interrupt-parent")
        else:
            nxt = current.parent
        if nxt is not None and "#interrupt-cells" in nxt.properties:
            return nxt
        current = nxt
    return None


def _decode(device: Node, index: int, prop: str, controller: Node,
            spec: tuple[int, ...]) -> IrqSpec:
    if is_gic(controller) and len(spec) >= 3:
        kind_offset = _GIC_KINDS.get(spec[0])
        trigger = TRIGGERS.get(spec[2] & 0xF)
        if kind_offset is None:
            raise device.error(prop, f"entry {index}: GIC interrupt type {spec[0]} is not "
                                     "SPI/PPI/ESPI/EPPI")
        kind, offset = kind_offset
        return IrqSpec(index, prop, controller.path, spec, kind, spec[1], spec[1] + offset,
                       trigger)
    trigger = TRIGGERS.get(spec[1] & 0xF) if len(spec) == 2 else None
    return IrqSpec(index, prop, controller.path, spec, None, None, None, trigger)


def _unit_address(node: Node, cells: int) -> tuple[int, ...]:
    if cells == 0:
        return ()
    reg = node.cells("reg") if "reg" in node.properties else ()
    if len(reg) < cells:
        return (0,) * cells
    return reg[:cells]


def _walk_map(tree: DeviceTree, device: Node, parent: Node,
              spec: tuple[int, ...], prop: str) -> tuple[Node, tuple[int, ...]]:
    """of_irq_parse_raw(): descend interrupt-map nexus nodes to the real controller."""
    addr = _unit_address(device, parent.u32("#address-cells", 0)) if "interrupt-map" \
        in parent.properties else ()
    for _ in range(_MAX_HOPS):
        if "interrupt-controller" in parent.properties or "interrupt-map" not in parent.properties:
            if "interrupt-controller" not in parent.properties and \
                    "interrupt-map" not in parent.properties:
                raise device.error(prop, f"interrupt parent {parent.path} is neither an "
                                         "interrupt-controller nor has an interrupt-map")
            return parent, spec
        ncells = parent.u32("#interrupt-cells")
        acells = parent.u32("#address-cells", 0)
        imap = parent.cells("interrupt-map")
        mask = parent.cells("interrupt-map-mask") if "interrupt-map-mask" in parent.properties \
            else (0xFFFFFFFF,) * (acells + ncells)
        key = tuple(v & m for v, m in zip(addr + spec, mask, strict=False))
        pos = 0
        match: tuple[Node, tuple[int, ...], tuple[int, ...]] | None = None
        while pos < len(imap):
            entry_key = imap[pos:pos + acells + ncells]
            child_key = tuple(v & m for v, m in zip(entry_key, mask, strict=False))
            pos += acells + ncells
            if pos >= len(imap):
                raise parent.error("interrupt-map", "entry truncated")
            new_parent = tree.phandle(imap[pos], parent, "interrupt-map")
            pos += 1
            pac = new_parent.u32("#address-cells", 0)
            pic = new_parent.u32("#interrupt-cells")
            if pos + pac + pic > len(imap):
                raise parent.error("interrupt-map", "entry truncated")
            paddr, pspec = imap[pos:pos + pac], imap[pos + pac:pos + pac + pic]
            pos += pac + pic
            if child_key == key:
                match = (new_parent, paddr, pspec)
                break
        if match is None:
            raise device.error(prop, f"no interrupt-map entry of {parent.path} matches "
                                     f"{tuple(hex(v) for v in addr + spec)}")
        parent, addr, spec = match
    raise device.error(prop, f"interrupt-map chain longer than {_MAX_HOPS} hops (a loop?)")


class IrqResolution(NamedTuple):
    """The resolved entries, and why the count stopped early (None if it did not)."""

    specs: list[IrqSpec]
    stopped: str | None


def resolve_interrupts(tree: DeviceTree, node: Node) -> IrqResolution:
    """The node's interrupts in VFIO index order, each resolved and decoded.

    Stops at the first entry that cannot be resolved, as the kernel's count
    does, and says why; a malformed property (wrong length, parent loop) is a
    DeviceTreeError.
    """
    result: list[IrqSpec] = []
    if "interrupts-extended" in node.properties:
        cells = node.cells("interrupts-extended")
        pos = 0
        while pos < len(cells):
            controller = tree.phandle(cells[pos], node, "interrupts-extended")
            count = controller.u32("#interrupt-cells")
            spec = cells[pos + 1:pos + 1 + count]
            if len(spec) != count:
                raise node.error("interrupts-extended", f"entry {len(result)} is truncated")
            pos += 1 + count
            try:
                final, final_spec = _walk_map(tree, node, controller, spec, "interrupts-extended")
                decoded = _decode(node, len(result), "interrupts-extended", final, final_spec)
            except DeviceTreeError as exc:
                return IrqResolution(result, f"entry {len(result)}: {exc.what}")
            result.append(decoded)
        return IrqResolution(result, None)
    if "interrupts" not in node.properties:
        return IrqResolution(result, None)
    parent = find_interrupt_parent(tree, node)
    if parent is None:
        raise node.error("interrupts", "no interrupt parent found (no interrupt-parent and no "
                                       "ancestor with #interrupt-cells)")
    count = parent.u32("#interrupt-cells")
    cells = node.cells("interrupts")
    if count == 0 or len(cells) % count:
        raise node.error("interrupts", f"{len(cells)} cells is not a multiple of "
                                       f"#interrupt-cells ({count}) of {parent.path}")
    for index in range(len(cells) // count):
        spec = cells[index * count:(index + 1) * count]
        try:
            final, final_spec = _walk_map(tree, node, parent, spec, "interrupts")
            decoded = _decode(node, index, "interrupts", final, final_spec)
        except DeviceTreeError as exc:
            return IrqResolution(result, f"entry {index}: {exc.what}")
        result.append(decoded)
    return IrqResolution(result, None)
