"""Hand-checked facts on real DTBs (not goldens): numbers read off the DTS by hand."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.dt.address import reg_entries
from platform_hostdev.dt.interrupts import resolve_interrupts
from platform_hostdev.dt.naming import device_name
from platform_hostdev.dt.tree import DeviceTree

from tests.support.boards import run_cli
from tests.support.fakehost import FakeHost, build_fake_host


@pytest.fixture(scope="module")
def virt(virt_dtb: Path, tmp_path_factory: pytest.TempPathFactory) -> FakeHost:
    return build_fake_host(tmp_path_factory.mktemp("virt"), virt_dtb,
                           drivers={"arm,pl061": "pl061_gpio", "arm,pl011": "uart-pl011"},
                           iommu={"a000000.virtio_mmio"})


def show(host: FakeHost, spec: str) -> dict[str, Any]:
    result = run_cli("show", spec, "--json", root=host.root)
    assert (result.code, result.err) == (0, ""), result.err
    data: dict[str, Any] = result.json()
    return data


def test_virt_pl061_is_amba_one_page_region_level_spi7(virt: FakeHost) -> None:
    # pl061@9030000: reg = <0 0x9030000 0 0x1000>; interrupts = <0 7 4>; clocks = <&apb-pclk>
    c = show(virt, "9030000.pl061")
    assert (c["bus"], c["driver"], c["dt_path"]) == ("amba", "pl061_gpio", "/pl061@9030000")
    assert c["regions"] == [{"index": 0, "dt_path": "/pl061@9030000", "prop": "reg", "entry": 0,
                             "cpu_address": "0x9030000", "size": "0x1000", "mmap": True,
                             "expected_flags": 7}]
    (irq,) = c["irqs"]
    assert (irq["kind"], irq["number"], irq["trigger"], irq["expected_flags"]) == (
        "SPI", 7, "level-high", 7)
    assert c["verdict"] == "complex" and c["reasons"] == ["clocks -> /apb-pclk"]


def test_virt_virtio_mmio_sub_page_edge(virt: FakeHost) -> None:
    # virtio_mmio@a000000: reg = <0 0xa000000 0 0x200>; interrupts = <0 0x10 1>
    c = show(virt, "/virtio_mmio@a000000")
    assert (c["device"], c["bus"], c["iommu_group"]) == ("a000000.virtio_mmio", "platform", "0")
    (region,) = c["regions"]
    assert (region["size"], region["mmap"], region["expected_flags"]) == ("0x200", False, 3)
    (irq,) = c["irqs"]
    assert (irq["kind"], irq["number"], irq["trigger"], irq["expected_flags"]) == (
        "SPI", 16, "edge-rising", 1)
    assert c["verdict"] == "simple"


def test_virt_timer_has_ppis_not_spis(virt: FakeHost) -> None:
    c = show(virt, "timer")
    assert [i["kind"] for i in c["irqs"]] == ["PPI"] * 4
    assert "interrupt 0 is a GIC PPI, not an SPI" in c["reasons"]


def test_virt_host_files_look_like_the_kernel(virt: FakeHost) -> None:
    d = virt.device_dir("9030000.pl061")
    assert (d / "driver_override").read_text() == "(null)\n"
    assert (d / "of_node" / "name").read_bytes() == b"pl061\0"
    assert (d / "of_node" / "compatible").read_bytes() == b"arm,pl061\0arm,primecell\0"
    assert str((d / "subsystem").readlink()) == "../../../bus/amba"
    uevent = (d / "uevent").read_text().splitlines()
    assert uevent[:3] == ["DRIVER=pl061_gpio", "OF_NAME=pl061", "OF_FULLNAME=/pl061@9030000"]
    serial = (virt.device_dir("9000000.pl011") / "uevent").read_text()
    assert "OF_ALIAS_0=serial0\n" in serial
    virtio = (virt.device_dir("a000000.virtio_mmio") / "modalias").read_text()
    assert virtio == "of:Nvirtio_mmioT(null)Cvirtio,mmio\n"
    virt.unbind("9030000.pl061")
    assert virt.driver_of("9030000.pl061") is None
    assert not (virt.driver_dir("amba", "pl061_gpio") / "9030000.pl061").exists()
    virt.bind("9030000.pl061", "pl061_gpio")
    assert show(virt, "9030000.pl061")["driver"] == "pl061_gpio"


def test_seattle_xgbe_five_regions_six_irqs_complex(kernel_dtbs: Path, tmp_path: Path) -> None:
    host = build_fake_host(tmp_path, kernel_dtbs / "amd/amd-overdrive-rev-b1.dtb")
    c = show(host, "/smb/xgmac@e0700000")
    assert c["device"] == "e0700000.xgmac"
    assert [(r["cpu_address"], r["size"], r["mmap"]) for r in c["regions"]] == [
        ("0xe0700000", "0x80000", True), ("0xe0780000", "0x80000", True),
        ("0xe1240800", "0x400", False), ("0xe1250000", "0x60", False),
        ("0xe12500f8", "0x4", False)]
    assert [(i["number"], i["trigger"]) for i in c["irqs"]] == [
        (325, "level-high"), (346, "edge-rising"), (347, "edge-rising"),
        (348, "edge-rising"), (349, "edge-rising"), (323, "level-high")]
    assert c["verdict"] == "complex"
    assert {"clocks -> /smb/clk250mhz_0", "clocks -> /smb/clk250mhz_1"} <= set(c["reasons"])


def test_zcu102_i2c_child_gets_a_parent_prefixed_name(kernel_dtbs: Path) -> None:
    tree = DeviceTree.from_dtb(kernel_dtbs / "xilinx/zynqmp-zcu102-rev1.0.dtb")
    assert device_name(tree.node("/axi/i2c@ff020000/gpio@20")) == "ff020000.i2c:gpio@20"


def test_juno_four_level_ranges_mask_and_interrupt_map(kernel_dtbs: Path) -> None:
    tree = DeviceTree.from_dtb(kernel_dtbs / "arm/juno.dtb")
    led = tree.node("/bus@8000000/motherboard-bus@8000000/iofpga-bus@300000000/"
                    "apbregs@10000/led@8,0")
    # 0x8 -> apbregs 0x10008 -> iofpga <3 0x10008> -> motherboard <0 0x1c010008> -> CPU
    assert [e.cpu_address for e in reg_entries(led)] == [0x1c010008]
    assert device_name(led) == "1c010008.0.led"   # mask = <1>: ffs(1) - 1 = 0
    kmi = tree.node("/bus@8000000/motherboard-bus@8000000/iofpga-bus@300000000/kmi@60000")
    # interrupts = <8> through bus@8000000's interrupt-map (mask 0xf) -> GIC <0 0xa5 4>
    assert [(s.controller, s.kind, s.number, s.trigger)
            for s in resolve_interrupts(tree, kmi).specs] == [
        ("/interrupt-controller@2c010000", "SPI", 0xa5, "level-high")]


def test_meson_g12a_two_level_ranges(kernel_dtbs: Path) -> None:
    tree = DeviceTree.from_dtb(kernel_dtbs / "amlogic/meson-g12a-sei510.dtb")
    rng = tree.node("/soc/bus@ff600000/bus@30000/rng@218")
    assert [e.cpu_address for e in reg_entries(rng)] == [0xff630218]
    assert device_name(rng) == "ff630218.rng"
