"""DT-path correlation: what VFIO region i and IRQ i of a device are in the device tree.

The user-space answer to the 2013 RFC that proposed
VFIO_DEVTREE_REGION_INFO_FLAG_PATH. For vfio-platform, region i is the i-th
MEM resource the kernel made from ``reg`` (of_device_alloc() stops at the
first entry that does not translate), IRQ i is the i-th ``interrupts`` entry
(the count stops at the first that does not resolve); vfio-amba exposes
reg[0] only and up to AMBA_NR_IRQS (9) interrupts. Regions are mmap-able when
address and size are page aligned; level interrupts come MASKABLE|AUTOMASKED.

Entanglements are what VFIO does not carry: phandle links to other devices
(clocks, resets, pinctrl...), child nodes with their own reg/interrupts, the
node's own ``ranges``. They make the verdict "complex".
"""
from __future__ import annotations

from typing import Any, NamedTuple

from platform_hostdev.dt.address import reg_entries
from platform_hostdev.dt.interrupts import is_gic, resolve_interrupts
from platform_hostdev.dt.phandles import phandle_links
from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.host.inventory import Device
from platform_hostdev.vfio.uapi import flag_bit

__all__ = [
    "RegionMap", "IrqMap", "Link", "ChildNode", "Correlation", "correlate",
    "PAGE_SIZE",
]

PAGE_SIZE = 4096          # Debian's arm64 kernels use 4 KiB pages
AMBA_NR_IRQS = 9          # include/linux/amba/bus.h
# The VFIO flags to expect, from the one table of the uapi's flag words (vfio.uapi).
_READ_WRITE = flag_bit("region", "READ") | flag_bit("region", "WRITE")
_MMAP = flag_bit("region", "MMAP")
_EDGE_IRQ = flag_bit("irq", "EVENTFD")
_LEVEL_IRQ = _EDGE_IRQ | flag_bit("irq", "MASKABLE") | flag_bit("irq", "AUTOMASKED")

# Links that are the device's own business with the host, not the guest's.
_HOST_SIDE_PROPS = frozenset({"iommus", "interrupt-parent", "interrupts-extended", "msi-parent"})


class RegionMap(NamedTuple):
    index: int  # type: ignore[assignment]  # the field, not tuple.index()
    dt_path: str
    prop: str
    entry: int
    cpu_address: int
    size: int
    mmap: bool
    expected_flags: int


class IrqMap(NamedTuple):
    index: int  # type: ignore[assignment]  # the field, not tuple.index()
    dt_path: str
    prop: str
    entry: int
    controller: str
    specifier: tuple[int, ...]
    kind: str | None
    number: int | None
    trigger: str | None
    expected_flags: int | None  # None when the trigger is unknown


class Link(NamedTuple):
    prop: str
    target: str
    args: tuple[int, ...]


class ChildNode(NamedTuple):
    path: str
    has_reg: bool
    has_interrupts: bool
    compatible: tuple[str, ...]


class Correlation:
    """What VFIO region i and IRQ i of a device are in the device tree, and what VFIO
    does not carry (links to other nodes, child nodes with resources, own ranges)."""

    __slots__ = ("device", "bus", "dt_path", "compatible", "driver", "iommu_group", "regions",
                 "irqs", "links", "children", "own_ranges", "notes", "reasons")

    def __init__(self, device: str, bus: str, dt_path: str, compatible: tuple[str, ...],
                 driver: str | None, iommu_group: str | None) -> None:
        self.device = device
        self.bus = bus
        self.dt_path = dt_path
        self.compatible = compatible
        self.driver = driver
        self.iommu_group = iommu_group
        self.regions: list[RegionMap] = []
        self.irqs: list[IrqMap] = []
        self.links: list[Link] = []
        self.children: list[ChildNode] = []
        self.own_ranges = False
        self.notes: list[str] = []
        self.reasons: list[str] = []

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Correlation):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Correlation({self.device!r}, {self.dt_path!r}, verdict={self.verdict!r})"

    @property
    def verdict(self) -> str:
        return "complex" if self.reasons else "simple"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values: addresses and sizes in hex, tuples as lists."""
        data: dict[str, Any] = {f: getattr(self, f) for f in self.__slots__}
        for key in ("regions", "irqs", "links", "children"):
            data[key] = [item._asdict() for item in data[key]]
        data["notes"] = list(self.notes)
        data["reasons"] = list(self.reasons)
        data["verdict"] = self.verdict
        for region in data["regions"]:
            region["cpu_address"] = hex(region["cpu_address"])
            region["size"] = hex(region["size"])
        for irq in data["irqs"]:
            irq["specifier"] = [hex(v) for v in irq["specifier"]]
        for link in data["links"]:
            link["args"] = list(link["args"])
        for child in data["children"]:
            child["compatible"] = list(child["compatible"])
        data["compatible"] = list(data["compatible"])
        return data


def _irq_flags(trigger: str | None) -> int | None:
    if trigger is None or trigger == "none":
        return None
    if trigger.startswith("level"):
        return _LEVEL_IRQ
    return _EDGE_IRQ


def correlate(tree: DeviceTree, device: Device, page_size: int = PAGE_SIZE) -> Correlation:
    """Tie every VFIO region and IRQ of ``device`` to its DT origin; list entanglements."""
    if device.dt_path is None or device.dt_path not in tree.by_path:
        raise tree.root.error(None, f"device {device.name} has no device-tree node "
                                    f"({device.dt_path or 'no of_node link'})",
                              "only DT-described platform/amba devices can be correlated")
    node = tree.by_path[device.dt_path]
    result = Correlation(device.name, device.bus, node.path, tuple(node.compatible),
                         device.driver, device.iommu_group)
    _regions(node, device.bus, page_size, result)
    _irqs(tree, node, device.bus, result)
    _entanglements(tree, node, result)
    return result


def _regions(node: Node, bus: str, page_size: int, result: Correlation) -> None:
    entries = reg_entries(node)
    if bus == "amba":
        entries = entries[:1]
    for entry in entries:
        if entry.cpu_address is None:
            result.notes.append(f"reg entry {entry.index} does not translate "
                                f"({entry.untranslatable_reason}); VFIO stops before it")
            result.reasons.append(f"reg entry {entry.index} has no CPU address")
            break
        aligned = not (entry.cpu_address % page_size or entry.size % page_size)
        flags = _READ_WRITE | (_MMAP if aligned else 0)
        result.regions.append(RegionMap(len(result.regions), node.path, "reg", entry.index,
                                        entry.cpu_address, entry.size, aligned, flags))
    if not entries and bus == "platform":
        result.notes.append("no reg: VFIO exposes no region")


def _irqs(tree: DeviceTree, node: Node, bus: str, result: Correlation) -> None:
    resolution = resolve_interrupts(tree, node)
    specs = resolution.specs[:AMBA_NR_IRQS] if bus == "amba" else resolution.specs
    if resolution.stopped:
        result.notes.append(f"interrupt count stops at {resolution.stopped}")
        result.reasons.append("an interrupt entry does not resolve to a controller")
    for spec in specs:
        result.irqs.append(IrqMap(spec.index, node.path, spec.prop, spec.index, spec.controller,
                                  spec.specifier, spec.kind, spec.number, spec.trigger,
                                  _irq_flags(spec.trigger)))
        controller = tree.by_path[spec.controller]
        if not is_gic(controller):
            result.reasons.append(f"interrupt {spec.index} goes to {spec.controller}, not the GIC "
                                  "(a guest cannot receive it as a GIC SPI)")
        elif spec.kind != "SPI":
            result.reasons.append(f"interrupt {spec.index} is a GIC {spec.kind}, not an SPI")


def _entanglements(tree: DeviceTree, node: Node, result: Correlation) -> None:
    for link in phandle_links(tree, node):
        result.links.append(Link(link.prop, link.target, link.args))
        if link.prop not in _HOST_SIDE_PROPS:
            result.reasons.append(f"{link.prop} -> {link.target}")
    for child in node.walk():
        if child is node:
            continue
        has_reg = "reg" in child.properties
        has_irq = "interrupts" in child.properties or "interrupts-extended" in child.properties
        if has_reg or has_irq:
            result.children.append(ChildNode(child.path, has_reg, has_irq,
                                             tuple(child.compatible)))
            result.reasons.append(f"child {child.path} has its own "
                                  + " and ".join(w for w, f in (("reg", has_reg),
                                                                ("interrupts", has_irq)) if f)
                                  + " (VFIO does not expose it)")
    if "ranges" in node.properties:
        result.own_ranges = True
        result.reasons.append("the node has its own 'ranges' (a bus: its children are not "
                              "exposed)")
