"""Inside the raspi3b board: the kernel's naming and populate rules, predicted from the live
DT (Debian's bcm2837-rpi-3-b.dtb), against the devices the real 6.12 kernel created.

The same test as tests/guest/test_naming_guest.py (QEMU virt); here it also holds the
prediction to of_irq_init() claiming the BCM2836 armctrl and local interrupt
controllers (drivers/irqchip/irq-bcm2835.c, irq-bcm2836.c: IRQCHIP_DECLARE), which
therefore get no platform device.
"""
from __future__ import annotations

import pytest

from tests.guest.test_naming_guest import test_predicted_devices_are_exactly_the_kernels
from tests.support.machines import BOARD_MACHINE

__all__ = ["test_predicted_devices_are_exactly_the_kernels"]


@pytest.fixture(scope="module", autouse=True)
def _on_the_raspi3b() -> None:
    if BOARD_MACHINE != "raspi3b":
        pytest.fail(f"this module needs the raspi3b board; this board is {BOARD_MACHINE!r} "
                    "(PLATFORM_HOSTDEV_BOARD_MACHINE)", pytrace=False)
