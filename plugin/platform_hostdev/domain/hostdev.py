"""The platform hostdev element with lxml: hardened parsing and the RelaxNG schemas.

The user form, inside ``<devices>`` of a domain::

    <hostdev mode='subsystem' type='platform' managed='yes'>
      <source>
        <devicetree path='/soc/ethernet@ff0e0000'/>
        <device name='ff0e0000.ethernet'/>
      </source>
      <driver name='vfio' mmap='on' irqfd='on' mmap_timeout='1100'/>
      <alias name='ua-eth0'/>
    </hostdev>

The schemas are RelaxNG files shipped in ``platform_hostdev.xml_schemas``:
``hostdev.rng`` (the user form) and ``metadata.rng`` (the copy kept in our
namespace under ``<metadata>``). Untrusted XML goes through :func:`parse_xml`,
which refuses any DOCTYPE (external entities, billion laughs) before lxml sees it.
The model and its field table are :mod:`platform_hostdev.domain.model`
(re-exported here for the commands).
"""
from __future__ import annotations

import functools
import re

from lxml import etree

from platform_hostdev.domain.model import PHD_NS, QEMU_NS, SCHEMA_HINT, PlatformHostdev, token
from platform_hostdev.errors import XmlError
from platform_hostdev.shipped import shipped_dir

__all__ = [
    "PHD_NS",
    "PHD_PREFIX",
    "QEMU_NS",
    "XmlError",
    "PlatformHostdev",
    "parse_xml",
    "load_schema",
    "validate_element",
    "is_platform_hostdev",
    "renamespace",
]

PHD_PREFIX = "phd"

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, dtd_validation=False, remove_comments=False,
                           remove_blank_text=False)


def parse_xml(data: str | bytes, what: str) -> etree._ElementTree:
    """Parse untrusted XML; refuse DOCTYPE/ENTITY declarations and malformed input.

    ``what`` names the input in error messages (a file name, "the domain XML").
    """
    raw = data.encode() if isinstance(data, str) else data
    if _DOCTYPE.search(raw):
        raise XmlError(f"{what} holds a DOCTYPE or ENTITY declaration; refused (entities can "
                       "read host files or expand without bound)",
                       "remove the <!DOCTYPE ...> block; domain XML never needs one")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"{what} is not well-formed XML: {exc}",
                       "fix the XML syntax at the line and column given") from None
    tree = root.getroottree()
    if tree.docinfo.doctype:  # type: ignore[union-attr,unused-ignore]
        raise XmlError(f"{what} holds a DOCTYPE; refused", "remove the <!DOCTYPE ...> block")
    return tree


@functools.cache
def load_schema(name: str) -> etree.RelaxNG:
    """One of our shipped RelaxNG schemas: "hostdev" or "metadata" (compiled once)."""
    path = shipped_dir("platform_hostdev.xml_schemas") / f"{name}.rng"
    return etree.RelaxNG(etree.parse(str(path)))


def validate_element(element: etree._Element, schema: str, what: str) -> None:
    """Check an element against one of our schemas; XmlError naming the first problem."""
    rng = load_schema(schema)
    if not rng.validate(etree.fromstring(etree.tostring(element, with_tail=False))):
        error = rng.error_log.last_error
        detail = error.message if error is not None else "does not match the schema"
        raise XmlError(f"{what} does not follow the platform hostdev schema: {detail}",
                       SCHEMA_HINT)


def is_platform_hostdev(element: etree._Element) -> bool:
    """A <hostdev type='platform'> element of the user form (no namespace)."""
    return element.tag == "hostdev" and token(element.get("type") or "") == "platform"


def renamespace(element: etree._Element, ns: str | None) -> etree._Element:
    """A deep copy of ``element`` with every element tag moved to ``ns`` (None: no namespace).

    Attributes, text, tails and comments are kept unchanged.
    """
    copy = etree.fromstring(etree.tostring(element, with_tail=False))
    for node in copy.iter(etree.Element):
        local = etree.QName(node).localname
        node.tag = f"{{{ns}}}{local}" if ns else local
    etree.cleanup_namespaces(copy)
    copy.tail = element.tail
    return copy
