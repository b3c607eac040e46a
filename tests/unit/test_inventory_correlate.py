"""inventory (spec checks, look-ups) and correlate (regions, IRQs, verdict)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.errors import DeviceNotFoundError, InvalidDeviceSpecError
from platform_hostdev.host.inventory import Device, check_spec, load_inventory, nodedev_name
from platform_hostdev.host.pagesize import dtb_page_size
from platform_hostdev.host.sources import HostDevice
from platform_hostdev.vfio.correlate import correlate

from tests.support.fdtwriter import node
from tests.support.synthetic import CLK_PHANDLE, gic_soc, tree_of, write_dtb

PAGE = dtb_page_size(None)
BOARD = gic_soc(
    node("uart@9000", {"compatible": ["arm,pl011", "arm,primecell"],
                       "reg": [0x9000, 0x1000, 0xa000, 0x1000],
                       "interrupts": [0, 1, 4, 0, 2, 4]}),
    node("virtio@a000", {"compatible": "virtio,mmio", "reg": [0xa000, 0x200],
                         "interrupts": [0, 16, 1]}),
    node("eth@100000", {"compatible": "vendor,eth", "reg": [0x100000, 0x10000, 0x110000, 0x40],
                        "interrupts": [0, 30, 4, 1, 9, 4], "clocks": [CLK_PHANDLE]}, [
        node("mdio", {"compatible": "vendor,mdio", "#address-cells": 1, "#size-cells": 0}, [
            node("phy@1", {"reg": 1}),
        ]),
    ]),
    top=(node("aliases", {"serial0": "/soc/uart@9000", "ethernet0": "/soc/eth@100000"}),),
)


@pytest.mark.parametrize("spec,kind", [("/soc/uart@9000", "path"), ("9000.uart", "name"),
                                       ("serial0", "name"), ("platform_9000_uart", "name")])
def test_well_formed_specs(spec: str, kind: str) -> None:
    assert check_spec(spec) == kind


@pytest.mark.parametrize("spec", ["", "/", "..", ".", "../../etc/passwd", "/soc/../x", "/soc//x",
                                  "/soc/./x", "a/b", "x\n", "x\0y", ".hidden", "/soc/x y"])
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(InvalidDeviceSpecError) as info:
        check_spec(spec)
    assert info.value.fix


def test_resolve_by_every_kind_of_spec(tmp_path: Path) -> None:
    inventory = load_inventory(dtb=str(write_dtb(tmp_path / "b.dtb", BOARD)))
    uart = inventory.resolve("/soc/uart@9000")
    assert uart.name == "9000.uart" and uart.bus == "amba" and uart.aliases == ("serial0",)
    assert inventory.resolve("9000.uart") is uart
    assert inventory.resolve("serial0") is uart
    assert inventory.resolve("amba_9000_uart") is uart
    assert nodedev_name("platform", "a.b-c:d") == "platform_a_b_c_d"
    with pytest.raises(DeviceNotFoundError) as info:
        inventory.resolve("/soc/eth@100000/mdio")
    assert "exists but the kernel made no platform or amba device" in info.value.fix
    with pytest.raises(DeviceNotFoundError):
        inventory.resolve("nosuchalias")


def test_host_inventory_uses_the_device_source(tmp_path: Path, mocker: Any) -> None:
    """A live host's device list comes from the DeviceSource (pyudev there); mocked here."""
    tree = tree_of(BOARD)
    mocker.patch("platform_hostdev.host.inventory.DeviceTree.from_sysfs", return_value=tree)
    source = mocker.Mock()
    source.devices.side_effect = lambda bus: [HostDevice(
        "9000.uart", "amba", "/sys/devices/platform/soc/9000.uart", "/soc/uart@9000",
        "uart-pl011", None, "4")] if bus == "amba" else []
    factory = mocker.patch("platform_hostdev.host.inventory.device_source", return_value=source)
    inventory = load_inventory(tmp_path)
    factory.assert_called_once()
    assert factory.call_args.args[1] is False  # a root below /: not the live host
    (uart,) = inventory.devices
    assert (uart.parent, uart.driver, uart.iommu_group, uart.compatible) == (
        "soc", "uart-pl011", "4", ("arm,pl011", "arm,primecell"))
    assert [c.args for c in source.devices.call_args_list] == [("platform",), ("amba",)]


def test_amba_exposes_reg0_and_level_irqs_are_automasked() -> None:
    tree = tree_of(BOARD)
    c = correlate(tree, Device("9000.uart", "amba", "/soc/uart@9000", ()), PAGE)
    assert [(r.cpu_address, r.size, r.mmap, r.expected_flags) for r in c.regions] == [
        (0x9000, 0x1000, True, 7)]
    assert [(i.number, i.expected_flags) for i in c.irqs] == [(1, 7), (2, 7)]
    assert c.verdict == "simple" and c.reasons == []


def test_sub_page_region_and_edge_irq() -> None:
    c = correlate(tree_of(BOARD), Device("a000.virtio", "platform", "/soc/virtio@a000", ()),
                  PAGE)
    assert [(r.size, r.mmap, r.expected_flags) for r in c.regions] == [(0x200, False, 3)]
    assert [(i.kind, i.number, i.trigger, i.expected_flags) for i in c.irqs] == [
        ("SPI", 16, "edge-rising", 1)]


def test_entanglements_make_a_device_complex() -> None:
    c = correlate(tree_of(BOARD), Device("100000.eth", "platform", "/soc/eth@100000", ()),
                  PAGE)
    assert len(c.regions) == 2 and c.regions[1].mmap is False
    assert c.verdict == "complex"
    assert "clocks -> /clk" in c.reasons
    assert "interrupt 1 is a GIC PPI, not an SPI" in c.reasons
    assert [ch.path for ch in c.children] == ["/soc/eth@100000/mdio/phy@1"]
    data = c.to_json()
    assert data["verdict"] == "complex" and data["regions"][0]["cpu_address"] == "0x100000"
