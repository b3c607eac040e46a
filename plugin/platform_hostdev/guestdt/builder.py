"""The guest device tree for platform passthrough devices.

QEMU builds guest nodes only for two 2013-era NICs; for every other
vfio-platform device it exits ("can not be dynamically instantiated") unless
the domain boots with its own DTB (``-dtb``), in which case QEMU adds no
platform-bus nodes at all. So we start from QEMU's own DT for the domain's
exact machine (``-machine dumpdtb=``) and add one node per passthrough
device under /platform-bus@c000000, at the addresses and SPIs the platform
bus will assign (:mod:`platform_bus`), built from the host node: properties
copied, ``reg``/``interrupts`` rewritten, host-only links handled by the
rules in :mod:`platform_hostdev.guestdt.rules`. The device's own subtree is
carried along: child nodes keep their bus-local ``reg`` (an MDIO or I2C
address), and links into the subtree (a MAC's ``phy-handle`` to its own PHY)
are rewritten to the guest copies' phandles.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from platform_hostdev.domain.rules import refuse_non_platform
from platform_hostdev.dt.fdt import RawNode
from platform_hostdev.dt.phandles import phandle_cells, phandle_links
from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.platform_bus import (
    VIRT_PLATFORM_BUS_BASE,
    BusDevice,
    Placement,
    allocate,
)
from platform_hostdev.guestdt.rules import fixup_for, property_policy
from platform_hostdev.vfio.correlate import Correlation

__all__ = ["GuestRegion", "GuestIrq", "GuestDevice", "GuestTree", "build_guest_tree",
           "bus_device_for", "dt_clock_rate", "PLATFORM_BUS_PATH"]

PLATFORM_BUS_PATH = f"/platform-bus@{VIRT_PLATFORM_BUS_BASE:x}"
_GIC_SPI = 0
_GIC_EDGE_RISING = 1
_GIC_LEVEL_HIGH = 4

ClockRate = Callable[[DeviceTree, Node, str, tuple[int, ...]], "int | None"]


@dataclass(frozen=True)
class GuestRegion:
    vfio_index: int
    host_address: int
    size: int
    guest_address: int


@dataclass(frozen=True)
class GuestIrq:
    vfio_index: int
    host_line: str       # "SPI 63" or the raw specifier
    guest_spi: int
    trigger: str         # "level-high" or "edge-rising" (what a GIC SPI can be)


@dataclass
class GuestDevice:
    """The full chain for one device: host DT -> VFIO -> guest address/SPI -> guest DT."""

    name: str
    host_path: str
    guest_path: str
    regions: list[GuestRegion] = field(default_factory=list)
    irqs: list[GuestIrq] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class GuestTree:
    root: RawNode
    devices: list[GuestDevice]


def _cells(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v) for v in values)


def bus_device_for(correlation: Correlation) -> BusDevice:
    """What QEMU's platform bus sees of a vfio-platform device: VFIO regions and IRQs."""
    return BusDevice(correlation.device, tuple(r.size for r in correlation.regions),
                     len(correlation.irqs))


def dt_clock_rate(tree: DeviceTree, device: Node, target: str,
                  args: tuple[int, ...]) -> int | None:
    """A clock's rate when the device tree states it: a fixed-clock, or assigned-clock-rates."""
    node = tree.by_path[target]
    if "fixed-clock" in node.compatible and "clock-frequency" in node.properties:
        return node.u32("clock-frequency")
    if "assigned-clocks" in device.properties and "assigned-clock-rates" in device.properties:
        rates = device.cells("assigned-clock-rates")
        assigned = [lk for lk in phandle_links(tree, device) if lk.prop == "assigned-clocks"]
        for link, rate in zip(assigned, rates, strict=False):
            if link.target == target and link.args == args and rate:
                return rate
    return None


def _refuse(device: str, problem: str, fix: str) -> HostdevError:
    return HostdevError(f"device {device} cannot be given to a guest: {problem}", fix,
                        code="guest-dt-failed")


class _Builder:
    def __init__(self, base: RawNode, host: DeviceTree, clock_rate: ClockRate) -> None:
        self.base = base
        self.host = host
        self.clock_rate = clock_rate
        self.next_phandle = _max_phandle(base) + 1
        bus = next((c for c in base.children if c.name == PLATFORM_BUS_PATH[1:]), None)
        if bus is None:
            raise HostdevError(
                f"QEMU's device tree has no {PLATFORM_BUS_PATH} node",
                "the machine must be the arm 'virt' machine (other machines have no "
                "platform bus for vfio-platform)", code="guest-dt-failed")
        self.bus = bus

    def phandle(self) -> int:
        value = self.next_phandle
        self.next_phandle += 1
        return value

    def add(self, corr: Correlation, placement: Placement) -> GuestDevice:
        node = self.host.by_path[corr.dt_path]
        fixup = fixup_for(corr.compatible)
        outside = [c for c in corr.children if not c.internal]
        if outside:
            raise _refuse(corr.device, f"its child node {outside[0].path} has its own "
                          + ("interrupts" if outside[0].has_interrupts else "CPU-addressed reg")
                          + ", which VFIO does not expose",
                          "pass the whole parent device instead, or none")
        if corr.own_ranges:
            raise _refuse(corr.device, "it is a bus (own 'ranges')", "pass a leaf device")
        for irq in corr.irqs:
            if irq.kind not in ("SPI", None) or irq.trigger in (None, "none"):
                raise _refuse(corr.device, f"interrupt {irq.index} ({irq.kind or 'unknown'} "
                              f"{irq.trigger or 'without trigger'}) cannot become a guest SPI",
                              "only devices with GIC SPIs can be passed through")
        guest_name = f"{node.basename}@{placement.regions[0][0]:x}" if placement.regions \
            else node.basename
        out = RawNode(guest_name)
        result = GuestDevice(corr.device, node.path, f"{PLATFORM_BUS_PATH}/{guest_name}")
        if fixup.note:
            result.notes.append(fixup.note)
        # guest phandles for the subtree's own link targets (the device itself included)
        handles = {lk.target: 0 for lk in corr.links if lk.internal}
        for target in handles:
            handles[target] = self.phandle()
        clocks_done = False
        for prop, value in node.properties.items():
            policy = "drop" if prop in fixup.drop else property_policy(prop)
            if prop in fixup.allow and policy == "refuse":
                policy = "drop-report"
            internal = None if policy == "drop" else \
                self._internal_link(node, prop, value, handles)
            if internal is not None:
                out.properties[prop] = internal
                result.notes.append(f"{prop} points into its own subtree: rewritten to the "
                                    "guest copy")
            elif policy == "copy":
                out.properties[prop] = value
            elif policy == "drop-report":
                result.notes.append(f"{prop} dropped (the host keeps managing it)")
            elif policy == "refuse":
                targets = sorted({lk.target for lk in phandle_links(self.host, node)
                                  if lk.prop == prop})
                linked = ", ".join(targets) or "another node"
                raise _refuse(corr.device, f"{prop} links it to {linked}, which the guest "
                              "does not have",
                              "pass a device without such links (see 'platform-hostdev show "
                              f"{corr.device}')")
            elif policy == "clock-stub" and not clocks_done:
                out.properties["clocks"] = self._clock_stubs(corr.device, node, result)
                clocks_done = True
        names = set(node.strings("clock-names"))
        missing = [c for c in fixup.required_clocks if c not in names]
        if missing:
            raise _refuse(corr.device, f"its driver needs clocks {', '.join(missing)}, which "
                          "the host node does not name", "check the host DT's clock-names")
        out.properties.update(fixup.set_properties)
        out.properties["reg"] = b"".join(_cells(offset, size)
                                         for offset, size in placement.regions)
        if corr.irqs:
            spec = b""
            for irq, spi in zip(corr.irqs, placement.spis, strict=True):
                level = irq.trigger is not None and irq.trigger.startswith("level")
                spec += _cells(_GIC_SPI, spi, _GIC_LEVEL_HIGH if level else _GIC_EDGE_RISING)
                result.irqs.append(GuestIrq(
                    irq.index,
                    f"{irq.kind} {irq.number}" if irq.kind else
                    " ".join(hex(v) for v in irq.specifier),
                    spi, "level-high" if level else "edge-rising"))
            out.properties["interrupts"] = spec
        for region, (offset, size) in zip(corr.regions, placement.regions, strict=True):
            result.regions.append(GuestRegion(region.index, region.cpu_address, size,
                                              placement.base + offset))
        if node.path in handles:
            out.properties["phandle"] = _cells(handles[node.path])
        for child in node.children:
            out.children.append(self._copy_child(corr.device, child, handles))
        self.bus.children.append(out)
        return result

    def _internal_link(self, node: Node, prop: str, value: bytes,
                       handles: dict[str, int]) -> bytes | None:
        """``value`` with its phandles renumbered when every one points into the subtree."""
        if not handles or prop in ("phandle", "linux,phandle"):
            return None
        refs = phandle_cells(self.host, node, prop)
        if not refs or any(target not in handles for _, target in refs):
            return None
        cells = bytearray(value)
        for pos, target in refs:
            cells[pos * 4:pos * 4 + 4] = _cells(handles[target])
        return bytes(cells)

    def _clock_stubs(self, device: str, node: Node, result: GuestDevice) -> bytes:
        value = b""
        for link in phandle_links(self.host, node):
            if link.prop != "clocks":
                continue
            rate = self.clock_rate(self.host, node, link.target, link.args)
            if rate is None:
                raise _refuse(device, f"the rate of its clock {link.target} "
                              f"{list(link.args)} is not known from the device tree",
                              "a guest gets fixed clocks only; pass a device whose clocks are "
                              "fixed-clock nodes or have assigned-clock-rates")
            stub = RawNode(f"phd-clk-{device.replace('.', '-')}-{len(value) // 4}")
            handle = self.phandle()
            stub.properties.update({
                "compatible": b"fixed-clock\0",
                "#clock-cells": _cells(0),
                "clock-frequency": _cells(rate),
                "phandle": _cells(handle),
            })
            self.base.children.append(stub)
            value += _cells(handle)
            result.notes.append(f"clock {link.target} {list(link.args)} -> fixed-clock "
                                f"/{stub.name} at {rate} Hz")
        return value

    def _copy_child(self, device: str, child: Node, handles: dict[str, int]) -> RawNode:
        """A child of the device as the guest has it: bus-local reg and status kept."""
        out = RawNode(child.name)
        for prop, value in child.properties.items():
            # the correlation refused children with CPU-addressed reg or interrupts, so what
            # reg is left is an address on the device's own bus (MDIO, I2C, SPI)
            policy = "copy" if prop in ("reg", "status") else property_policy(prop)
            internal = None if policy == "drop" else \
                self._internal_link(child, prop, value, handles)
            if internal is not None:
                out.properties[prop] = internal
            elif policy == "copy":
                out.properties[prop] = value
            elif policy in ("refuse", "clock-stub"):
                raise _refuse(device, f"its child {child.path} links elsewhere through {prop}",
                              "pass a device without such links")
        if child.path in handles:
            out.properties["phandle"] = _cells(handles[child.path])
        out.children = [self._copy_child(device, c, handles) for c in child.children]
        return out


def _max_phandle(root: RawNode) -> int:
    best = 0
    stack = [root]
    while stack:
        node = stack.pop()
        for prop in ("phandle", "linux,phandle"):
            raw = node.properties.get(prop)
            if raw is not None and len(raw) == 4:
                best = max(best, int.from_bytes(raw, "big"))
        stack.extend(node.children)
    return best


def build_guest_tree(base: RawNode, host: DeviceTree, correlations: Sequence[Correlation],
                     other_bus_devices: Sequence[BusDevice] = (),
                     clock_rate: ClockRate = dt_clock_rate) -> GuestTree:
    """Add the passthrough devices to QEMU's DT (``base``, modified in place).

    ``correlations`` are the domain's vfio-platform devices in command-line
    order; ``other_bus_devices`` are dynamic sysbus devices QEMU creates before
    them (they take platform-bus space first).
    """
    for correlation in correlations:
        try:
            refuse_non_platform(correlation.device, correlation.bus, correlation.dt_path)
        except HostdevError as exc:  # the rule's code: the same refusal as define's
            raise HostdevError(f"device {correlation.device} cannot be given to a guest: "
                               f"{exc.what}", exc.fix, code=exc.code, **exc.data) from None
    for corr in correlations:
        empty = next((r for r in corr.regions if r.size == 0), None)
        if empty is not None:
            # hw/core/platform-bus.c platform_bus_map_mmio() aligns a region to its size
            # rounded up to a power of two: a zero-size region cannot be placed
            raise _refuse(corr.device, f"VFIO region {empty.index} ({empty.prop}[{empty.entry}] "
                          f"at 0x{empty.cpu_address:x}) has size 0, which QEMU's platform bus "
                          "cannot place", "fix the host DT's reg, or pass another device")
    devices = list(other_bus_devices) + [bus_device_for(c) for c in correlations]
    placements = allocate(devices)[len(other_bus_devices):]
    builder = _Builder(base, host, clock_rate)
    chain = [builder.add(corr, placement)
             for corr, placement in zip(correlations, placements, strict=True)]
    return GuestTree(base, chain)
