"""Interrupt specifiers: which controller, which line, which trigger.

Follows drivers/of/irq.c: ``interrupts-extended`` wins over ``interrupts``;
the parent is found through ``interrupt-parent`` or the ancestors up to the
first node with #interrupt-cells (cycles are errors); nexus nodes with an
``interrupt-map`` are walked to the real controller. The specifier is then
decoded by the controller's binding (:mod:`platform_hostdev.dt.irq_bindings`):
GIC SPI/PPI/ESPI/EPPI, the controllers with a ``<... flags>`` cell, the
exceptions; a binding that is not modelled decodes nothing. The i-th decoded
entry is what VFIO calls IRQ i; the count stops at the first entry that does
not resolve. ``#interrupt-cells``, and a nexus's ``#address-cells`` +
``#interrupt-cells``, are held to MAX_PHANDLE_ARGS before any cell is read
(:mod:`platform_hostdev.dt.limits`).
"""
from __future__ import annotations

from typing import NamedTuple

from platform_hostdev.dt.irq_bindings import (
    IRQ_TYPE_SENSE_MASK,
    Binding,
    binding_for,
)
from platform_hostdev.dt.limits import MAX_IRQ_MAP_HOPS, MAX_PHANDLE_ARGS
from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.errors import DeviceTreeError

__all__ = [
    "IrqSpec", "IrqResolution", "resolve_interrupts", "is_gic", "controller_binding",
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
# GIC specifier cell 0 -> (kind, hwirq offset); arm,gic.yaml and arm,gic-v3.yaml
_GIC_KINDS = {0: ("SPI", 32), 1: ("PPI", 16), 2: ("ESPI", 4096), 3: ("EPPI", 1056)}
_GIC_V2_TYPES = frozenset({0, 1})
_new_tuple = tuple.__new__


class IrqSpec(NamedTuple):
    """Interrupt entry ``index`` of a node, resolved to its final controller and decoded."""

    index: int  # type: ignore[assignment]  # shadows tuple.index
    prop: str
    controller: str
    specifier: tuple[int, ...]
    kind: str | None          # "SPI", "PPI", "ESPI", "EPPI" on a GIC; None otherwise
    number: int | None        # SPI/PPI number on a GIC; None otherwise
    hwirq: int | None         # the GIC INTID; None otherwise
    trigger: str | None       # "level-high", "edge-rising", "level" ...; None if unknown
    binding: str = ""         # the compatible whose binding decoded it ("" if none known)
    irq_type: int | None = None  # the IRQ_TYPE_* the kernel records; None if unknown
    line: str = ""            # "SPI 63", "bank 1 irq 16", "pin 5"; the raw cells if unknown
    untyped: bool = False     # the kernel can never record a trigger type for this line
    per_cpu: bool = False     # a per-CPU line (GIC PPI/EPPI or a per-CPU controller)
    partition: str | None = None  # GICv3 PPI partition node, when the 4th cell names one

    @property
    def level(self) -> bool | None:
        return None if self.trigger is None or self.trigger == "none" \
            else self.trigger.startswith("level")

    @property
    def decoded(self) -> bool:
        return self.irq_type is not None or self.kind is not None


def controller_binding(node: Node) -> Binding:
    """The binding that decodes specifiers sent to controller ``node`` (found once a node)."""
    found: Binding | None = node.memo.get("\0binding")
    if found is None:
        parent = node.parent.compatible if node.parent is not None else ()
        found = node.memo["\0binding"] = binding_for(node.compatible,
                                                       () if node.compatible else parent)
    return found


def is_gic(node: Node) -> bool:
    return controller_binding(node).decoder == "gic"


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


def _raw(spec: tuple[int, ...]) -> str:
    return " ".join(hex(v) for v in spec)


def _decode(tree: DeviceTree, device: Node, index: int, prop: str, controller: Node,
            spec: tuple[int, ...]) -> IrqSpec:
    binding = controller_binding(controller)
    where = f"entry {index}: "
    if binding.decoder == "unknown":
        return IrqSpec(index, prop, controller.path, spec, None, None, None, None,
                       line=_raw(spec))
    if len(spec) not in binding.cells:
        raise device.error(prop, f"{where}{len(spec)} cells for {controller.path}, whose "
                                 f"binding ({binding.key}) takes "
                                 + " or ".join(str(c) for c in binding.cells))
    if binding.decoder == "gic":
        return _decode_gic(tree, device, index, prop, controller, spec, binding)
    if binding.decoder == "gic-spi":
        if spec[0] != 0:
            raise device.error(prop, f"{where}{controller.path} ({binding.key}) takes GIC SPI "
                                     f"specifiers only, not type {spec[0]}")
        spi_type = spec[2] & IRQ_TYPE_SENSE_MASK
        return IrqSpec(index, prop, controller.path, spec, "SPI", spec[1], spec[1] + 32,
                       TRIGGERS.get(spi_type), binding.key, spi_type, f"SPI {spec[1]}")
    # "cells"
    irq_type: int | None
    if binding.type_property is not None:
        irq_type = controller.u32(binding.type_property) & IRQ_TYPE_SENSE_MASK \
            if binding.type_property in controller.properties else None
        named = spec
    elif binding.flags_cell is not None and binding.flags_cell < len(spec):
        irq_type = spec[binding.flags_cell] & IRQ_TYPE_SENSE_MASK
        named = spec[:binding.flags_cell] + spec[binding.flags_cell + 1:]
    else:
        irq_type = 0
        named = spec
    trigger = TRIGGERS.get(irq_type) if irq_type is not None else None
    if irq_type == 0 and binding.line is not None:
        trigger = binding.line
    line = " ".join(f"{name} {value}" for name, value in zip(binding.names, named, strict=False))
    return IrqSpec(index, prop, controller.path, spec, None, None, None, trigger, binding.key,
                   irq_type, line or _raw(spec), untyped=binding.untyped,
                   per_cpu=binding.per_cpu)


def _decode_gic(tree: DeviceTree, device: Node, index: int, prop: str, controller: Node,
                spec: tuple[int, ...], binding: Binding) -> IrqSpec:
    kind_offset = _GIC_KINDS.get(spec[0])
    if kind_offset is None or (not binding.extended and spec[0] not in _GIC_V2_TYPES):
        allowed = "SPI/PPI/ESPI/EPPI" if binding.extended else "SPI/PPI (a GICv2)"
        raise device.error(prop, f"entry {index}: GIC interrupt type {spec[0]} is not {allowed}")
    kind, offset = kind_offset
    irq_type = spec[2] & IRQ_TYPE_SENSE_MASK
    partition = None
    line = f"{kind} {spec[1]}"
    if len(spec) == 4 and spec[3]:
        if kind not in ("PPI", "EPPI"):
            raise device.error(prop, f"entry {index}: the 4th cell (a PPI partition) must be 0 "
                                     f"for a GIC {kind}")
        partition = tree.phandle(spec[3], device, prop).path
        line += f" (partition {partition})"
    # IrqSpec(...) with every field (untyped False), without NamedTuple's Python __new__
    return _new_tuple(IrqSpec, (index, prop, controller.path, spec, kind, spec[1],
                                spec[1] + offset, TRIGGERS.get(irq_type), binding.key, irq_type,
                                line, False, kind in ("PPI", "EPPI"), partition))


def _unit_address(node: Node, cells: int) -> tuple[int, ...]:
    if cells == 0:
        return ()
    reg = node.cells("reg") if "reg" in node.properties else ()
    if len(reg) < cells:
        return (0,) * cells
    return reg[:cells]


def _nexus_cells(node: Node, what: str) -> tuple[int, int]:
    """A nexus's or map target's (#address-cells, #interrupt-cells), their sum held to
    MAX_PHANDLE_ARGS as of_irq_parse_raw() / of_irq_parse_imap_parent() hold it."""
    acells = node.u32("#address-cells", 0)
    icells = node.u32("#interrupt-cells")
    if acells + icells > MAX_PHANDLE_ARGS:
        prop = "#interrupt-cells" if icells > MAX_PHANDLE_ARGS else "#address-cells"
        raise node.error(prop, f"as {what}, #address-cells ({acells}) + #interrupt-cells "
                               f"({icells}) is more than the {MAX_PHANDLE_ARGS} cells Linux "
                               "supports (MAX_PHANDLE_ARGS in include/linux/of.h; "
                               "drivers/of/irq.c of_irq_parse_raw())",
                         f"set #address-cells and #interrupt-cells of {node.path} to what its "
                         f"binding says (together at most {MAX_PHANDLE_ARGS}) and rebuild the "
                         "DTB")
    return acells, icells


def _walk_map(tree: DeviceTree, device: Node, parent: Node,
              spec: tuple[int, ...], prop: str) -> tuple[Node, tuple[int, ...]]:
    """of_irq_parse_raw(): descend interrupt-map nexus nodes to the real controller."""
    addr: tuple[int, ...] = ()
    if "interrupt-map" in parent.properties and "interrupt-controller" not in parent.properties:
        addr = _unit_address(device, _nexus_cells(parent, "an interrupt nexus")[0])
    for _ in range(MAX_IRQ_MAP_HOPS):
        if "interrupt-controller" in parent.properties or "interrupt-map" not in parent.properties:
            if "interrupt-controller" not in parent.properties and \
                    "interrupt-map" not in parent.properties:
                raise device.error(prop, f"interrupt parent {parent.path} is neither an "
                                         "interrupt-controller nor has an interrupt-map")
            return parent, spec
        acells, ncells = _nexus_cells(parent, "an interrupt nexus")
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
            pac, pic = _nexus_cells(new_parent, f"a target of {parent.path}'s interrupt-map")
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
    raise device.error(prop, f"interrupt-map chain longer than {MAX_IRQ_MAP_HOPS} hops (a "
                             "loop?)")


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
            count = controller.cell_count("#interrupt-cells")
            spec = cells[pos + 1:pos + 1 + count]
            if len(spec) != count:
                raise node.error("interrupts-extended", f"entry {len(result)} is truncated")
            pos += 1 + count
            try:
                final, final_spec = _walk_map(tree, node, controller, spec, "interrupts-extended")
                decoded = _decode(tree, node, len(result), "interrupts-extended", final,
                                  final_spec)
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
    count = parent.cell_count("#interrupt-cells")
    cells = node.cells("interrupts")
    if count == 0 or len(cells) % count:
        raise node.error("interrupts", f"{len(cells)} cells is not a multiple of "
                                       f"#interrupt-cells ({count}) of {parent.path}")
    for index in range(len(cells) // count):
        spec = cells[index * count:(index + 1) * count]
        try:
            final, final_spec = _walk_map(tree, node, parent, spec, "interrupts")
            decoded = _decode(tree, node, index, "interrupts", final, final_spec)
        except DeviceTreeError as exc:
            return IrqResolution(result, f"entry {index}: {exc.what}")
        result.append(decoded)
    return IrqResolution(result, None)
