"""platform_hostdev.vfio.inspection: the DT correlation against hand-made VFIO views."""
from __future__ import annotations

import pytest
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.host.inventory import Device
from platform_hostdev.host.pagesize import dtb_page_size
from platform_hostdev.vfio.client import DeviceInfo, GroupRef, IrqInfo, RegionInfo, VfioView
from platform_hostdev.vfio.correlate import Correlation, correlate
from platform_hostdev.vfio.inspection import DISAGREEMENT, WARNING, compare, inspect

from tests.support.fdtwriter import node

# The QEMU virt machine's pieces that matter (GIC SPI: <0 n flags>, 1 = edge, 4 = level).
VIRT = DeviceTree(node("", {"#address-cells": 2, "#size-cells": 2,
                            "interrupt-parent": 0x8002}, [
    node("intc@8000000", {"compatible": "arm,cortex-a15-gic", "interrupt-controller": True,
                          "#interrupt-cells": 3, "phandle": 0x8002,
                          "reg": [0, 0x8000000, 0, 0x10000, 0, 0x8010000, 0, 0x10000]}),
    node("virtio_mmio@a000000", {"compatible": "virtio,mmio", "dma-coherent": True,
                                 "reg": [0, 0xA000000, 0, 0x200], "interrupts": [0, 16, 1]}),
    node("pl061@9030000", {"compatible": ["arm,pl061", "arm,primecell"],
                           "reg": [0, 0x9030000, 0, 0x1000], "interrupts": [0, 7, 4]}),
    node("two@c000000", {"compatible": "vendor,two",
                         "reg": [0, 0xC000000, 0, 0x1000, 0, 0xC002000, 0, 0x100],
                         "interrupts": [0, 20, 4, 0, 21, 1]}),
]))

VIRTIO = Device("a000000.virtio_mmio", "platform", "/virtio_mmio@a000000", ("virtio,mmio",))
PL061 = Device("9030000.pl061", "amba", "/pl061@9030000", ("arm,pl061", "arm,primecell"))
TWO = Device("c000000.two", "platform", "/two@c000000", ("vendor,two",))

NOIOMMU = GroupRef("0", True, "/dev/vfio/noiommu-0")
IOMMU = GroupRef("4", False, "/dev/vfio/4")

# READ|WRITE = 3, |MMAP = 7; EVENTFD = 1, |MASKABLE|AUTOMASKED = 7; PLATFORM 4, AMBA 8.
SEEN = {
    "virtio": (4, [(3, 0x200)], [1]),
    "pl061": (8, [(7, 0x1000)], [7]),
    "two": (4, [(7, 0x1000), (3, 0x100)], [7, 1]),
}


def view(device: Device, flags: int, regions: list[tuple[int, int]], irqs: list[int],
         group: GroupRef = IOMMU) -> VfioView:
    return VfioView(
        device.name, device.bus, "vfio-amba" if device.bus == "amba" else "vfio-platform",
        group, 0, "NOIOMMU" if group.noiommu else "TYPE1v2",
        DeviceInfo(flags, len(regions), len(irqs)),
        tuple(RegionInfo(i, f, size, i << 40) for i, (f, size) in enumerate(regions)),
        tuple(IrqInfo(i, f, 1) for i, f in enumerate(irqs)))


def seen(key: str, device: Device, group: GroupRef = IOMMU) -> VfioView:
    flags, regions, irqs = SEEN[key]
    return view(device, flags, list(regions), list(irqs), group)


def corr(device: Device) -> Correlation:
    return correlate(VIRT, device, dtb_page_size(None))


def kinds(device: Device, live: VfioView) -> list[str]:
    return [f.kind for f in compare(corr(device), live) if f.severity == DISAGREEMENT]


def test_expectations_from_the_dt() -> None:
    """The hand-made views below rest on these DT expectations."""
    c = corr(VIRTIO)
    assert [(r.size, r.mmap, r.expected_flags) for r in c.regions] == [(0x200, False, 3)]
    assert [i.expected_flags for i in c.irqs] == [1]
    c = corr(PL061)
    assert [(r.size, r.mmap, r.expected_flags) for r in c.regions] == [(0x1000, True, 7)]
    assert [i.expected_flags for i in c.irqs] == [7]


@pytest.mark.parametrize(("key", "device"), [("virtio", VIRTIO), ("pl061", PL061),
                                             ("two", TWO)])
def test_views_seen_on_the_real_kernel_agree(key: str, device: Device) -> None:
    result = inspect(corr(device), seen(key, device))
    assert result.findings == []
    assert result.agree


def test_noiommu_is_a_warning_not_a_disagreement() -> None:
    result = inspect(corr(VIRTIO), seen("virtio", VIRTIO, NOIOMMU))
    assert result.agree
    assert [(w.kind, w.severity) for w in result.warnings] == [("noiommu", WARNING)]
    assert "UNSAFE" in result.warnings[0].message
    assert "QEMU cannot use it" in result.warnings[0].message


@pytest.mark.parametrize(("device", "flags"), [(VIRTIO, 8), (VIRTIO, 2), (PL061, 4),
                                               (PL061, 0)])
def test_device_flag_must_match_the_bus(device: Device, flags: int) -> None:
    key = "virtio" if device is VIRTIO else "pl061"
    _, regions, irqs = SEEN[key]
    found = compare(corr(device), view(device, flags, list(regions), list(irqs)))
    assert [f.kind for f in found] == ["device-type"]
    assert found[0].expected == ("PLATFORM" if device is VIRTIO else "AMBA")


def test_region_count() -> None:
    assert kinds(VIRTIO, view(VIRTIO, 4, [(3, 0x200), (3, 0x100)], [1])) == ["region-count"]
    assert kinds(TWO, view(TWO, 4, [(7, 0x1000)], [7, 1])) == ["region-count"]


def test_region_size() -> None:
    found = compare(corr(PL061), view(PL061, 8, [(7, 0x2000)], [7]))
    assert [f.kind for f in found] == ["region-size"]
    assert (found[0].index, found[0].expected, found[0].found) == (0, "0x1000", "0x2000")


def test_mmap_expected_but_missing() -> None:
    assert kinds(PL061, view(PL061, 8, [(3, 0x1000)], [7])) == ["region-mmap-missing"]


def test_mmap_present_but_not_expected() -> None:
    assert kinds(VIRTIO, view(VIRTIO, 4, [(7, 0x200)], [1])) == ["region-mmap-unexpected"]


def test_mmap_judged_per_region() -> None:
    assert kinds(TWO, view(TWO, 4, [(7, 0x1000), (7, 0x100)], [7, 1])) == [
        "region-mmap-unexpected"]
    found = compare(corr(TWO), view(TWO, 4, [(7, 0x1000), (7, 0x100)], [7, 1]))
    assert found[0].index == 1


def test_region_access() -> None:
    assert kinds(VIRTIO, view(VIRTIO, 4, [(1, 0x200)], [1])) == ["region-access"]


def test_irq_count() -> None:
    assert kinds(VIRTIO, view(VIRTIO, 4, [(3, 0x200)], [])) == ["irq-count"]
    assert kinds(PL061, view(PL061, 8, [(7, 0x1000)], [7, 7])) == ["irq-count"]


def test_level_irq_without_automasked() -> None:
    found = compare(corr(PL061), view(PL061, 8, [(7, 0x1000)], [1]))
    assert [f.kind for f in found] == ["irq-level-not-automasked"]
    assert found[0].expected == "EVENTFD|MASKABLE|AUTOMASKED"
    assert found[0].found == "EVENTFD"


def test_edge_irq_with_automasked() -> None:
    assert kinds(VIRTIO, view(VIRTIO, 4, [(3, 0x200)], [7])) == ["irq-edge-automasked"]


def test_irq_judged_per_index() -> None:
    found = compare(corr(TWO), view(TWO, 4, [(7, 0x1000), (3, 0x100)], [7, 7]))
    assert [(f.kind, f.index) for f in found] == [("irq-edge-automasked", 1)]


def test_irq_without_eventfd() -> None:
    assert kinds(VIRTIO, view(VIRTIO, 4, [(3, 0x200)], [0])) == ["irq-eventfd-missing"]


def test_unknown_trigger_is_not_judged() -> None:
    c = corr(PL061)
    c.irqs[0] = c.irqs[0]._replace(trigger=None, expected_flags=None)
    assert compare(c, view(PL061, 8, [(7, 0x1000)], [1])) == []
    assert compare(c, view(PL061, 8, [(7, 0x1000)], [7])) == []


def test_every_disagreement_at_once() -> None:
    result = inspect(corr(PL061), view(PL061, 4, [(3, 0x800), (3, 0x10)], [1, 1], NOIOMMU))
    assert not result.agree
    assert [f.kind for f in result.disagreements] == [
        "device-type", "region-count", "region-size", "region-mmap-missing", "irq-count",
        "irq-level-not-automasked"]
    assert [f.kind for f in result.warnings] == ["noiommu"]
    assert all(f.message for f in result.findings)


def test_json_puts_both_sides_together() -> None:
    data = inspect(corr(TWO), view(TWO, 4, [(7, 0x1000)], [7, 1, 1], NOIOMMU)).to_json()
    assert data["agree"] is False
    assert data["device_flags"] == {"expected": ["PLATFORM"], "vfio": ["PLATFORM"]}
    assert data["group"] == {"number": "0", "node": "/dev/vfio/noiommu-0", "noiommu": True,
                             "unsafe": True}
    assert data["regions"][0] == {
        "index": 0,
        "dt": {"source": "reg[0]", "cpu_address": "0xc000000", "size": "0x1000",
               "flags": ["READ", "WRITE", "MMAP"]},
        "vfio": {"size": "0x1000", "offset": "0x0", "flags": ["READ", "WRITE", "MMAP"]},
        "findings": []}
    assert data["regions"][1]["vfio"] is None
    assert data["irqs"][2]["dt"] is None
    assert data["irqs"][2]["vfio"] == {"flags": ["EVENTFD"], "count": 1}
    assert data["irqs"][0]["dt"]["trigger"].startswith("level")
    assert [d["kind"] for d in data["disagreements"]] == ["region-count", "irq-count"]
    assert [w["kind"] for w in data["warnings"]] == ["noiommu"]
