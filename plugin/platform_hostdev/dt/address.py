"""`reg` entries and their translation to CPU physical addresses.

Follows drivers/of/address.c: a node's `reg` is split by its PARENT's
#address-cells/#size-cells, then each address is carried up through every
ancestor bus's `ranges` (an empty `ranges` is a 1:1 map; a missing one means
the address cannot be translated, as for I2C or SPI children). PCI buses
(device_type "pci") compare the space code of phys.hi as the kernel does.
Sizes are not translated.
"""
from __future__ import annotations

from typing import NamedTuple

from platform_hostdev.dt.tree import Node

__all__ = ["RegEntry", "reg_entries", "first_reg_address", "translate", "Untranslatable"]


class RegEntry(NamedTuple):
    """One `reg` entry: the bus address cells, size and CPU address (None if untranslatable)."""

    index: int  # type: ignore[assignment]  # the field, not tuple.index()
    bus_address: tuple[int, ...]
    size: int
    cpu_address: int | None
    untranslatable_reason: str | None = None


# RegEntry(...) with every field given, without typing.NamedTuple's Python-level __new__
_new_tuple = tuple.__new__


class Untranslatable(Exception):
    """Internal: an address that no `ranges` carries to the CPU (reason in args[0])."""


def _number(cells: tuple[int, ...]) -> int:
    if len(cells) == 2:
        return cells[0] << 32 | cells[1]
    value = 0
    for cell in cells:
        value = (value << 32) | cell
    return value


def _is_pci(node: Node) -> bool:
    return "device_type" in node.properties and node.string("device_type") in ("pci", "pciex")


def reg_entries(node: Node) -> list[RegEntry]:
    """Every `reg` entry of ``node``, each translated (or marked untranslatable).

    Computed once per node (the tree is read-only); callers must not modify the list.
    """
    if "reg" not in node.properties or node.parent is None:
        return []
    found: list[RegEntry] | None = node.memo.get("\0reg")
    if found is None:
        found = node.memo["\0reg"] = _reg_entries(node)
    return found


def first_reg_address(node: Node) -> int | None:
    """The CPU address of reg[0] (of_device_make_bus_id's), None if it does not translate."""
    if "reg" not in node.properties or node.parent is None:
        return None
    found = node.memo.get("\0reg0", False)
    if found is False:
        bus = node.parent
        na = bus.address_cells()
        cells = node.cells("reg")
        found = None
        # a parent bus without ranges (I2C, SPI, MDIO...) stops translate() at once
        if na and len(cells) >= na and ("ranges" in bus.properties or bus.parent is None):
            try:
                found = translate(node, cells[:na])
            except Untranslatable:
                found = None
        node.memo["\0reg0"] = found
    return found


def _reg_entries(node: Node) -> list[RegEntry]:
    assert node.parent is not None
    na = node.parent.address_cells()
    ns = node.parent.size_cells()
    cells = node.cells("reg")
    width = na + ns
    if width == 0:
        raise node.error("reg", "parent has #address-cells = #size-cells = 0")
    if len(cells) % width:
        raise node.error(
            "reg",
            f"{len(cells)} cells is not a multiple of #address-cells ({na}) + #size-cells ({ns})",
            f"fix the reg entries or the #address-cells/#size-cells of {node.parent.path}",
        )
    entries = []
    for index in range(len(cells) // width):
        addr = cells[index * width:index * width + na]
        size = _number(cells[index * width + na:(index + 1) * width])
        try:
            cpu: int | None = translate(node, addr)
            reason = None
        except Untranslatable as exc:
            cpu, reason = None, str(exc)
        entries.append(_new_tuple(RegEntry, (index, addr, size, cpu, reason)))
    return entries


def translate(node: Node, addr: tuple[int, ...]) -> int:
    """Carry a bus address of ``node`` (in its parent's address cells) to the CPU.

    Raises :class:`Untranslatable` with the reason when a bus in between has no
    `ranges` or no range covers the address.
    """
    bus = node.parent
    assert bus is not None
    na = len(addr)
    address = addr
    while bus.parent is not None:
        hop: _Hop | None = bus.memo.get("\0hop")
        if hop is None or hop[0] != na:
            hop = _hop(bus, na)
        _, pna, pci, entries = hop
        if entries is None:  # empty ranges: identity mapping
            address = _to_cells(_number(address), pna, bus, na)
        else:
            address = _map_through(bus, address, entries, na, pna, pci)
        na = pna
        bus = bus.parent
    return _number(address)


# A bus's ranges, read once (the tree is read-only): (child #address-cells, parent
# #address-cells, PCI, entries (space code or -1, child base, size, parent base), or
# None for an empty ranges).
_Hop = tuple[int, int, bool, "list[tuple[int, int, int, int]] | None"]


def _hop(bus: Node, na: int) -> _Hop:
    """What carries an address of ``na`` cells through ``bus``; kept in its memo."""
    if "ranges" not in bus.properties:
        raise Untranslatable(f"{bus.path} has no 'ranges' (its children's addresses are "
                             "local to that bus)")
    assert bus.parent is not None
    pna = bus.parent.address_cells()
    ns = bus.size_cells()
    ranges = bus.cells("ranges")
    pci = False
    entries: list[tuple[int, int, int, int]] | None = None
    if ranges:
        width = na + pna + ns
        if len(ranges) % width:
            raise bus.error(
                "ranges",
                f"{len(ranges)} cells is not a multiple of child #address-cells ({na}) + "
                f"parent #address-cells ({pna}) + #size-cells ({ns})")
        pci = _is_pci(bus) and na == 3
        entries = []
        for i in range(0, len(ranges), width):
            child = ranges[i:i + na]
            space = (child[0] >> 24) & 0x3 if pci else -1
            entries.append((space, _number(child[1:] if pci else child),
                            _number(ranges[i + na + pna:i + width]),
                            _number(ranges[i + na:i + na + pna])))
    hop = bus.memo["\0hop"] = (na, pna, pci, entries)
    return hop


def _to_cells(value: int, count: int, bus: Node, from_cells: int) -> tuple[int, ...]:
    if count == 2 and not value >> 64:
        return (value >> 32, value & 0xFFFFFFFF)
    if count == 1 and not value >> 32:
        return (value,)
    if count == 0:
        if value:
            raise Untranslatable(f"{bus.path}: parent has #address-cells = 0")
        return ()
    if value >> (32 * count):
        raise Untranslatable(f"{bus.path}: address 0x{value:x} does not fit the parent's "
                             f"{count} address cells")
    return tuple((value >> (32 * (count - 1 - i))) & 0xFFFFFFFF for i in range(count))


def _map_through(bus: Node, address: tuple[int, ...], entries: list[tuple[int, int, int, int]],
                 na: int, pna: int, pci: bool) -> tuple[int, ...]:
    if pci:
        space = (address[0] >> 24) & 0x3
        target = _number(address[1:])
    else:
        space = -1
        target = _number(address)
    for child_space, base, size, parent in entries:
        if child_space == space and base <= target < base + size:
            return _to_cells(parent + (target - base), pna, bus, na)
    raise Untranslatable(f"address 0x{target:x} is outside every 'ranges' entry of {bus.path}")
