"""The fake kernel's device links on the raspi3b host: made as fw_devlink makes them, and acted
on as drivers/base/core.c does (the contract tests hold the same facts to the real board)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from platform_hostdev.host.devlinks import device_links

from tests.support.fakehost import build_fake_host
from tests.support.fakekernel import FakeKernel
from tests.support.raspi import RASPI3B_DRIVERS, build_raspi3b

CPRMAN, GPIO, MAILBOX = "3f101000.cprman", "3f200000.gpio", "3f00b880.mailbox"
CPRMAN_CONSUMERS = {
    "3f201000.serial": "active", "3f202000.mmc": "active", "3f215000.aux": "active",
    "3f100000.watchdog": "active", "3f205000.i2c": "available", "3f804000.i2c": "available",
    "3f805000.i2c": "available", "3f20c000.pwm": "available", "3f300000.mmc": "available",
    "3f212000.thermal": "available"}


@pytest.fixture
def kernel(tmp_path: Path, raspi3b_dtb: Path) -> FakeKernel:
    return build_raspi3b(tmp_path / "root", raspi3b_dtb)


def consumers(kernel: FakeKernel, name: str) -> dict[str, str]:
    bus = kernel.host.buses[name]
    return {lk.name: lk.status for lk in device_links(kernel, f"/sys/bus/{bus}/devices/{name}")[1]}


def suppliers(kernel: FakeKernel, name: str) -> dict[str, tuple[str, bool]]:
    bus = kernel.host.buses[name]
    return {lk.name: (lk.status, lk.sync_state_only)
            for lk in device_links(kernel, f"/sys/bus/{bus}/devices/{name}")[0]}


def test_links_follow_the_dt_as_fw_devlink_reads_it(kernel: FakeKernel) -> None:
    # clocks: the ten enabled users of <&clocks>; the disabled ones (i2s, spi, dpi, dsi) have
    # no device; cprman's own clocks (clk-osc: a fixed-clock set up early; dsi0/1: disabled)
    # make no link
    assert consumers(kernel, CPRMAN) == CPRMAN_CONSUMERS
    assert suppliers(kernel, CPRMAN) == {}
    # pinctrl-0 names child nodes of the gpio node: the link walks up to 3f200000.gpio
    assert set(consumers(kernel, GPIO)) == {
        "3f201000.serial", "3f202000.mmc", "3f205000.i2c", "3f215040.serial", "3f20c000.pwm",
        "3f300000.mmc", "3f804000.i2c"}
    assert consumers(kernel, MAILBOX) == {"soc:firmware": "active"}
    # interrupts on the armctrl irqchip (set up by of_irq_init, no device): no link; dmas is
    # optional (fw_devlink.strict=0): no link either
    assert suppliers(kernel, "3f202000.mmc") == {CPRMAN: ("active", False),
                                                 GPIO: ("active", False)}
    assert consumers(kernel, "3f007000.dma-controller") == {}
    assert "3f00b200.interrupt-controller" not in kernel.host.buses  # of_irq_init claimed it
    # a parent is no consumer of its child (firmware -> firmware:gpio), and the leds' gpio is
    # in a child node without a device: a SYNC_STATE_ONLY proxy from the unbound leds device
    assert consumers(kernel, "soc:firmware:gpio") == {
        "3f902000.hdmi": "available", "leds": "available", "wifi-pwrseq": "active"}
    assert suppliers(kernel, "leds") == {"soc:firmware:gpio": ("available", True)}


def test_strict_fw_devlink_adds_the_optional_dma_links(tmp_path: Path, raspi3b_dtb: Path) -> None:
    host = build_fake_host(tmp_path / "root", raspi3b_dtb, drivers=RASPI3B_DRIVERS,
                           fw_devlink_strict=True)
    names = {(lk.supplier, lk.consumer) for lk in host.links}
    assert ("3f007000.dma-controller", "3f202000.mmc") in names
    assert ("3f007000.dma-controller", "3f902000.hdmi") in names


def test_sysfs_shape_of_a_link(kernel: FakeKernel) -> None:
    name = "platform:3f101000.cprman--amba:3f201000.serial"
    directory = kernel.path(f"/sys/class/devlink/{name}")
    assert os.path.realpath(directory) == str(kernel.path(f"/sys/devices/virtual/devlink/{name}"))
    values = {f: (directory / f).read_text() for f in
              ("status", "sync_state_only", "auto_remove_on", "runtime_pm")}
    assert values == {"status": "active\n", "sync_state_only": "0\n",
                      "auto_remove_on": "never\n", "runtime_pm": "1\n"}
    assert os.path.realpath(directory / "consumer") == str(kernel.host.devices["3f201000.serial"])
    assert os.path.realpath(directory / "supplier") == str(kernel.host.devices[CPRMAN])
    assert os.path.realpath(kernel.host.devices[CPRMAN] / "consumer:amba:3f201000.serial") == \
        os.path.realpath(directory)
    assert (kernel.host.devices["3f201000.serial"] / "supplier:platform:3f101000.cprman").is_dir()
    # suppress_bind_attrs: no bind/unbind; a loadable module has its module link
    gpio_driver = kernel.host.driver_dir("platform", "pinctrl-bcm2835")
    assert sorted(os.listdir(gpio_driver)) == sorted(["uevent", GPIO])
    assert os.readlink(kernel.host.driver_dir("platform", "sdhost-bcm2835") / "module") \
        .endswith("module/bcm2835")


def test_unbinding_a_supplier_releases_active_consumers_transitively(kernel: FakeKernel) -> None:
    waiter = kernel.waiter()
    kernel.write_attr("/sys/bus/platform/drivers/bcm2835-clk/unbind", CPRMAN)
    gone = [n for n, status in CPRMAN_CONSUMERS.items() if status == "active"]
    for name in [*gone, "3f215040.serial"]:  # 3f215040.serial: a consumer of 3f215000.aux
        assert kernel.host.driver_of(name) is None, name
    assert kernel.host.driver_of("3f200000.gpio") == "pinctrl-bcm2835"
    unbinds = [d for _, d, a in waiter.history if a == "unbind"]
    assert unbinds[-1] == CPRMAN and set(unbinds[:-1]) == {*gone, "3f215040.serial"}
    assert unbinds.index("3f215040.serial") < unbinds.index("3f215000.aux")  # consumers first
    assert set(consumers(kernel, CPRMAN).values()) == {"dormant"}


def test_status_follows_the_consumer(kernel: FakeKernel) -> None:
    kernel.write_attr("/sys/bus/platform/drivers/bcm2835-aux-uart/unbind", "3f215040.serial")
    assert consumers(kernel, "3f215000.aux") == {"3f215040.serial": "available"}
    kernel.write_attr("/sys/bus/platform/drivers_probe", "3f215040.serial")
    assert consumers(kernel, "3f215000.aux") == {"3f215040.serial": "active"}


def test_a_consumer_defers_while_its_supplier_is_on_vfio_and_returns_after(
        kernel: FakeKernel) -> None:
    supplier = "soc:firmware:gpio"
    base = f"/sys/bus/platform/devices/{supplier}"
    kernel.write_attr(base + "/driver_override", "vfio-platform\n")
    kernel.write_attr("/sys/bus/platform/drivers/raspberrypi-exp-gpio/unbind", supplier)
    assert kernel.host.driver_of("wifi-pwrseq") is None
    kernel.write_attr("/sys/bus/platform/drivers_probe", supplier)
    assert kernel.host.driver_of(supplier) == "vfio-platform"
    # device_links_driver_bound put it on the deferred list; its gpio is not there: deferred
    assert kernel.host.driver_of("wifi-pwrseq") is None
    assert "wifi-pwrseq" in kernel.deferred
    kernel.write_attr("/sys/bus/platform/drivers_probe", "wifi-pwrseq")
    assert kernel.host.driver_of("wifi-pwrseq") is None
    assert all("wifi-pwrseq" not in m for m in kernel.log)  # EPROBE_DEFER is silent
    kernel.write_attr(base + "/driver_override", "\n")
    kernel.write_attr("/sys/bus/platform/drivers/vfio-platform/unbind", supplier)
    kernel.write_attr("/sys/bus/platform/drivers_probe", supplier)
    # the supplier's bind retried the deferred list
    assert kernel.host.driver_of("wifi-pwrseq") == "pwrseq_simple"
    assert consumers(kernel, supplier)["wifi-pwrseq"] == "active"


def test_a_consumer_binding_drops_its_sync_state_only_links(kernel: FakeKernel) -> None:
    kernel.drivers["gpio-leds"] = "leds-gpio"
    kernel.host.add_driver("platform", "leds-gpio")
    assert suppliers(kernel, "leds") == {"soc:firmware:gpio": ("available", True)}
    kernel.write_attr("/sys/bus/platform/drivers_probe", "leds")
    assert kernel.host.driver_of("leds") == "leds-gpio"
    assert suppliers(kernel, "leds") == {}
    assert not kernel.path("/sys/class/devlink/platform:soc:firmware:gpio--platform:leds") \
        .exists()


def test_a_supplier_without_a_driver_defers_its_consumers(kernel: FakeKernel) -> None:
    # device_links_check_suppliers: the phy link is dormant, so dwc2 would defer
    assert suppliers(kernel, "3f980000.usb")["phy"] == ("dormant", False)
    kernel.drivers["brcm,bcm2835-usb"] = "dwc2"
    kernel.host.add_driver("platform", "dwc2")
    kernel.write_attr("/sys/bus/platform/drivers_probe", "3f980000.usb")
    assert kernel.host.driver_of("3f980000.usb") is None
    assert "3f980000.usb" in kernel.deferred
