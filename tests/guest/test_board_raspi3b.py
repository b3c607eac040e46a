"""The raspi3b board is what later work relies on: a real SoC, its real drivers, its devlinks.

Runs INSIDE the emulated Raspberry Pi 3 model B (Debian's arm64 6.12 kernel,
Debian's own broadcom/bcm2837-rpi-3-b.dtb, under qemu-system-aarch64 -M
raspi3b)::

    python3 -m board run --machine raspi3b -- python3 -m pytest tests/guest/test_board_raspi3b.py

(the ``_raspi3b`` suffix makes it a raspi3b module: tests/support/machines.py).

Only sysfs and procfs are read (no import of platform_hostdev): these are the
facts the binding code will be tested against. Never unbind a supplier here:
the driver core force-unbinds a supplier's active consumers with it
(drivers/base/core.c, ``device_links_unbind_consumers``), and cprman, the GPIO
controller and the mailbox supply the console, the SD card and the firmware.
The one round trip moves the mini UART (3f215040.serial), a leaf: it consumes
(aux, gpio) but supplies nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SYS = Path("/sys")
PLATFORM = SYS / "bus/platform"
CPRMAN = "3f101000.cprman"
GPIO = "3f200000.gpio"
SDHOST = "3f202000.mmc"
CONSOLE = "3f201000.serial"  # the PL011, on the amba bus
MINI_UART = "3f215040.serial"
SD_MOUNT = "/mnt/sd"
SD_FILE = "board-sd.txt"  # board/sdcard.py KNOWN_FILE / KNOWN_TEXT
SD_TEXT = "platform-hostdev raspi3b SD card\n"

BOUND_AT_BOOT = [
    ("platform", "3f007000.dma-controller", "bcm2835-dma"),
    ("platform", "3f00b880.mailbox", "bcm2835-mbox"),
    ("platform", "3f100000.watchdog", "bcm2835-pm"),
    ("platform", CPRMAN, "bcm2835-clk"),
    ("platform", GPIO, "pinctrl-bcm2835"),
    ("platform", "3f215000.aux", "bcm2835-aux-clk"),
    ("platform", MINI_UART, "bcm2835-aux-uart"),
    ("amba", CONSOLE, "uart-pl011"),
    ("platform", "soc:firmware", "raspberrypi-firmware"),
    ("platform", "soc:firmware:clocks", "raspberrypi-clk"),
    ("platform", "soc:power", "raspberrypi-power"),
    ("platform", SDHOST, "sdhost-bcm2835"),
]
"""soc:firmware:gpio (raspberrypi-exp-gpio) is left out: QEMU's firmware mailbox
answers none of its GPIO config queries ("Failed to get GPIO 0 config") and it
was bound in some boots, unbound in others."""


@pytest.fixture(scope="module", autouse=True)
def _on_the_raspi3b() -> None:
    machine = os.environ.get("PLATFORM_HOSTDEV_BOARD_MACHINE", "virt")
    if machine != "raspi3b":
        pytest.fail(f"this module checks the raspi3b board; this board is {machine!r} "
                    "(run it with 'python3 -m board run --machine raspi3b -- ...')",
                    pytrace=False)


def driver(bus: str, name: str) -> str | None:
    """The name of the driver ``name`` is bound to, None when unbound."""
    link = SYS / "bus" / bus / "devices" / name / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def links(name: str, kind: str, bus: str = "platform") -> set[str]:
    """``consumer``/``supplier`` link names of a device, without the ``<kind>:`` prefix."""
    device = SYS / "bus" / bus / "devices" / name
    return {entry.name.removeprefix(f"{kind}:") for entry in device.iterdir()
            if entry.name.startswith(f"{kind}:")}


def write(path: Path, text: str) -> None:
    with open(path, "w") as attr:
        attr.write(text)


def test_the_dtb_is_debians_rpi_3_model_b() -> None:
    compatible = (SYS / "firmware/devicetree/base/compatible").read_bytes()
    assert compatible.split(b"\0")[0] == b"raspberrypi,3-model-b"
    assert b"brcm,bcm2837" in compatible.split(b"\0")
    assert os.environ.get("PLATFORM_HOSTDEV_BOARD_MACHINE") == "raspi3b"


@pytest.mark.parametrize(("bus", "name", "expected"), BOUND_AT_BOOT,
                         ids=[name for _, name, _ in BOUND_AT_BOOT])
def test_real_drivers_are_bound(bus: str, name: str, expected: str) -> None:
    assert driver(bus, name) == expected


def test_dma_controller_has_its_sixteen_interrupts() -> None:
    base = SYS / "firmware/devicetree/base"
    node = base / "soc/dma-controller@7e007000"
    assert os.path.realpath(PLATFORM / "devices/3f007000.dma-controller/of_node") == str(node)
    interrupts = (node / "interrupts").read_bytes()
    holder = next(n for n in (node, *node.parents) if (n / "interrupt-parent").is_file())
    parent = int.from_bytes((holder / "interrupt-parent").read_bytes(), "big")  # inherited
    cells = 2  # brcm,bcm2836-armctrl-ic: #interrupt-cells = <2>
    assert len(interrupts) // (4 * cells) == 16
    controllers = [p.parent for p in base.rglob("phandle")
                   if int.from_bytes(p.read_bytes(), "big") == parent]
    assert len(controllers) == 1
    assert b"brcm,bcm2836-armctrl-ic" in (controllers[0] / "compatible").read_bytes()


def test_sd_card_is_a_block_device_mounted_read_write() -> None:
    assert Path("/dev/mmcblk0").is_block_device()
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    (mount,) = [m for m in mounts if m[1] == SD_MOUNT]
    assert mount[0] == "/dev/mmcblk0"
    assert "rw" in mount[3].split(",")
    assert Path(SD_MOUNT, SD_FILE).read_text() == SD_TEXT
    probe = Path(SD_MOUNT, ".board-write-probe")
    probe.write_text("written")
    os.sync()
    assert probe.read_text() == "written"
    probe.unlink()


def test_sdhost_consumes_cprman_and_gpio() -> None:
    assert {f"platform:{CPRMAN}", f"platform:{GPIO}"} <= links(SDHOST, "supplier")
    consumers = links(CPRMAN, "consumer")
    assert {f"platform:{SDHOST}", f"amba:{CONSOLE}"} <= consumers
    assert len(consumers) >= 8, consumers
    for supplier in (CPRMAN, GPIO):
        status = SYS / f"class/devlink/platform:{supplier}--platform:{SDHOST}/status"
        assert status.read_text().strip() == "active"


def test_pinctrl_cannot_be_unbound_from_sysfs() -> None:
    drv = PLATFORM / "drivers/pinctrl-bcm2835"
    assert drv.is_dir()
    assert not (drv / "unbind").exists() and not (drv / "bind").exists()


def test_the_console_driver_cannot_be_unbound_from_sysfs_either() -> None:
    """uart-pl011 is built in: suppress_bind_attrs (drivers/tty/serial/amba-pl011.c)."""
    drv = SYS / "bus/amba/drivers/uart-pl011"
    assert drv.is_dir()
    assert not (drv / "unbind").exists() and not (drv / "bind").exists()


def test_vfio_platform_is_registered() -> None:
    assert (PLATFORM / "drivers/vfio-platform").is_dir()
    noiommu = SYS / "module/vfio/parameters/enable_unsafe_noiommu_mode"
    assert noiommu.read_text().strip() == "Y"
    assert (SYS / "module/vfio_platform/parameters/reset_required").read_text().strip() == "N"


def test_raspi3b_modules_loaded_and_virt_ones_not() -> None:
    loaded = {line.split()[0] for line in Path("/proc/modules").read_text().splitlines()}
    assert {"bcm2835", "ext4", "vfio", "vfio_platform", "vfio_amba"} <= loaded
    assert not {"9p", "9pnet_virtio", "virtio_mmio"} & loaded


def test_the_console_uart_has_a_serdev_child_and_no_tty() -> None:
    """The PL011 carries the DT's Bluetooth node: serdev takes the port (serial0, with
    the device serial0-0), so the console (ttyAMA0 in /proc/consoles) has no tty
    device; the mini UART is ttyS1, under 6.12's serial port devices
    (<dev>/<dev>:0/<dev>:0.0/tty/ttyS1)."""
    consoles = Path("/proc/consoles").read_text().split()
    assert consoles[0] == "ttyAMA0"
    assert not Path("/sys/class/tty/ttyAMA0").exists()
    assert (SYS / "bus/serial/devices/serial0-0").exists()
    assert (SYS / "bus/amba/devices" / CONSOLE / f"{CONSOLE}:0").is_dir()
    assert f"/{MINI_UART}/{MINI_UART}:0/{MINI_UART}:0.0/tty/ttyS1" in os.path.realpath(
        SYS / "class/tty/ttyS1")


def test_mini_uart_round_trip_through_vfio_platform() -> None:
    """driver_override, unbind, drivers_probe: to vfio-platform and back, by raw sysfs."""
    device = PLATFORM / "devices" / MINI_UART
    assert links(MINI_UART, "consumer") == set(), "the mini UART supplies someone: not a leaf"
    assert driver("platform", MINI_UART) == "bcm2835-aux-uart"
    try:
        write(device / "driver_override", "vfio-platform")
        write(PLATFORM / "drivers/bcm2835-aux-uart/unbind", MINI_UART)
        assert driver("platform", MINI_UART) is None
        write(PLATFORM / "drivers_probe", MINI_UART)
        assert driver("platform", MINI_UART) == "vfio-platform"
        group = device / "iommu_group"
        assert group.is_symlink()
        number = os.path.basename(os.readlink(group))
        assert (SYS / "kernel/iommu_groups" / number / "name").read_text().strip() \
            == "vfio-noiommu"
        assert Path(f"/dev/vfio/noiommu-{number}").exists()
    finally:
        write(device / "driver_override", "\n")
        if driver("platform", MINI_UART) not in (None, "bcm2835-aux-uart"):
            write(PLATFORM / f"drivers/{driver('platform', MINI_UART)}/unbind", MINI_UART)
        if driver("platform", MINI_UART) is None:
            write(PLATFORM / "drivers_probe", MINI_UART)
    assert (device / "driver_override").read_text().strip() == "(null)"
    assert driver("platform", MINI_UART) == "bcm2835-aux-uart"
    # the consumer links of the mini UART survived its trip
    assert {f"platform:{GPIO}", "platform:3f215000.aux"} <= links(MINI_UART, "supplier")
