"""A model of QEMU's "virt" platform bus allocator (hw/core/platform-bus.c).

Dynamic sysbus devices (vfio-platform, tpm-tis-device, uefi-vars-sysbus, ...)
are linked in creation (command-line) order. For each device every IRQ is
mapped first, to the lowest free line; then every MMIO region goes to the
lowest offset that is a multiple of its natural alignment (the size rounded
up to a power of two) and overlaps nothing mapped before. The virt machine's
bus sits at 0x0c000000 (32 MiB) with 64 lines on GIC SPIs 112..175
(hw/arm/virt.c: VIRT_PLATFORM_BUS, PLATFORM_BUS_NUM_IRQS).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from platform_hostdev.errors import HostdevError

__all__ = [
    "VIRT_PLATFORM_BUS_BASE", "VIRT_PLATFORM_BUS_SIZE", "VIRT_PLATFORM_BUS_FIRST_SPI",
    "VIRT_PLATFORM_BUS_NUM_IRQS", "BusDevice", "Placement", "allocate", "natural_alignment",
]

VIRT_PLATFORM_BUS_BASE = 0x0C000000
VIRT_PLATFORM_BUS_SIZE = 0x02000000
VIRT_PLATFORM_BUS_FIRST_SPI = 112
VIRT_PLATFORM_BUS_NUM_IRQS = 64


@dataclass(frozen=True)
class BusDevice:
    """A dynamic sysbus device as the bus sees it: its MMIO region sizes and IRQ count."""

    ident: str
    mmio_sizes: tuple[int, ...]
    irq_count: int


@dataclass(frozen=True)
class Placement:
    ident: str
    regions: tuple[tuple[int, int], ...]  # (offset in the bus, size)
    irq_lines: tuple[int, ...]           # platform-bus lines; SPI = first_spi + line
    first_spi: int = VIRT_PLATFORM_BUS_FIRST_SPI
    base: int = VIRT_PLATFORM_BUS_BASE

    @property
    def spis(self) -> tuple[int, ...]:
        return tuple(self.first_spi + line for line in self.irq_lines)

    @property
    def guest_addresses(self) -> tuple[int, ...]:
        return tuple(self.base + offset for offset, _ in self.regions)


def natural_alignment(size: int) -> int:
    """1 << (63 - clz64(size + size - 1)): the size rounded up to a power of two."""
    if size <= 0:
        raise ValueError("a region has a positive size")
    return 1 << ((2 * size - 1).bit_length() - 1)


@dataclass
class _Bus:
    size: int
    num_irqs: int
    mapped: list[tuple[int, int]] = field(default_factory=list)
    used_irqs: set[int] = field(default_factory=set)

    def map_irq(self, ident: str) -> int:
        for line in range(self.num_irqs):
            if line not in self.used_irqs:
                self.used_irqs.add(line)
                return line
        raise HostdevError(f"platform bus: no free IRQ line for {ident} (all "
                           f"{self.num_irqs} in use)",
                           "give the guest fewer platform devices or devices with fewer IRQs",
                           code="guest-dt-failed")

    def map_mmio(self, ident: str, size: int) -> int:
        step = natural_alignment(size)
        offset = 0
        while offset < self.size:
            end = offset + size
            if all(end <= start or offset >= start + length for start, length in self.mapped):
                self.mapped.append((offset, size))
                return offset
            offset += step
        raise HostdevError(f"platform bus: cannot fit the 0x{size:x}-byte region of {ident} "
                           f"in the 0x{self.size:x}-byte bus",
                           "give the guest fewer or smaller platform devices",
                           code="guest-dt-failed")


def allocate(devices: Sequence[BusDevice], bus_size: int = VIRT_PLATFORM_BUS_SIZE,
             num_irqs: int = VIRT_PLATFORM_BUS_NUM_IRQS) -> list[Placement]:
    """Place devices in command-line order as QEMU's platform bus does."""
    bus = _Bus(bus_size, num_irqs)
    placements = []
    for device in devices:
        lines = tuple(bus.map_irq(device.ident) for _ in range(device.irq_count))
        regions = tuple((bus.map_mmio(device.ident, size), size) for size in device.mmio_sizes)
        placements.append(Placement(device.ident, regions, lines))
    return placements
