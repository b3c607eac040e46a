"""Guest tier, raspi3b board: the host survives what the tool refuses, and a leaf moves.

Runs INSIDE the raspi3b board (PLATFORM_HOSTDEV_BOARD_MACHINE=raspi3b: Debian's
arm64 6.12 kernel, Debian's bcm2837-rpi-3-b.dtb, the console on the PL011
(console=ttyAMA0), a filesystem from the SD card behind 3f202000.mmc mounted, vfio in
no-IOMMU mode with vfio-platform reset_required=0). Only the real kernel can
show these; the refusals themselves are contract tests
(tests/contract/test_devlinks_raspi3b.py), run here too.

* after the cprman and mailbox detaches are refused, the console still has its
  driver and takes a write, and the SD filesystem is still mounted and readable;
* the mini UART 3f215040.serial (a leaf bound to bcm2835-aux-uart) detached,
  inspected through VFIO with no disagreement, and given back to its driver.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.cli.main import Context, main
from platform_hostdev.host.devlinks import device_links
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.protection import host_usage, located

from tests.support.machines import BOARD_MACHINE

CPRMAN, MAILBOX = "3f101000.cprman", "3f00b880.mailbox"
CONSOLE, SD_HOST, MINI_UART = "3f201000.serial", "3f202000.mmc", "3f215040.serial"


@pytest.fixture(scope="module", autouse=True)
def _on_the_raspi3b() -> None:
    if BOARD_MACHINE != "raspi3b":
        pytest.fail(f"this module needs the raspi3b board; this board is {BOARD_MACHINE!r} "
                    "(PLATFORM_HOSTDEV_BOARD_MACHINE)", pytrace=False)
    missing = [what for what, ok in (
        ("root", os.geteuid() == 0),
        ("/dev/vfio/vfio (the vfio module)", os.path.exists("/dev/vfio/vfio")),
        ("the vfio-platform driver", os.path.isdir("/sys/bus/platform/drivers/vfio-platform")),
        (f"{SD_HOST} bound to sdhost-bcm2835 (insmod bcm2835.ko)",
         HostFs("/").link_name(f"/sys/bus/platform/devices/{SD_HOST}/driver")
         == "sdhost-bcm2835"),
    ) if not ok]
    if missing:
        pytest.fail("the raspi3b guest tests need: " + "; ".join(missing), pytrace=False)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), Context(out=out, err=err)), out.getvalue(), err.getvalue()


def sd_mounts() -> list[str]:
    """Mount points of filesystems on the SD card (behind 3f202000.mmc)."""
    fs = HostFs("/")
    uses = host_usage(fs, located(fs, "platform", SD_HOST))
    points = [u.subject.split(" mounted on ", 1)[1] for u in uses if u.kind == "mount"]
    return [p for group in points for p in group.split(", ")]


def read_everything(mountpoint: str) -> int:
    """Read every regular file below ``mountpoint`` (up to 1 MiB each); the bytes read."""
    total = 0
    for dirpath, _, filenames in os.walk(mountpoint):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    total += len(f.read(1 << 20))
    return total


def console_takes_a_write() -> None:
    # /dev/console, not /dev/ttyAMA0: the PL011 carries the board's Bluetooth node
    # (serdev, drivers/tty/serdev/serdev-ttyport.c), so no ttyAMA0 node is made, while
    # its console (console=ttyAMA0) is registered all the same
    fd = os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY)
    try:
        assert os.write(fd, b"platform-hostdev: console check\r\n") > 0
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def sd_mount() -> str:
    mounts = sd_mounts()
    if not mounts:
        pytest.fail(f"no filesystem from the SD card ({SD_HOST}) is mounted: the raspi3b board "
                    "must mount one (see /proc/self/mountinfo)", pytrace=False)
    return mounts[0]


@pytest.mark.parametrize("supplier", [CPRMAN, MAILBOX])
def test_a_refused_detach_leaves_the_console_and_the_sd_card(supplier: str,
                                                             sd_mount: str) -> None:
    fs = HostFs("/")
    before = {lk.devlink: lk.status for lk in device_links(
        fs, f"/sys/bus/platform/devices/{supplier}")[1]}
    code, _, err = cli("nodedev-detach", supplier)
    assert code == 1 and f"error: detaching {supplier} makes the kernel unbind" in err, err
    after = {lk.devlink: lk.status for lk in device_links(
        fs, f"/sys/bus/platform/devices/{supplier}")[1]}
    assert after == before
    assert fs.link_name(f"/sys/bus/amba/devices/{CONSOLE}/driver") == "uart-pl011"
    console_takes_a_write()
    assert sd_mount in sd_mounts()
    assert os.statvfs(sd_mount).f_blocks > 0
    os.listdir(sd_mount)
    read_everything(sd_mount)
    assert Journal(fs).devices() == []


@pytest.fixture
def mini_uart_on_vfio() -> Iterator[None]:
    fs = HostFs("/")
    assert fs.link_name(f"/sys/bus/platform/devices/{MINI_UART}/driver") == "bcm2835-aux-uart"
    code, out, err = cli("nodedev-detach", MINI_UART)
    assert (code, out, err) == (0, f"Device {MINI_UART} detached\n", "")
    try:
        assert fs.link_name(f"/sys/bus/platform/devices/{MINI_UART}/driver") == "vfio-platform"
        yield
    finally:
        code, out, err = cli("nodedev-reattach", MINI_UART)
        assert (code, out, err) == (0, f"Device {MINI_UART} re-attached\n", "")
    assert fs.link_name(f"/sys/bus/platform/devices/{MINI_UART}/driver") == "bcm2835-aux-uart"


def test_the_mini_uart_through_vfio_agrees_with_the_dt(mini_uart_on_vfio: None) -> None:
    code, out, err = cli("inspect", MINI_UART, "--json")
    assert code == 0, err + out
    data = json.loads(out)
    assert data["disagreements"] == []
    assert data["agree"] is True
    assert data["device_flags"]["vfio"] == ["PLATFORM"]
