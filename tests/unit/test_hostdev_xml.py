"""The hostdev model and the hardened parser."""
from __future__ import annotations

import pytest
from platform_hostdev.domain.hostdev import (
    PlatformHostdev,
    XmlError,
    is_platform_hostdev,
    parse_xml,
)

from tests.support.hostile import LAUGHS, XXE


def test_model_from_element() -> None:
    element = parse_xml(
        "<hostdev mode='subsystem' type='platform' managed='no'><source>"
        "<devicetree path='/soc/eth@1'/><device name='1.eth'/></source>"
        "<driver name='vfio' mmap='off' irqfd='off' mmap_timeout='5'/><alias name='ua-a'/>"
        "</hostdev>", "h").getroot()
    model = PlatformHostdev.from_element(element)
    assert model == PlatformHostdev("/soc/eth@1", "1.eth", False, False, False, 5, "ua-a")
    assert model.qemu_tuning() == ["x-no-mmap=on", "x-irqfd=off", "mmap-timeout-ms=5"]
    assert model.label == "/soc/eth@1 = 1.eth"
    assert model.iommufd is None and model.backend == "legacy"  # libvirt's default


@pytest.mark.parametrize(("value", "backend"), [("yes", "iommufd"), ("no", "legacy")])
def test_model_backend(value: str, backend: str) -> None:
    element = parse_xml(f"<hostdev type='platform'><source><device name='a'/></source>"
                        f"<driver iommufd='{value}'/></hostdev>", "h").getroot()
    model = PlatformHostdev.from_element(element)
    assert model.iommufd is (value == "yes") and model.backend == backend
    assert model.qemu_tuning() == []  # the backend is not a tuning property


@pytest.mark.parametrize("data", [XXE, LAUGHS, b"<!doctype domain><domain/>",
                                  b"<?xml version='1.0'?>\n<!DOCTYPE domain SYSTEM "
                                  b"'http://example.invalid/x.dtd'><domain/>"])
def test_doctype_refused(data: bytes) -> None:
    with pytest.raises(XmlError, match="DOCTYPE"):
        parse_xml(data, "input.xml")


@pytest.mark.parametrize("data", [b"<domain>", b"", b"<a></b>", b"not xml"])
def test_malformed_refused(data: bytes) -> None:
    with pytest.raises(XmlError, match="not well-formed"):
        parse_xml(data, "input.xml")


@pytest.mark.parametrize("xml", [
    "<hostdev type='platform'><source/></hostdev>",
    "<hostdev type='platform'><source><device name='a'/></source><driver mmap='maybe'/>"
    "</hostdev>",
    "<hostdev type='platform'><source><device name='a'/></source>"
    "<driver mmap_timeout='-1'/></hostdev>",
    "<hostdev type='platform'><source><device name='a'/></source>"
    "<driver iommufd='on'/></hostdev>",
    "<hostdev type='pci'><source><device name='a'/></source></hostdev>",
    "<hostdev type='platform' xmlns:p='urn:x' p:extra='1'><source><device name='a'/></source>"
    "</hostdev>",
    "<hostdev type='platform'><source><device name='a'/><device name='b'/></source></hostdev>",
])
def test_schema_refuses(xml: str) -> None:
    with pytest.raises(XmlError, match="schema"):
        PlatformHostdev.from_element(parse_xml(xml, "h").getroot())


def test_token_values_are_read_as_the_schema_reads_them() -> None:
    # RelaxNG <value> compares tokens: " no " is valid and means no (it once read as managed)
    element = parse_xml("<hostdev type=' platform ' managed=' no '><source><device name='a'/>"
                        "</source><driver mmap=' off '/></hostdev>", "h").getroot()
    model = PlatformHostdev.from_element(element)
    assert (model.managed, model.mmap) == (False, False)
    assert is_platform_hostdev(element)
