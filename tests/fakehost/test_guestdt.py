"""Guest device-tree nodes for real boards' devices: golden DTS (dtc), refusals, show's chain.

The base is QEMU's own virt DT (dumpdtb); only what we add (the platform-bus
children and clock stubs) goes into the golden DTS, decompiled by dtc.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from platform_hostdev.dt.fdt import RawNode, build_dtb, read_dtb
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.builder import PLATFORM_BUS_PATH, build_guest_tree
from platform_hostdev.guestdt.store import STATE_DIR, GuestDtStore
from platform_hostdev.host.inventory import Device, load_inventory
from platform_hostdev.host.pagesize import dtb_page_size
from platform_hostdev.vfio.correlate import Correlation, correlate

from tests.support.boards import run_cli
from tests.support.fakehost import build_fake_host
from tests.support.fdtwriter import node
from tests.support.golden import check_golden
from tests.support.synthetic import CLK_PHANDLE, gic_soc, tree_of

CASES = {
    # an xgmac-like simple NIC: copied, reg/interrupts rewritten, nothing else
    "corstone1000-lan91c111": ("arm/corstone1000-fvp.dtb", ["40100000.ethernet"]),
    # a device with clocks (fixed-clock stubs at the host rates), two of them
    "seattle-xgbe": ("amd/amd-overdrive-rev-b1.dtb", ["e0700000.xgmac", "e0900000.xgmac"]),
    # a UART (sub-page region) before a four-region SATA: command-line order matters
    "merlin-uart-then-sata": ("apm/apm-merlin.dtb", ["10600000.serial", "1a000000.sata"]),
}
REFUSED = {
    # its own MDIO bus and PHY are carried; the firmware clocks are what it cannot do without
    "zynqmp-gem-firmware-clocks": ("xilinx/zynqmp-zcu102-rev1.0.dtb", "ff0e0000.ethernet",
                                   "the rate of its clock /firmware/zynqmp-firmware/"
                                   "clock-controller [31] is not known"),
    "ls1046a-uart-clockgen": ("freescale/fsl-ls1046a-rdb.dtb", "21c0500.serial",
                              "the rate of its clock /soc/clocking@1ee1000 [4, 1] is not known"),
    "virt-pl061-amba": ("qemu-virt", "9030000.pl061", "9030000.pl061 is an AMBA device"),
}


def _dts(root: RawNode) -> str:
    dtc = shutil.which("dtc")
    if dtc is None:
        pytest.fail("dtc is not installed: run scripts/setup-host (device-tree-compiler)")
    done = subprocess.run([dtc, "-I", "dtb", "-O", "dts", "-q", "-"], input=build_dtb(root),
                          capture_output=True, check=True, timeout=30)
    return done.stdout.decode()


def _added(base: RawNode) -> RawNode:
    """Only what we add: the platform bus's children and our clock stubs."""
    bus = next(c for c in base.children if c.name == PLATFORM_BUS_PATH[1:])
    root = RawNode("", {}, [c for c in base.children if c.name.startswith("phd-clk-")])
    root.children.append(RawNode(bus.name, {}, bus.children))
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_guest_nodes_match_the_golden_dts(case: str, kernel_dtbs: Path, virt_dtb: Path,
                                          update_golden: bool) -> None:
    dtb, devices = CASES[case]
    inventory = load_inventory(dtb=str(kernel_dtbs / dtb))
    correlations = [correlate(inventory.tree, inventory.resolve(d), inventory.page_size())
                    for d in devices]
    guest = build_guest_tree(read_dtb(virt_dtb), inventory.tree, correlations)
    check_golden(f"guestdt/{case}.dts", _dts(_added(guest.root)), update_golden)
    lines = []
    for d in guest.devices:
        regions = [(hex(r.host_address), hex(r.guest_address), hex(r.size)) for r in d.regions]
        irqs = [(i.host_line, i.guest_spi, i.trigger) for i in d.irqs]
        lines.append(f"{d.name} {d.host_path} -> {d.guest_path} {regions} {irqs} {d.notes}")
    chain = "\n".join(lines)
    check_golden(f"guestdt/{case}.chain", chain + "\n", update_golden)


def test_hand_checked_facts_of_the_seattle_xgbe_nodes(kernel_dtbs: Path, virt_dtb: Path) -> None:
    inventory = load_inventory(dtb=str(kernel_dtbs / "amd/amd-overdrive-rev-b1.dtb"))
    first, second = (correlate(inventory.tree, inventory.resolve(d), inventory.page_size())
                     for d in ("e0700000.xgmac", "e0900000.xgmac"))
    guest = build_guest_tree(read_dtb(virt_dtb), inventory.tree, [first, second])
    a, b = guest.devices
    # 6 IRQs each, in order, on SPIs from 112; levels stay level, edges stay edge
    assert [i.guest_spi for i in a.irqs + b.irqs] == list(range(112, 124))
    assert [i.trigger for i in a.irqs] == ["level-high"] + ["edge-rising"] * 4 + ["level-high"]
    # the two 512 KiB regions are naturally aligned; the small ones fill in after
    assert [hex(r.guest_address) for r in a.regions][:2] == ["0xc000000", "0xc080000"]
    assert all(r.guest_address % 0x80000 == 0 for r in b.regions[:2])
    assert any("fixed-clock" in n and "250000000 Hz" in n for n in a.notes)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_complex_devices_are_refused_with_the_reason(case: str, kernel_dtbs: Path,
                                                     virt_dtb: Path) -> None:
    dtb, device, reason = REFUSED[case]
    source = virt_dtb if dtb == "qemu-virt" else kernel_dtbs / dtb
    inventory = load_inventory(dtb=str(source))
    correlation = correlate(inventory.tree, inventory.resolve(device), inventory.page_size())
    with pytest.raises(HostdevError) as info:
        build_guest_tree(read_dtb(virt_dtb), inventory.tree, [correlation])
    assert reason in info.value.what
    assert f"device {device} cannot be given to a guest" in info.value.what
    assert info.value.fix


def test_show_prints_where_a_device_sits_in_a_guest(tmp_path: Path, kernel_dtbs: Path,
                                                    virt_dtb: Path) -> None:
    dtb = kernel_dtbs / "arm/corstone1000-fvp.dtb"
    host = build_fake_host(tmp_path / "root", dtb)
    inventory = load_inventory(host.root)
    correlation = correlate(inventory.tree, inventory.resolve("40100000.ethernet"),
                            inventory.page_size())
    guest = build_guest_tree(read_dtb(virt_dtb), inventory.tree, [correlation])
    uuid = "0c1d2e3f-0000-4000-8000-000000000001"
    GuestDtStore(host.root / STATE_DIR.lstrip("/")).save(uuid, build_dtb(guest.root), "fp", {},
                                                          guest.devices)
    result = run_cli("show", "40100000.ethernet", root=host.root)
    assert result.code == 0, result.err
    assert f"In the guest of domain {uuid}" in result.out
    rows = [line.split() for line in result.out.splitlines() if "40100000.ethernet  " in line]
    assert ["40100000.ethernet", "/ethernet@4010000", "region", "0", "0x40100000+0x10000",
            "0xc000000", "/platform-bus@c000000/ethernet@0"] in rows
    assert ["40100000.ethernet", "/ethernet@4010000", "irq", "0", "SPI", "116", "SPI", "112",
            "level-high", "/platform-bus@c000000/ethernet@0"] in rows


PHY, OTHER_PHY, PHY_IRQ = 40, 41, 42


def _nic(phy_handle: int, phy_props: dict[str, object] | None = None) -> RawNode:
    """A MAC with its own MDIO bus and PHY (and an MDIO bus elsewhere with another PHY)."""
    return gic_soc(
        node("ethernet@100000", {"compatible": "cdns,gem", "reg": [0x100000, 0x1000],
                                 "interrupts": [0, 30, 4], "clocks": [CLK_PHANDLE, CLK_PHANDLE],
                                 "clock-names": ["pclk", "hclk"], "phy-mode": "rgmii-id",
                                 "phy-handle": phy_handle}, [
            node("mdio", {"#address-cells": 1, "#size-cells": 0}, [
                node("ethernet-phy@c", {"reg": 0xc, "phandle": PHY, "ti,rx-internal-delay": 8,
                                        **(phy_props or {})}),
                node("ethernet-phy@d", {"reg": 0xd, "status": "disabled"}),
            ]),
        ]),
        node("mdio@200000", {"compatible": "vendor,mdio", "reg": [0x200000, 0x100],
                             "#address-cells": 1, "#size-cells": 0}, [
            node("ethernet-phy@1", {"reg": 1, "phandle": OTHER_PHY})]),
        node("gpio@300000", {"compatible": "arm,pl061", "reg": [0x300000, 0x1000],
                             "interrupt-controller": True, "#interrupt-cells": 2,
                             "gpio-controller": True, "#gpio-cells": 2, "phandle": PHY_IRQ}),
    )


def _guest_nic(virt_dtb: Path, host: RawNode) -> tuple[RawNode, object]:
    tree = tree_of(host)
    device = Device("100000.ethernet", "platform", "/soc/ethernet@100000", ())
    correlation = correlate(tree, device, dtb_page_size(None))
    return build_guest_tree(read_dtb(virt_dtb), tree, [correlation]).root, correlation


def test_a_mac_with_its_own_mdio_and_phy_is_accepted(virt_dtb: Path) -> None:
    root, correlation = _guest_nic(virt_dtb, _nic(PHY))
    assert isinstance(correlation, Correlation)
    assert not [r for r in correlation.reasons if "phy" in r], correlation.reasons
    (link,) = [lk for lk in correlation.links if lk.prop == "phy-handle"]
    assert link.internal and link.target == "/soc/ethernet@100000/mdio/ethernet-phy@c"
    bus = next(c for c in root.children if c.name == PLATFORM_BUS_PATH[1:])
    (mac,) = bus.children
    (mdio,) = mac.children
    phy, off = mdio.children
    handle = phy.properties["phandle"]
    assert mac.properties["phy-handle"] == handle != (PHY).to_bytes(4, "big")
    assert phy.properties["reg"] == (0xc).to_bytes(4, "big")       # the MDIO address stays
    assert phy.properties["ti,rx-internal-delay"] == (8).to_bytes(4, "big")
    assert off.properties["status"] == b"disabled\0"                # a disabled PHY stays so
    assert mdio.properties["#size-cells"] == bytes(4)
    handles = [n.properties.get("phandle") for n in _all(root)]
    assert handles.count(handle) == 1                                 # unique in the guest tree


def test_a_phy_elsewhere_is_still_an_entanglement(virt_dtb: Path) -> None:
    with pytest.raises(HostdevError) as info:
        _guest_nic(virt_dtb, _nic(OTHER_PHY))
    assert "phy-handle links it to /soc/mdio@200000/ethernet-phy@1" in info.value.what


def test_a_phy_with_a_host_interrupt_is_refused(virt_dtb: Path) -> None:
    host = _nic(PHY, {"interrupt-parent": PHY_IRQ, "interrupts": [5, 8]})
    tree = tree_of(host)
    correlation = correlate(tree, Device("100000.ethernet", "platform", "/soc/ethernet@100000",
                                         ()), dtb_page_size(None))
    assert ("child /soc/ethernet@100000/mdio/ethernet-phy@c has its own interrupts "
            "(VFIO does not expose it)") in correlation.reasons
    with pytest.raises(HostdevError) as info:
        build_guest_tree(read_dtb(virt_dtb), tree, [correlation])
    assert "ethernet-phy@c has its own interrupts" in info.value.what


def test_a_phy_reset_gpio_on_the_host_is_refused(virt_dtb: Path) -> None:
    host = _nic(PHY, {"reset-gpios": [PHY_IRQ, 3, 1]})
    tree = tree_of(host)
    correlation = correlate(tree, Device("100000.ethernet", "platform", "/soc/ethernet@100000",
                                         ()), dtb_page_size(None))
    assert ("reset-gpios -> /soc/gpio@300000 (from /soc/ethernet@100000/mdio/ethernet-phy@c)"
            in correlation.reasons)
    with pytest.raises(HostdevError) as info:
        build_guest_tree(read_dtb(virt_dtb), tree, [correlation])
    assert "links elsewhere through reset-gpios" in info.value.what


def _all(root: RawNode) -> list[RawNode]:
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.children)
    return out


def test_a_zero_size_region_is_refused_not_a_traceback(kernel_dtbs: Path, virt_dtb: Path) -> None:
    # sc7280-crd-r3's wifi@17a10040: reg = <0 0x17a10040 0 0x0>
    inventory = load_inventory(dtb=str(kernel_dtbs / "qcom/sc7280-crd-r3.dtb"))
    correlation = correlate(inventory.tree, inventory.resolve("17a10040.wifi"),
                            inventory.page_size())
    with pytest.raises(HostdevError) as info:
        build_guest_tree(read_dtb(virt_dtb), inventory.tree, [correlation])
    assert "VFIO region 0 (reg[0] at 0x17a10040) has size 0" in info.value.what
    assert info.value.fix
