"""The platform-bus allocator model (hw/core/platform-bus.c), pure cases."""
from __future__ import annotations

import pytest
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.platform_bus import BusDevice, allocate, natural_alignment


@pytest.mark.parametrize("size,alignment", [(1, 1), (4, 4), (0x20, 0x20), (0x60, 0x80),
                                            (0x200, 0x200), (0x5000, 0x8000),
                                            (0x80000, 0x80000), (0x80001, 0x100000)])
def test_natural_alignment_rounds_up_to_a_power_of_two(size: int, alignment: int) -> None:
    assert natural_alignment(size) == alignment


def test_first_device_lands_at_offset_zero_with_line_zero() -> None:
    (placement,) = allocate([BusDevice("a", (0x200,), 1)])
    assert placement.regions == ((0, 0x200),)
    assert placement.irq_lines == (0,)
    assert placement.spis == (112,)
    assert placement.guest_addresses == (0x0C000000,)


def test_small_region_fills_a_gap_left_by_an_aligned_large_one() -> None:
    # what QEMU 10.0 does with uefi-vars (0x20), tpm-tis (0x5000), uefi-vars (0x20)
    placements = allocate([BusDevice("u1", (0x20,), 0), BusDevice("tpm", (0x5000,), 1),
                           BusDevice("u2", (0x20,), 0)])
    assert [p.regions for p in placements] == [((0, 0x20),), ((0x8000, 0x5000),),
                                               ((0x20, 0x20),)]
    assert placements[1].spis == (112,)


def test_irqs_are_taken_in_device_order_before_its_regions() -> None:
    placements = allocate([BusDevice("a", (0x1000, 0x4), 2), BusDevice("b", (0x4,), 3)])
    assert placements[0].irq_lines == (0, 1)
    assert placements[1].irq_lines == (2, 3, 4)
    assert placements[0].regions == ((0, 0x1000), (0x1000, 4))
    assert placements[1].regions == ((0x1004, 4),)


def test_running_out_of_irq_lines_is_a_clear_error() -> None:
    with pytest.raises(HostdevError, match="no free IRQ line for big"):
        allocate([BusDevice("big", (0x10,), 65)])


def test_running_out_of_mmio_space_is_a_clear_error() -> None:
    with pytest.raises(HostdevError, match="cannot fit the 0x1000000-byte region of c"):
        allocate([BusDevice("a", (0x1000000,), 0), BusDevice("b", (0x1000000,), 0),
                  BusDevice("c", (0x1000000,), 0)])
