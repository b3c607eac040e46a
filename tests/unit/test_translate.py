"""Forward/backward translation: golden files, idempotence, host resolution."""
from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from platform_hostdev.domain import translate
from platform_hostdev.domain.hostdev import PHD_NS, QEMU_NS, parse_xml
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.inventory import Inventory, load_inventory

from tests.support.fdtwriter import node, to_dtb
from tests.support.golden import GOLDEN_DIR, check_golden

CASES = sorted(p.name[:-len("-in.xml")] for p in (GOLDEN_DIR / "translate").glob("*-in.xml"))


def _normalised(text: str) -> str:
    return translate.to_string(parse_xml(text, "x"))


def test_cases_exist() -> None:
    assert {"basic", "user-args", "no-platform", "locked-kept"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_forward_golden(case: str, update_golden: bool) -> None:
    source = (GOLDEN_DIR / "translate" / f"{case}-in.xml").read_text()
    out = translate.forward(parse_xml(source, case), None).xml()
    check_golden(f"translate/{case}-out.xml", out, update_golden)


@pytest.mark.parametrize("case", CASES)
def test_forward_is_idempotent_and_backward_restores(case: str) -> None:
    source = (GOLDEN_DIR / "translate" / f"{case}-in.xml").read_text()
    once = translate.forward(parse_xml(source, case), None)
    twice = translate.forward(once.tree, None)
    assert twice.xml() == once.xml()
    assert translate.to_string(translate.backward(once.tree)) == _normalised(source)


def test_basic_arguments_and_bookkeeping() -> None:
    source = (GOLDEN_DIR / "translate" / "basic-in.xml").read_text()
    result = translate.forward(parse_xml(source, "basic"), None)
    root = result.tree.getroot()
    args = [a.get("value") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args == ["-device", "vfio-platform,host=ff0e0000.ethernet,id=phd-ua-eth0,"
                    "x-no-mmap=on,x-irqfd=on,mmap-timeout-ms=1100",
                    "-device", "vfio-platform,host=ff0f0000.serial,id=phd-1"]
    assert root.find("devices/hostdev") is None
    container = root.find(f"metadata/{{{PHD_NS}}}hostdevs")
    assert container is not None
    assert container.get("added") == "metadata commandline memoryBacking locked"
    assert [h.get("position") for h in container] == ["1", "3"]
    assert root.find("memoryBacking/locked") is not None
    assert all(not h.checked for h in result.hostdevs)
    assert len(result.warnings) == 2 and "not checked" in result.warnings[0]


def test_user_args_untouched() -> None:
    source = (GOLDEN_DIR / "translate" / "user-args-in.xml").read_text()
    result = translate.forward(parse_xml(source, "user-args"), None)
    root = result.tree.getroot()
    values = [a.get("value") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert values[:2] == ["-device", "virtio-rng-device,id=rng-user"]
    assert values[2:] == ["-device", "vfio-platform,host=fd500000.dma,id=phd-0"]
    assert root.find(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}env") is not None
    assert root.find("memoryBacking/hugepages") is not None
    back = translate.backward(result.tree).getroot()
    assert back.find("memoryBacking/locked") is None
    assert back.find("memoryBacking/hugepages") is not None


def test_user_locked_kept_on_backward() -> None:
    source = (GOLDEN_DIR / "translate" / "locked-kept-in.xml").read_text()
    result = translate.forward(parse_xml(source, "locked"), None)
    container = result.tree.getroot().find(f"metadata/{{{PHD_NS}}}hostdevs")
    assert container is not None and "locked" not in (container.get("added") or "")
    back = translate.backward(result.tree).getroot()
    assert back.find("memoryBacking/locked") is not None


def test_merge_new_hostdev_into_translated_document() -> None:
    source = (GOLDEN_DIR / "translate" / "basic-in.xml").read_text()
    once = translate.forward(parse_xml(source, "basic"), None)
    extra = parse_xml("<hostdev type='platform'><source><device name='fe000000.gpio'/></source>"
                      "</hostdev>", "extra").getroot()
    translate.add_device(once.tree.getroot(), extra)
    again = translate.forward(once.tree, None)
    assert [h.name for h in again.hostdevs] == ["ff0e0000.ethernet", "ff0f0000.serial",
                                                "fe000000.gpio"]


def _inventory(tmp_path: Path) -> Inventory:
    dtb = to_dtb(node("", {"#address-cells": 1, "#size-cells": 1}, [
        node("aliases", {"ethernet0": "/soc/ethernet@ff0e0000"}),
        node("soc", {"compatible": "simple-bus", "#address-cells": 1, "#size-cells": 1,
                     "ranges": b""}, [
            node("ethernet@ff0e0000", {"compatible": "calxeda,hb-xgmac",
                                       "reg": [0xff0e0000, 0x1000]}),
            node("serial@ff0f0000", {"compatible": "ns16550a", "reg": [0xff0f0000, 0x100]}),
            node("gpio@9030000", {"compatible": ["arm,pl061", "arm,primecell"],
                                  "reg": [0x9030000, 0x1000]}),
        ]),
    ]))
    path = tmp_path / "board.dtb"
    path.write_bytes(dtb)
    return load_inventory("/", str(path))


def _domain(hostdev: str) -> etree._ElementTree:
    return parse_xml(f"""<domain type='qemu'><name>g</name>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <devices>{hostdev}</devices></domain>""", "domain")


def test_resolution_on_host_picks_model_and_name(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    result = translate.forward(_domain(
        "<hostdev type='platform'><source><devicetree path='/soc/ethernet@ff0e0000'/></source>"
        "</hostdev>"), inv)
    assert result.warnings == []
    (item,) = result.hostdevs
    assert (item.name, item.model, item.checked) == ("ff0e0000.ethernet", "vfio-calxeda-xgmac",
                                                     True)
    assert "vfio-calxeda-xgmac,host=ff0e0000.ethernet,id=phd-0" in result.xml()


@pytest.mark.parametrize("hostdev, message", [
    ("<hostdev type='platform'><source><devicetree path='/soc/ethernet@ff0e0000'/>"
     "<device name='ff0f0000.serial'/></source></hostdev>", "names two devices"),
    ("<hostdev type='platform'><source><device name='9030000.gpio'/></source></hostdev>",
     "AMBA"),
    ("<hostdev type='platform'><source><device name='ff0e0000.ethernet'/></source></hostdev>"
     "<hostdev type='platform'><source><devicetree path='/soc/ethernet@ff0e0000'/></source>"
     "</hostdev>", "appears in two"),
    ("<hostdev type='platform'><source><device name='nothere.dev'/></source></hostdev>",
     "no platform or amba device"),
])
def test_refused_on_host(tmp_path: Path, hostdev: str, message: str) -> None:
    with pytest.raises(HostdevError, match=message):
        translate.forward(_domain(hostdev), _inventory(tmp_path))


@pytest.mark.parametrize("hostdev, message", [
    ("<hostdev type='platform'><source><device name='..'/></source></hostdev>",
     "not a valid sysfs device name"),
    ("<hostdev type='platform'><source><devicetree path='/soc/../x'/></source></hostdev>",
     "invalid component"),
    ("<hostdev type='platform'><source><device name='a/b'/></source></hostdev>",
     "schema"),
    ("<hostdev type='platform'><source><devicetree path='/soc/x@1'/></source></hostdev>",
     "gives only a DT path"),
    ("<hostdev type='platform'><source><device name='a.b'/></source><alias name='x'/></hostdev>"
     "<hostdev type='platform'><source><device name='c.d'/></source><alias name='x'/></hostdev>",
     "alias x appears in two"),
    ("<hostdev type='platform'><source><device name='a.b'/></source><rom bar='on'/></hostdev>",
     "schema"),
    ("<hostdev type='platform' bogus='1'><source><device name='a.b'/></source></hostdev>",
     "schema"),
])
def test_refused_without_host(hostdev: str, message: str) -> None:
    with pytest.raises(HostdevError, match=message):
        translate.forward(_domain(hostdev), None)


@pytest.mark.parametrize("change, message", [
    (('arch="aarch64"', 'arch="x86_64"'), "aarch64 guest"),
    (('machine="virt"', 'machine="raspi3b"'), "'virt' machine"),
    (("<devices>", "<features><acpi/></features><devices>"), "ACPI"),
])
def test_domain_checks(change: tuple[str, str], message: str) -> None:
    text = translate.to_string(_domain(
        "<hostdev type='platform'><source><device name='a.b'/></source></hostdev>"))
    translate.forward(parse_xml(text, "d"), None)  # the unchanged domain passes
    with pytest.raises(HostdevError, match=message):
        changed = text.replace(*change)
        assert changed != text
        translate.forward(parse_xml(changed, "d"), None)


def test_unknown_element_in_our_namespace_refused() -> None:
    source = (GOLDEN_DIR / "translate" / "basic-in.xml").read_text()
    text = translate.forward(parse_xml(source, "basic"), None).xml()
    bad = text.replace("<phd:alias name=\"ua-eth0\"/>", "<phd:alias name=\"ua-eth0\"/><phd:x/>")
    assert bad != text
    with pytest.raises(HostdevError, match="schema"):
        translate.backward(parse_xml(bad, "bad"))
    stray = text.replace("<devices>", f"<devices><phd:other xmlns:phd='{PHD_NS}'/>")
    with pytest.raises(HostdevError, match="outside"):
        translate.backward(parse_xml(stray, "stray"))


def test_backward_after_libvirt_reordering_appends() -> None:
    source = (GOLDEN_DIR / "translate" / "basic-in.xml").read_text()
    text = translate.forward(parse_xml(source, "basic"), None).xml()
    text = text.replace('position="3"', 'position="99"')
    back = translate.backward(parse_xml(text, "x")).getroot()
    assert [e.tag for e in back.find("devices")][-1] == "hostdev"


def test_a_host_device_name_xml_cannot_carry_is_refused(tmp_path: Path) -> None:
    """The name goes into -device ...,host=NAME in the XML: one with a control character
    (a tampered sysfs) is a clean refusal, never an lxml ValueError."""
    inv = _inventory(tmp_path)
    odd = [d._replace(name="ff0e0000.eth\x1b[2Jernet") if d.dt_path == "/soc/ethernet@ff0e0000"
           else d for d in inv.devices]
    with pytest.raises(HostdevError) as info:
        translate.forward(_domain(
            "<hostdev type='platform'><source><devicetree path='/soc/ethernet@ff0e0000'/>"
            "</source></hostdev>"), Inventory(inv.tree, odd, inv.page))
    assert info.value.code == "invalid-device-spec"
    assert info.value.what == ("the host device at /soc/ethernet@ff0e0000 is named "
                               "'ff0e0000.eth\\x1b[2Jernet', with characters the domain XML "
                               "cannot carry")


def _args(root: etree._Element) -> list[str | None]:
    return [a.get("value") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]


def test_iommufd_object_once_and_the_property_on_each_device_that_uses_it() -> None:
    source = (GOLDEN_DIR / "translate" / "iommufd-in.xml").read_text()
    result = translate.forward(parse_xml(source, "iommufd"), None)
    args = _args(result.tree.getroot())
    assert args == [
        "-object", "iommufd,id=user-iommufd",          # the user's own: kept, first
        "-object", "iommufd,id=phd-iommufd0",          # ours: once, before our devices
        "-device", "vfio-platform,host=ff0e0000.ethernet,id=phd-ua-eth0,"
                   "iommufd=phd-iommufd0,x-no-mmap=on",
        "-device", "vfio-platform,host=ff0f0000.serial,id=phd-1",   # iommufd='no': legacy
        "-device", "vfio-platform,host=fd500000.dma,id=phd-2,iommufd=phd-iommufd0"]
    assert [h.hostdev.backend for h in result.hostdevs] == ["iommufd", "legacy", "iommufd"]
    back = translate.backward(result.tree).getroot()
    assert _args(back) == ["-object", "iommufd,id=user-iommufd"]


def test_a_legacy_domain_gets_no_iommufd_object() -> None:
    source = (GOLDEN_DIR / "translate" / "basic-in.xml").read_text()
    args = _args(translate.forward(parse_xml(source, "basic"), None).tree.getroot())
    assert "-object" not in args and not any("iommufd" in (a or "") for a in args)
