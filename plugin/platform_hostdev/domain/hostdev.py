"""The platform hostdev element: hardened parsing, schema checks and the model.

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
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from platform_hostdev.domain.domainxml import PHD_NS, QEMU_NS, SCHEMA_HINT
from platform_hostdev.errors import XmlError

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


def _schema_dir() -> Path:
    from importlib import resources  # lazily: its import costs the hook ~5 ms

    try:
        return Path(str(resources.files("platform_hostdev.xml_schemas")))
    except ModuleNotFoundError:
        # Running from a source tree with PYTHONPATH=plugin: the schemas sit at the top.
        return Path(__file__).resolve().parents[3] / "xml_schemas"


@functools.cache
def load_schema(name: str) -> etree.RelaxNG:
    """One of our shipped RelaxNG schemas: "hostdev" or "metadata" (compiled once)."""
    path = _schema_dir() / f"{name}.rng"
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
    return element.tag == "hostdev" and (element.get("type") or "").strip() == "platform"


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


@dataclass(frozen=True)
class PlatformHostdev:
    """A platform hostdev as the user wrote it (names not yet checked on a host)."""

    dt_path: str | None = None
    name: str | None = None
    managed: bool = True
    mmap: bool | None = None
    irqfd: bool | None = None
    mmap_timeout_ms: int | None = None
    alias: str | None = None

    @classmethod
    def from_element(cls, element: etree._Element, what: str = "a platform hostdev") -> \
            PlatformHostdev:
        """The model of a user-form element, validated against hostdev.rng first."""
        validate_element(element, "hostdev", what)
        source = element.find("source")
        assert source is not None  # the schema requires it
        devicetree = source.find("devicetree")
        device = source.find("device")
        driver = element.find("driver")
        alias = element.find("alias")

        def on_off(attr: str) -> bool | None:
            value = driver.get(attr) if driver is not None else None
            return None if value is None else value.strip() == "on"  # RelaxNG tokens: trimmed

        timeout = driver.get("mmap_timeout") if driver is not None else None
        return cls(
            dt_path=devicetree.get("path") if devicetree is not None else None,
            name=device.get("name") if device is not None else None,
            managed=element.get("managed", "yes").strip() == "yes",
            mmap=on_off("mmap"),
            irqfd=on_off("irqfd"),
            mmap_timeout_ms=int(timeout) if timeout is not None else None,
            alias=alias.get("name") if alias is not None else None,
        )

    @property
    def label(self) -> str:
        """How messages name this hostdev: its DT path and/or device name."""
        parts = [p for p in (self.dt_path, self.name) if p]
        return " = ".join(parts)

    def qemu_tuning(self) -> list[str]:
        """QEMU vfio-platform properties for the <driver> tuning (hw/vfio/platform.c)."""
        props = []
        if self.mmap is not None:
            props.append(f"x-no-mmap={'off' if self.mmap else 'on'}")
        if self.irqfd is not None:
            props.append(f"x-irqfd={'on' if self.irqfd else 'off'}")
        if self.mmap_timeout_ms is not None:
            props.append(f"mmap-timeout-ms={self.mmap_timeout_ms}")
        return props
