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


def test_raspi3b_dma_engine_lines_are_armctrl_bank_and_irq_all_level(kernel_dtbs: Path) -> None:
    # bcm283x.dtsi dma@7e007000: interrupt-parent = <&intc> (brcm,bcm2836-armctrl-ic),
    # interrupts = <1 16>, ... <1 27> (channel 11-14 share it, four times) and <1 28>
    result = run_cli("show", "3f007000.dma-controller", "--json",
                     dtb=kernel_dtbs / "broadcom/bcm2837-rpi-3-b.dtb")
    assert (result.code, result.err) == (0, ""), result.err
    c = result.json()
    lines = [i["line"] for i in c["irqs"]]
    assert lines == [f"bank 1 irq {n}" for n in range(16, 28)] + ["bank 1 irq 27"] * 3 + [
        "bank 1 irq 28"]
    assert {(i["trigger"], i["binding"], i["controller"]) for i in c["irqs"]} == {
        ("level", "brcm,bcm2836-armctrl-ic", "/soc/interrupt-controller@7e00b200")}
    # armctrl_xlate() records IRQ_TYPE_NONE and ARMCTRL-level cannot set one: VFIO sees no
    # level type and offers EVENTFD only, which the verdict calls out
    assert {i["expected_flags"] for i in c["irqs"]} == {1}
    assert any("is a level line the kernel records no trigger type for" in r
               for r in c["reasons"])
    text = run_cli("show", "3f007000.dma-controller",
                   dtb=kernel_dtbs / "broadcom/bcm2837-rpi-3-b.dtb").out
    assert "bank 1 irq 16  level    EVENTFD\n" in text
    for wrong in ("edge-falling", "edge-both", "level-low", "none"):
        assert wrong not in text


@pytest.mark.parametrize("page_size", [16384, 65536])
def test_the_hosts_page_size_decides_mmap(page_size: int, virt_dtb: Path, tmp_path: Path) -> None:
    host = build_fake_host(tmp_path, virt_dtb, page_size=page_size)
    c = show(host, "9030000.pl061")   # reg 0x9030000 + 0x1000: 4 KiB aligned only
    assert (c["page_size"], c["page_size_source"]) == (
        page_size, "running kernel, /proc/self/auxv AT_PAGESZ")
    assert [(r["mmap"], r["expected_flags"]) for r in c["regions"]] == [(False, 3)]
    text = run_cli("show", "9030000.pl061", root=host.root).out
    assert f"Page size:   {page_size // 1024} KiB (running kernel" in text
    assert f"no (not {page_size // 1024} KiB aligned)" in text


def test_dtb_page_size_is_given_or_said_to_be_assumed(virt_dtb: Path) -> None:
    assumed = run_cli("show", "9030000.pl061", "--json", dtb=virt_dtb).json()
    assert assumed["page_size"] == 4096 and "assumed for --dtb" in assumed["page_size_source"]
    assert assumed["regions"][0]["mmap"] is True
    given = run_cli("--page-size", "64K", "show", "9030000.pl061", "--json", dtb=virt_dtb)
    assert given.code == 0, given.err
    data = given.json()
    assert (data["page_size"], data["page_size_source"]) == (65536, "given with --page-size")
    assert data["regions"][0]["mmap"] is False
    assert run_cli("--page-size", "65536", "show", "9030000.pl061", "--json",
                   dtb=virt_dtb).json()["page_size"] == 65536


def test_bad_page_size_uses_are_refused(virt: FakeHost, virt_dtb: Path) -> None:
    bad = run_cli("--page-size", "8K", "show", "9030000.pl061", dtb=virt_dtb)
    assert bad.code == 1 and "error: --page-size '8K' is not a page size" in bad.err
    assert "hint: give 4K, 16K or 64K" in bad.err
    live = run_cli("--page-size", "64K", "show", "9030000.pl061", root=virt.root)
    assert live.code == 1 and "error: --page-size applies to --dtb only" in live.err
    assert "read from its running kernel" in live.err


def test_zcu102_gem_phy_on_its_own_mdio_is_internal(kernel_dtbs: Path) -> None:
    # ethernet@ff0e0000: phy-handle = <&phy0>, mdio { phy0: ethernet-phy@c { reg = <0xc>;
    # reset-gpios = <&tca6416_u97 6 GPIO_ACTIVE_LOW>; }; }: an MDIO address, not MMIO
    c = run_cli("show", "ff0e0000.ethernet", "--json",
                dtb=kernel_dtbs / "xilinx/zynqmp-zcu102-rev1.0.dtb").json()
    phy = "/axi/ethernet@ff0e0000/mdio/ethernet-phy@c"
    (handle,) = [lk for lk in c["links"] if lk["prop"] == "phy-handle"]
    assert (handle["target"], handle["internal"]) == (phy, True)
    (child,) = c["children"]
    assert (child["path"], child["cpu_reg"], child["internal"]) == (phy, False, True)
    assert not [r for r in c["reasons"] if r.startswith(("phy-handle", "child"))]
    # but the PHY's reset line is on the host's I2C GPIO expander: that stays an entanglement
    assert f"reset-gpios -> /axi/i2c@ff020000/gpio@20 (from {phy})" in c["reasons"]
