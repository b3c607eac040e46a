"""Device-link contract: the fake raspi3b host (on the host) and the real raspi3b board.

Every expectation holds for Debian's arm64 6.12 kernel with Debian's
bcm2837-rpi-3-b.dtb under ``qemu-system-aarch64 -M raspi3b``; the host run
holds the fake kernel (tests/support/fakekernel.py, fakedevlinks.py) to the
same facts. Inside a board this module runs only when
PLATFORM_HOSTDEV_BOARD_MACHINE=raspi3b (see conftest.py); selected on another
board it fails.

* the links as sysfs shows them: cprman's ten consumers, the status of every
  link following the bound state of both ends;
* ``nodedev-detach 3f101000.cprman`` and ``3f00b880.mailbox`` refused with
  their chains, nothing written;
* ``nodedev-detach 3f200000.gpio`` refused because pinctrl-bcm2835 forbids
  unbinding, driver_override as it was, nothing written;
* ``--force`` on the mailbox 3f00b880.mailbox, whose one bound consumer,
  soc:firmware (raspberrypi-firmware), is neither the console nor storage: it
  really loses its driver (parked meanwhile) and is back after the re-attach.
  3f215000.aux is no candidate: bcm2835-aux-clk (drivers/clk/bcm/
  clk-bcm2835-aux.c) has no remove, its clocks stay registered over unmapped
  registers, and the mini UART's next probe oopses the real kernel;
  soc:firmware:gpio's consumer wifi-pwrseq never probes under QEMU (-EIO);
* the mini UART 3f215040.serial, a leaf, detached and given back;
* the DMA engine 3f007000.dma-controller: ``show`` decodes its sixteen lines by
  the armctrl binding (bank 1, irq 16-28, all level), and its detach is refused
  naming the SD host, which uses it through ``dmas`` with no device link
  (fw_devlink treats dmas as optional), with the SD card's mount at the end.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_hostdev.binding.operations import PARKED, device_state
from platform_hostdev.host.devlinks import device_links, unbind_dependents

from tests.contract.conftest import INSIDE_BOARD, Backend, _board_backend
from tests.support.machines import BOARD_MACHINE

CPRMAN, GPIO, MAILBOX, DMA = ("3f101000.cprman", "3f200000.gpio", "3f00b880.mailbox",
                             "3f007000.dma-controller")
CONSOLE, SD_HOST, AUX, MINI_UART = ("3f201000.serial", "3f202000.mmc", "3f215000.aux",
                                    "3f215040.serial")
CPRMAN_CONSUMERS = {CONSOLE, SD_HOST, AUX, "3f100000.watchdog", "3f205000.i2c",
                    "3f804000.i2c", "3f805000.i2c", "3f20c000.pwm", "3f300000.mmc",
                    "3f212000.thermal"}


@pytest.fixture
def raspi(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The fake raspi3b kernel on the host; the real kernel inside the raspi3b board."""
    if not INSIDE_BOARD:
        from tests.support.raspi import build_raspi3b

        kernel = build_raspi3b(tmp_path / "root", request.getfixturevalue("raspi3b_dtb"))
        yield Backend("fake", kernel, kernel.as_host, {"kernel": kernel})
        return
    if BOARD_MACHINE != "raspi3b":
        pytest.fail(f"this module tests the raspi3b board's kernel; this board is "
                    f"{BOARD_MACHINE!r} (PLATFORM_HOSTDEV_BOARD_MACHINE): run it in the raspi3b "
                    "board, or on the host against the fake raspi3b", pytrace=False)
    yield _board_backend()


def driver(backend: Backend, bus: str, name: str) -> str | None:
    return backend.fs.link_name(f"/sys/bus/{bus}/devices/{name}/driver")


def snapshot(backend: Backend) -> dict[str, object]:
    """Drivers, overrides, every devlink's status and the journal (the fake: the whole /sys)."""
    fs = backend.fs
    state: dict[str, object] = {}
    for bus in ("platform", "amba"):
        for name in sorted(os.listdir(fs.path(f"/sys/bus/{bus}/devices"))):
            base = f"/sys/bus/{bus}/devices/{name}"
            state[f"{bus}:{name}"] = (fs.link_name(base + "/driver"),
                                      (fs.read_text(base + "/driver_override") or "").strip())
    devlinks = fs.path("/sys/class/devlink")
    for name in sorted(os.listdir(devlinks)) if devlinks.is_dir() else []:
        state[f"devlink:{name}"] = (fs.read_text(f"/sys/class/devlink/{name}/status") or "")
    state["journal"] = backend.journal().devices()
    if backend.kind == "fake":
        from tests.support.fakehost import tree_state

        state["sys"] = tree_state(backend.root / "sys")
    return state


def test_link_status_follows_both_ends(raspi: Backend) -> None:
    fs = raspi.fs
    names = sorted(os.listdir(fs.path("/sys/class/devlink")))
    assert names, "no device links at all: is fw_devlink off (fw_devlink=off)?"
    wrong = []
    for name in names:
        base = f"/sys/class/devlink/{name}"
        status = (fs.read_text(base + "/status") or "").strip()
        supplier = fs.link_name(base + "/supplier/driver")
        consumer = fs.link_name(base + "/consumer/driver")
        sync_state_only = (fs.read_text(base + "/sync_state_only") or "").strip() == "1"
        expected = "dormant" if supplier is None else "available" if consumer is None \
            else "active"
        if status != expected and status != "not tracked":
            wrong.append(f"{name}: {status} (supplier driver {supplier}, consumer {consumer})")
        if sync_state_only and consumer is not None:
            wrong.append(f"{name}: SYNC_STATE_ONLY with a bound consumer")  # dropped at bind
    assert wrong == []


def test_cprman_consumers(raspi: Backend) -> None:
    _, consumers = device_links(raspi.fs, f"/sys/bus/platform/devices/{CPRMAN}")
    assert {lk.name for lk in consumers} == CPRMAN_CONSUMERS
    active = {lk.name for lk in consumers if lk.status == "active"}
    assert {CONSOLE, SD_HOST, AUX} <= active
    assert all(not lk.sync_state_only and lk.managed for lk in consumers)
    dependents = {d.name: d.chain for d in unbind_dependents(raspi.fs, "platform", CPRMAN)}
    assert dependents[MINI_UART] == (CPRMAN, AUX, MINI_UART)  # transitively, through aux


def test_cprman_detach_is_refused_with_its_chains(raspi: Backend) -> None:
    before = snapshot(raspi)
    code, out, err = raspi.cli("nodedev-detach", CPRMAN)
    assert (code, out) == (1, ""), err
    assert err.startswith(f"error: detaching {CPRMAN} makes the kernel unbind ")
    assert f"{CPRMAN} -> {CONSOLE} (uart-pl011) -> the host console (" in err
    assert re.search(rf"{re.escape(CPRMAN)} -> {re.escape(SD_HOST)} \(sdhost-bcm2835\) -> "
                     r"/dev/mmcblk0\S* mounted on /", err), err
    assert f"{CPRMAN} -> {AUX} (bcm2835-aux-clk) -> {MINI_UART} (bcm2835-aux-uart)" in err
    assert "hint: the host uses them: choose another device" in err
    assert snapshot(raspi) == before


def test_mailbox_detach_is_refused_naming_the_firmware(raspi: Backend) -> None:
    before = snapshot(raspi)
    code, _, err = raspi.cli("nodedev-detach", MAILBOX)
    assert code == 1
    assert f"\n  {MAILBOX} -> soc:firmware (raspberrypi-firmware)" in err
    assert "pass --force on the command line" in err
    assert snapshot(raspi) == before


@pytest.mark.parametrize("force", [False, True], ids=["plain", "forced"])
def test_pinctrl_refusal_writes_nothing(raspi: Backend, force: bool) -> None:
    assert driver(raspi, "platform", GPIO) == "pinctrl-bcm2835"
    assert not raspi.fs.path("/sys/bus/platform/drivers/pinctrl-bcm2835/unbind").exists()
    before = snapshot(raspi)
    code, _, err = raspi.cli("nodedev-detach", GPIO, *(["--force"] if force else []))
    assert code == 1
    assert err.startswith(f"error: {GPIO} is bound to pinctrl-bcm2835, which forbids "
                          "unbinding (suppress_bind_attrs:"), err
    assert "pinctrl-bcm2835 is built into the kernel" in err
    assert "initcall_blacklist=bcm2835_pinctrl_driver_init" in err
    assert "ENOENT" not in err
    assert device_state(raspi.fs, "platform", GPIO).override is None
    assert snapshot(raspi) == before


def test_forced_detach_unbinds_a_consumer_and_reattach_gives_it_back(raspi: Backend) -> None:
    firmware = "soc:firmware"
    dependents = unbind_dependents(raspi.fs, "platform", MAILBOX)
    assert [(d.name, d.driver) for d in dependents] == [(firmware, "raspberrypi-firmware")], \
        f"the board's graph around {MAILBOX} is not the one this test was written for"
    before = snapshot(raspi)
    code, out, err = raspi.cli("nodedev-detach", MAILBOX, "--force")
    assert code == 0, err
    assert err == (f"warning: --force: {firmware} (raspberrypi-firmware) loses its driver: "
                   f"{MAILBOX} -> {firmware} (raspberrypi-firmware)\n")
    assert out.startswith(f"Device {MAILBOX} detached\nLost their driver with it: {firmware}")
    try:
        assert driver(raspi, "platform", MAILBOX) == "vfio-platform"
        assert driver(raspi, "platform", firmware) is None
        # parked: nothing may bind it while the mailbox is on vfio (the kernel re-probes
        # consumers when their supplier binds, device_links_driver_bound)
        assert device_state(raspi.fs, "platform", firmware).override == PARKED
        record = raspi.journal().read(MAILBOX)
        assert record is not None and \
            record.consumers == (("platform", firmware, "raspberrypi-firmware"),)
    finally:
        code, out, err = raspi.cli("nodedev-reattach", MAILBOX)
    assert code == 0, err
    assert out == f"Device {MAILBOX} re-attached\nGiven their driver back: {firmware}\n"
    assert driver(raspi, "platform", firmware) == "raspberrypi-firmware"
    after = snapshot(raspi)
    if raspi.kind == "fake":  # the fake's tree changed where the kernel's would (groups, nodes)
        before.pop("sys"), after.pop("sys")
    assert after == before


def test_the_mini_uart_is_a_leaf_that_moves(raspi: Backend) -> None:
    assert unbind_dependents(raspi.fs, "platform", MINI_UART) == []
    code, out, err = raspi.cli("nodedev-detach", MINI_UART)
    assert (code, out, err) == (0, f"Device {MINI_UART} detached\n", "")
    try:
        assert driver(raspi, "platform", MINI_UART) == "vfio-platform"
        record = raspi.journal().read(MINI_UART)
        assert record is not None and record.consumers == ()
    finally:
        code, out, err = raspi.cli("nodedev-reattach", MINI_UART)
    assert (code, out, err) == (0, f"Device {MINI_UART} re-attached\n", "")
    assert driver(raspi, "platform", MINI_UART) == "bcm2835-aux-uart"


def test_show_decodes_the_dma_engine_by_the_armctrl_binding(raspi: Backend) -> None:
    code, out, err = raspi.cli("show", DMA, "--json")
    assert code == 0, err
    irqs = json.loads(out)["irqs"]
    assert [i["line"] for i in irqs] == [f"bank 1 irq {n}" for n in range(16, 28)] + \
        ["bank 1 irq 27"] * 3 + ["bank 1 irq 28"]
    assert {(i["trigger"], i["binding"]) for i in irqs} == {("level", "brcm,bcm2836-armctrl-ic")}


def test_dma_engine_detach_is_refused_naming_its_dt_users(raspi: Backend) -> None:
    assert driver(raspi, "platform", DMA) == "bcm2835-dma"
    before = snapshot(raspi)
    code, out, err = raspi.cli("nodedev-detach", DMA)
    assert (code, out) == (1, ""), err
    assert err.startswith(f"error: {DMA} is used by "), err
    assert re.search(rf"\n  {re.escape(DMA)} <- {re.escape(SD_HOST)} \(sdhost-bcm2835\) through "
                     r"dmas -> /dev/mmcblk0\S* mounted on /", err), err
    assert f"hint: the host uses {SD_HOST}" in err
    assert snapshot(raspi) == before
