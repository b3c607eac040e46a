"""DT-path correlation: what VFIO region i and IRQ i of a device are in the device tree.

The user-space answer to the 2013 RFC that proposed
VFIO_DEVTREE_REGION_INFO_FLAG_PATH. For vfio-platform, region i is the i-th
MEM resource the kernel made from ``reg`` (of_device_alloc() stops at the
first entry that does not translate), IRQ i is the i-th ``interrupts`` entry
(the count stops at the first that does not resolve); vfio-amba exposes
reg[0] only and up to AMBA_NR_IRQS (9) interrupts. Regions are mmap-able when
address and size are aligned to the page size of the host's kernel; an
interrupt whose recorded trigger type is level comes MASKABLE|AUTOMASKED
(vfio_platform_irq_init), one the kernel records no type for comes EVENTFD
only, and one whose controller's binding is unknown is not judged.

Entanglements are what VFIO does not carry: phandle links from the node or
its descendants to nodes outside the device (clocks, resets, pinctrl...),
child nodes with CPU-addressed reg or with interrupts, the node's own
``ranges``. They make the verdict "complex". Links into the device's own
subtree (a MAC's ``phy-handle`` to the PHY on its own MDIO bus) and child
``reg`` that does not translate to a CPU address (an MDIO or I2C address) are
internal: the guest node carries the subtree.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from platform_hostdev.dt.address import first_reg_address, reg_entries
from platform_hostdev.dt.interrupts import IrqSpec, is_gic, resolve_interrupts
from platform_hostdev.dt.irq_bindings import IRQ_TYPE_EDGE_BOTH, IRQ_TYPE_LEVEL_MASK
from platform_hostdev.dt.phandles import phandle_links
from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.host.inventory import Device
from platform_hostdev.host.pagesize import PageSize
from platform_hostdev.vfio.uapi import flag_bit

__all__ = [
    "RegionMap", "IrqMap", "Link", "ChildNode", "Correlation", "correlate", "expected_irq_flags",
]

AMBA_NR_IRQS = 9          # include/linux/amba/bus.h
# The VFIO flags to expect, from the one table of the uapi's flag words (vfio.uapi).
_READ_WRITE = flag_bit("region", "READ") | flag_bit("region", "WRITE")
_MMAP = flag_bit("region", "MMAP")
_EDGE_IRQ = flag_bit("irq", "EVENTFD")
_LEVEL_IRQ = _EDGE_IRQ | flag_bit("irq", "MASKABLE") | flag_bit("irq", "AUTOMASKED")

# Link(...), IrqMap(...), RegionMap(...) with every field given, without the Python-level
# __new__ typing.NamedTuple adds
_new_tuple = tuple.__new__
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
    expected_flags: int | None  # None when the recorded trigger type is unknown
    line: str = ""              # "SPI 63", "bank 1 irq 16"; the raw cells when not decoded
    binding: str = ""           # the controller compatible whose binding decoded it; "" unknown


class Link(NamedTuple):
    prop: str
    target: str
    args: tuple[int, ...]
    source: str = ""        # the node holding the property (the device or a descendant)
    internal: bool = False  # the target lies in the device's own subtree


class ChildNode(NamedTuple):
    path: str
    has_reg: bool
    has_interrupts: bool
    compatible: tuple[str, ...]
    cpu_reg: bool = False   # its reg[0] translates to a CPU address (MMIO VFIO does not expose)

    @property
    def internal(self) -> bool:
        """Carried by the guest node: no CPU-addressed reg, no interrupts of its own."""
        return not self.cpu_reg and not self.has_interrupts


class Correlation:
    """What VFIO region i and IRQ i of a device are in the device tree, and what VFIO
    does not carry (links to other nodes, child nodes with resources, own ranges)."""

    __slots__ = ("device", "bus", "dt_path", "compatible", "driver", "iommu_group", "page_size",
                 "page_size_source", "regions", "irqs", "links", "children", "own_ranges",
                 "notes", "reasons")

    def __init__(self, device: str, bus: str, dt_path: str, compatible: tuple[str, ...],
                 driver: str | None, iommu_group: str | None, page_size: int = 4096,
                 page_size_source: str = "") -> None:
        self.device = device
        self.bus = bus
        self.dt_path = dt_path
        self.compatible = compatible
        self.driver = driver
        self.iommu_group = iommu_group
        self.page_size = page_size  # the host kernel's (or --dtb's), deciding mmap-ability
        self.page_size_source = page_size_source
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
        for child, entry in zip(self.children, data["children"], strict=True):
            entry["compatible"] = list(entry["compatible"])
            entry["internal"] = child.internal
        data["compatible"] = list(data["compatible"])
        return data


def expected_irq_flags(spec: IrqSpec) -> int | None:
    """The VFIO IRQ flags vfio_platform_irq_init() gives a line: from the recorded trigger type.

    ``irq_get_trigger_type() & IRQ_TYPE_LEVEL_MASK`` makes it MASKABLE|AUTOMASKED;
    a line the kernel never records a type for is EVENTFD only; an untyped line
    of a chip that can record one later, or an unknown binding, is not judged.
    """
    if spec.irq_type is None:
        return None
    if spec.irq_type & IRQ_TYPE_LEVEL_MASK:
        return _LEVEL_IRQ
    if spec.irq_type & IRQ_TYPE_EDGE_BOTH or spec.untyped:
        return _EDGE_IRQ
    return None


def correlate(tree: DeviceTree, device: Device, page_size: PageSize) -> Correlation:
    """Tie every VFIO region and IRQ of ``device`` to its DT origin; list entanglements.

    ``page_size`` is the page size of the host's kernel (``Inventory.page_size()``).
    """
    if device.dt_path is None or device.dt_path not in tree.by_path:
        raise tree.root.error(None, f"device {device.name} has no device-tree node "
                                    f"({device.dt_path or 'no of_node link'})",
                              "only DT-described platform/amba devices can be correlated")
    node = tree.by_path[device.dt_path]
    result = Correlation(device.name, device.bus, node.path, tuple(node.compatible),
                         device.driver, device.iommu_group, page_size.size, page_size.source)
    _regions(node, device.bus, page_size.size, result)
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
        result.regions.append(_new_tuple(RegionMap, (len(result.regions), node.path, "reg",
                                                     entry.index, entry.cpu_address, entry.size,
                                                     aligned, flags)))
    if not entries and bus == "platform":
        result.notes.append("no reg: VFIO exposes no region")


def _irqs(tree: DeviceTree, node: Node, bus: str, result: Correlation) -> None:
    resolution = resolve_interrupts(tree, node)
    specs = resolution.specs[:AMBA_NR_IRQS] if bus == "amba" else resolution.specs
    if resolution.stopped:
        result.notes.append(f"interrupt count stops at {resolution.stopped}")
        result.reasons.append("an interrupt entry does not resolve to a controller")
    for spec in specs:
        flags = expected_irq_flags(spec)
        result.irqs.append(_new_tuple(IrqMap, (spec.index, node.path, spec.prop, spec.index,
                                               spec.controller, spec.specifier, spec.kind,
                                               spec.number, spec.trigger, flags, spec.line,
                                               spec.binding)))
        controller = tree.by_path[spec.controller]
        if not spec.binding:
            compat = controller.compatible[0] if controller.compatible else "no compatible"
            result.notes.append(f"interrupt {spec.index} goes to {spec.controller} ({compat}), "
                                "whose binding is not known: its specifier "
                                f"<{spec.line}> is not decoded")
        if not is_gic(controller):
            result.reasons.append(f"interrupt {spec.index} goes to {spec.controller}, not the GIC "
                                  "(a guest cannot receive it as a GIC SPI)")
        elif spec.kind != "SPI":
            result.reasons.append(f"interrupt {spec.index} is a GIC {spec.kind}, not an SPI")
        if spec.level and flags == _EDGE_IRQ:
            result.reasons.append(
                f"interrupt {spec.index} is a level line the kernel records no trigger type for: "
                "vfio-platform offers it as an edge (EVENTFD only, not AUTOMASKED), so the host "
                "would take it again and again until the guest clears the device")


def _entanglements(tree: DeviceTree, node: Node, result: Correlation) -> None:
    own = node.path
    # A bus (own 'ranges') has devices of its own below it: its own links count, and its
    # children are listed (each is correlated on its own), not their subtrees.
    bus = "ranges" in node.properties
    holders = [node, *node.children] if bus else node.walk()
    below = own + "/"
    links = result.links
    reasons = result.reasons
    for holder in holders:
        if holder is node or not bus:
            for prop, _, target, args in phandle_links(tree, holder):
                internal = target == own or target.startswith(below)
                links.append(_new_tuple(Link, (prop, target, args, holder.path, internal)))
                if internal or prop in _HOST_SIDE_PROPS:
                    continue
                where = "" if holder is node else f" (from {holder.path})"
                reasons.append(f"{prop} -> {target}{where}")
            if holder is node:
                continue
        props = holder.properties
        has_reg = "reg" in props
        has_irq = "interrupts" in props or "interrupts-extended" in props
        if not (has_reg or has_irq):
            continue
        # reg[0] on the CPU's address map (the same translation that names devices)
        cpu_reg = has_reg and first_reg_address(holder) is not None
        result.children.append(ChildNode(holder.path, has_reg, has_irq, holder.compatible,
                                         cpu_reg))
        if cpu_reg or has_irq:
            own_resources = ("reg and interrupts" if has_irq else "reg") if cpu_reg \
                else "interrupts"
            reasons.append(f"child {holder.path} has its own {own_resources} (VFIO does not "
                           "expose it)")
    if "ranges" in node.properties:
        result.own_ranges = True
        result.reasons.append("the node has its own 'ranges' (a bus: its children are not "
                              "exposed)")
