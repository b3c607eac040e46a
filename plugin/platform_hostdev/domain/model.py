"""The platform hostdev element: one model, read through one field table from either tree.

In the spirit of virtinst's XMLProperty (virt-manager, virtinst/xmlbuilder.py):
each :class:`Field` of :data:`FIELDS` is one attribute of the element, named
by the element path below ``<hostdev>`` and the attribute, with the datatype
its schema gives it (the check of the raw value and its conversion) and the
model attribute it fills; :data:`PARTS` are the elements. One reader,
:func:`read_hostdev`, checks an element against the table and builds the
:class:`PlatformHostdev` from it, on an lxml element (the commands) or on the
hook's expat :class:`~platform_hostdev.domain.domainxml.Element` (both offer
``tag``, ``attrib``, ``get``, ``text``, iteration, ``find``/``findall`` and
``iter``). The two forms of the element differ only in the namespace (none in
``<devices>``, ours under ``<metadata>``) and in the bookkeeping attribute
``position`` only the stored copy carries.

The RelaxNG schemas (``hostdev.rng``, ``metadata.rng``) stay the user-facing
truth: the commands validate with them first and report libxml2's message;
the table is what the hook checks with, since it must not load lxml.
tests/unit/test_domainxml.py holds the table to the schemas' verdicts on
chosen and generated input. RelaxNG compares ``<value>`` choices as tokens
(whitespace collapsed: ``managed=' no '`` is valid and means no) and applies
a ``string`` pattern to the raw value; the datatypes below do the same.

Light on purpose (no lxml, no dataclasses, no re): the hook imports it on
every start of a domain with platform hostdevs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from platform_hostdev.errors import XmlError

if TYPE_CHECKING:
    from lxml import etree

    from platform_hostdev.domain.domainxml import Element

    DomainElement = etree._Element | Element  # either tree

__all__ = [
    "PHD_NS", "QEMU_NS", "CONTAINER", "SCHEMA_HINT", "NO_POSITION", "ADDED",
    "Datatype", "Field", "Part", "FIELDS", "PARTS", "CONTAINER_FIELDS",
    "PlatformHostdev", "Stored", "token", "unsigned_int",
    "read_hostdev", "stored_container", "read_container", "in_insertion_order",
    "declared_hostdevs",
]

PHD_NS = "http://platform-hostdev.org/schemas/domain/1.0"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
CONTAINER = f"{{{PHD_NS}}}hostdevs"
SCHEMA_HINT = ("allowed: <hostdev mode='subsystem' type='platform' managed='yes|no'> with "
               "<source><devicetree path='/...'/> and/or <device name='...'/></source>, "
               "optional <driver name='vfio' mmap='on|off' irqfd='on|off' "
               "mmap_timeout='MS' iommufd='yes|no'/> and <alias name='...'/>, nothing else")
NO_POSITION = 1 << 30
"""Where a stored hostdev without ``position`` goes: after every node of ``<devices>``."""
ADDED = ("metadata", "commandline", "memoryBacking", "locked")
"""What ``phd:hostdevs added=`` may name: the elements the forward translation created."""

_XSD_SPACE = " \t\n\r"   # XML Schema's \s
_UNSIGNED_INT_MAX = 4294967295
_METADATA = "<metadata><phd:hostdevs>"


# ------------------------------------------------------------------ datatypes

def _xsd_split(value: str) -> list[str]:
    """A list value split at XML Schema whitespace."""
    for space in _XSD_SPACE[1:]:
        value = value.replace(space, " ")
    return [part for part in value.split(" ") if part]


def token(value: str) -> str:
    """RelaxNG's built-in token type: whitespace collapsed."""
    return " ".join(_xsd_split(value))


def unsigned_int(value: str) -> int | None:
    """XML Schema's unsignedInt: optional sign, digits ("-0" is 0), at most 2^32 - 1."""
    text = token(value)
    digits = text[1:] if text.startswith(("+", "-")) else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    number = int(digits)
    if text.startswith("-") and number:
        return None
    return number if number <= _UNSIGNED_INT_MAX else None


class Datatype(NamedTuple):
    """A schema datatype: ``parse`` gives the value of a raw attribute, None if not allowed."""

    parse: Callable[[str], Any]
    refusal: str          # said after ``attr='raw'`` when the value is not allowed


def _choice(values: dict[str, Any], refusal: str) -> Datatype:
    """RelaxNG <choice> of <value>s: compared as tokens."""
    return Datatype(lambda raw: values.get(token(raw)), refusal)


def _unsigned(maximum: int, refusal: str) -> Datatype:
    def parse(raw: str) -> int | None:
        number = unsigned_int(raw)
        return number if number is not None and number <= maximum else None
    return Datatype(parse, refusal)


CharTest = Callable[[str], bool]


def _pattern(first: CharTest | None, rest: CharTest, low: int, high: int) -> Datatype:
    """A string with an XML Schema pattern ``first`` char then ``rest`` chars, low..high long.

    A string's pattern applies to the raw value (no whitespace collapsing).
    """
    def parse(raw: str) -> str | None:
        if not low <= len(raw) <= high:
            return None
        if first is not None and not first(raw[0]):
            return None
        ok = all(rest(c) for c in raw[1 if first is not None else 0:])
        return raw if ok else None
    return Datatype(parse, "is not allowed")


def _list_of(values: Sequence[str], refusal: str) -> Datatype:
    """RelaxNG <list> of <zeroOrMore> <choice> <value>s: the set of tokens."""
    def parse(raw: str) -> frozenset[str] | None:
        items = frozenset(_xsd_split(raw))
        return items if items <= frozenset(values) else None
    return Datatype(parse, refusal)


def _slash(char: str) -> bool:
    return char == "/"


def _non_space(char: str) -> bool:       # [^\s]
    return char not in _XSD_SPACE


def _name_char(char: str) -> bool:       # [^\s/]
    return char not in _XSD_SPACE and char != "/"


def _ascii_letter(char: str) -> bool:    # [A-Za-z]
    return char.isascii() and char.isalpha()


def _alias_char(char: str) -> bool:      # [A-Za-z0-9_.\-]
    return char.isascii() and (char.isalnum() or char in "_.-")


_ON_OFF = _choice({"on": True, "off": False}, "is not 'on' or 'off'")


# ------------------------------------------------------------------ the table

class Field(NamedTuple):
    """One attribute of the element (hostdev-common.rng / metadata.rng)."""

    element: str              # path below <hostdev>: "" is the hostdev itself
    attr: str
    datatype: Datatype
    name: str | None = None   # the PlatformHostdev attribute it fills; None: checked only
    default: Any = None
    required: bool = False
    missing: str = ""         # the refusal when a required attribute is absent
    stored_only: bool = False  # bookkeeping only the <metadata> copy carries (metadata.rng)


class Part(NamedTuple):
    """One element below <hostdev>; ``where`` names it in messages, {} its parent's name."""

    path: str
    where: str
    required: bool = False
    needs_child: str = ""     # the refusal when it holds none of its child parts


FIELDS: tuple[Field, ...] = (
    Field("", "mode", _choice({"subsystem": "subsystem"}, "is not 'subsystem'")),
    Field("", "type", _choice({"platform": "platform"}, "is not 'platform'"), required=True,
          missing="type=None is not 'platform'"),
    Field("", "managed", _choice({"yes": True, "no": False}, "is not 'yes' or 'no'"),
          "managed", default=True),
    Field("", "position", _unsigned(_UNSIGNED_INT_MAX, "is not an unsigned int"), "position",
          default=NO_POSITION, stored_only=True),
    Field("source/devicetree", "path", _pattern(_slash, _non_space, 2, 4096), "dt_path",
          required=True),
    Field("source/device", "name", _pattern(None, _name_char, 1, 255), "name", required=True),
    Field("driver", "name", _choice({"vfio": "vfio"}, "is not 'vfio'")),
    Field("driver", "mmap", _ON_OFF, "mmap"),
    Field("driver", "irqfd", _ON_OFF, "irqfd"),
    Field("driver", "mmap_timeout",
          _unsigned(3600000, "is not a number of milliseconds up to 3600000"),
          "mmap_timeout_ms"),
    Field("driver", "iommufd", _choice({"yes": True, "no": False}, "is not 'yes' or 'no'"),
          "iommufd"),
    Field("alias", "name", _pattern(_ascii_letter, _alias_char, 1, 64), "alias",
          required=True),
)
"""Every attribute of the platform hostdev element, in the model's order."""

PARTS: tuple[Part, ...] = (
    Part("source", "the <source> of {}", required=True,
         needs_child="names no device (give <devicetree path> and/or <device name>)"),
    Part("source/devicetree", "<devicetree> in {}"),
    Part("source/device", "<device> in {}"),
    Part("driver", "the <driver> of {}"),
    Part("alias", "the <alias> of {}"),
)
"""The elements below <hostdev>, parents before children; each may appear once."""

CONTAINER_FIELDS: tuple[Field, ...] = (
    Field("", "added", _list_of(ADDED, "names an element the translation never adds "
                                       f"(allowed: {', '.join(ADDED)})"), "added",
          default=frozenset()),
)
"""The attributes of <phd:hostdevs> (metadata.rng)."""


class PlatformHostdev(NamedTuple):
    """A platform hostdev as the user wrote it (names not yet checked on a host)."""

    dt_path: str | None = None
    name: str | None = None
    managed: bool = True
    mmap: bool | None = None
    irqfd: bool | None = None
    mmap_timeout_ms: int | None = None
    alias: str | None = None
    iommufd: bool | None = None
    """libvirt's ``<driver iommufd>``: None (absent) and False keep the legacy backend."""

    @classmethod
    def from_element(cls, element: etree._Element, what: str = "a platform hostdev") -> \
            PlatformHostdev:
        """The model of a user-form element (lxml), validated against hostdev.rng first."""
        from platform_hostdev.domain.hostdev import validate_element  # lxml: not in the hook

        validate_element(element, "hostdev", what)
        return read_hostdev(element, "the element", context=what)[0]

    @property
    def label(self) -> str:
        """How messages name this hostdev: its DT path and/or device name."""
        parts = [p for p in (self.dt_path, self.name) if p]
        return " = ".join(parts)

    @property
    def key(self) -> str:
        """What the guest-DT fingerprint records of the device: its name, else its path."""
        return self.name or self.dt_path or ""

    @property
    def backend(self) -> str:
        """The VFIO backend QEMU uses: "iommufd" (the device's cdev bound to /dev/iommu) or
        "legacy" (its /dev/vfio/N group in a container), libvirt's default."""
        return "iommufd" if self.iommufd else "legacy"

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


# ------------------------------------------------------------------ the reader

def _elements(element: DomainElement) -> list[Any]:
    """The child elements (lxml also iterates comments and PIs, whose tag is not a str)."""
    return [child for child in element if isinstance(child.tag, str)]


def _text(element: DomainElement) -> str:
    """All character data directly inside an element."""
    tails = getattr(element, "tails", None)   # the hook's tree keeps it in one string
    if tails is None:
        tails = "".join(getattr(child, "tail", None) or "" for child in element)
    return (element.text or "") + tails


def _child_nodes(element: DomainElement) -> int:
    """Child nodes as lxml counts them: elements, comments and PIs."""
    nodes = getattr(element, "nodes", None)
    return len(element) if nodes is None else int(nodes)


class _Refusal:
    def __init__(self, context: str) -> None:
        self.context = context

    def __call__(self, detail: str) -> XmlError:
        return XmlError(f"{self.context} does not follow the platform hostdev schema: {detail}",
                        SCHEMA_HINT)


def _attributes(element: DomainElement, where: str, fields: Iterable[Field],
                refuse: _Refusal) -> dict[str, Any]:
    """The fields' values from an element's attributes; any other attribute is refused."""
    fields = list(fields)
    allowed = {f.attr for f in fields}
    for key in element.attrib:
        if key not in allowed:
            raise refuse(f"{where} has an attribute {key!r}, which is not allowed")
    values: dict[str, Any] = {}
    for field in fields:
        raw = element.get(field.attr)
        if raw is None:
            if field.required:
                raise refuse(f"{where} {field.missing or f'has no {field.attr} attribute'}")
            value = field.default
        else:
            value = field.datatype.parse(raw)
            if value is None:
                raise refuse(f"{where} {field.attr}={raw!r} {field.datatype.refusal}")
        if field.name is not None:
            values[field.name] = value
    return values


def _no_text(element: DomainElement, where: str, refuse: _Refusal) -> None:
    text = _text(element).strip(_XSD_SPACE)
    if text:
        raise refuse(f"{where} holds text {text[:40]!r}")


def read_hostdev(element: DomainElement, where: str, ns: str = "", stored: bool = False,
                 context: str = _METADATA) -> tuple[PlatformHostdev, int]:
    """The model of a hostdev element checked against the table, and its position.

    ``ns`` is the namespace of the form (none for the user form, PHD_NS under
    <metadata>); ``stored`` allows the stored copy's bookkeeping. XmlError
    (``context`` does not follow the schema: ``where`` ...) names the first problem.
    """
    refuse = _Refusal(context)
    prefix = f"{{{ns}}}"
    found: dict[str, Any] = {"": element}
    names = {"": where}
    values: dict[str, Any] = {}
    for path in ("", *(part.path for part in PARTS)):
        current = found.get(path)
        if current is None:
            continue
        here = names[path]
        fields = [f for f in FIELDS if f.element == path and (stored or not f.stored_only)]
        values.update(_attributes(current, here, fields, refuse))
        _no_text(current, here, refuse)
        below = {part.path.rsplit("/", 1)[-1]: part for part in PARTS
                 if part.path.rpartition("/")[0] == path}
        for child in _elements(current):
            tag = child.tag
            if ns:
                local = tag[len(prefix):] if tag.startswith(prefix) else ""
            else:
                local = "" if tag.startswith("{") else tag
            part = below.get(local)
            if part is None or part.path in found:
                raise refuse(f"{here} holds {'another' if part is not None else 'an element'} "
                             f"<{tag}>")
            found[part.path] = child
            names[part.path] = part.where.format(here)
        for local, part in below.items():
            if part.required and part.path not in found:
                raise refuse(f"{here} has no <{local}>")
        part_here = next((p for p in PARTS if p.path == path), None)
        if part_here is not None and part_here.needs_child and not any(
                p.path in found for p in below.values()):
            raise refuse(f"{here} {part_here.needs_child}")
    position = values.pop("position", NO_POSITION)
    return PlatformHostdev(**values), position


# ------------------------------------------------------------------ the stored copy

class Stored(NamedTuple):
    """A hostdev kept under <metadata>: where it stood in <devices>, its order, its model."""

    position: int
    order: int
    hostdev: PlatformHostdev
    element: Any             # the stored element, of whichever tree it was read from


def stored_container(root: DomainElement) -> Any | None:
    """The domain's <metadata><phd:hostdevs>, or None; XmlError if our namespace is misused.

    An element of our namespace anywhere else, or a second container, is refused:
    the hook and the backward translation must not read what the other ignores.
    """
    containers = root.findall(f"metadata/{CONTAINER}")
    inside = [e for c in containers for e in c.iter()]  # references: lxml proxies stay put
    ours = {id(e) for e in inside}
    for element in root.iter():
        tag = element.tag
        if isinstance(tag, str) and tag.startswith(f"{{{PHD_NS}}}") and id(element) not in ours:
            raise XmlError(f"element <{tag}> of our namespace is outside "
                           "<metadata><phd:hostdevs>", "remove it; only phd:hostdevs is allowed")
    if not containers:
        return None
    if len(containers) > 1:
        raise XmlError("<metadata> holds phd:hostdevs twice", "keep one phd:hostdevs element")
    return containers[0]


def read_container(container: DomainElement) -> tuple[frozenset[str], list[Stored]]:
    """What ``added`` names and each stored hostdev, checked as metadata.rng does."""
    where = "phd:hostdevs"
    refuse = _Refusal(_METADATA)
    added: frozenset[str] = _attributes(container, where, CONTAINER_FIELDS, refuse)["added"]
    _no_text(container, where, refuse)
    stored = []
    for order, element in enumerate(_elements(container)):
        if element.tag != f"{{{PHD_NS}}}hostdev":
            raise refuse(f"{where} holds <{element.tag}>, not <phd:hostdev>")
        hostdev, position = read_hostdev(element, f"platform hostdev #{order + 1}", PHD_NS,
                                         stored=True)
        stored.append(Stored(position, order, hostdev, element))
    return added, stored


def in_insertion_order(stored: Iterable[Stored]) -> list[Stored]:
    """The order in which the backward translation inserts the stored hostdevs.

    Each goes to index ``min(position, len(devices))`` of <devices>, sorted by
    position, then document order (a hostdev without position appends).
    """
    return sorted(stored, key=lambda s: (s.position, s.order))


def declared_hostdevs(root: DomainElement) -> list[PlatformHostdev]:
    """The domain's platform hostdevs in QEMU command-line order (translate.backward's).

    Only the metadata copy counts (libvirt itself refuses a <hostdev
    type='platform'> in <devices>, so the XML libvirt hands the hook never
    holds one); it must follow metadata.rng. Either tree will do.
    """
    container = stored_container(root)
    if container is None:
        return []
    stored = read_container(container)[1]
    devices = root.find("devices")
    # replay the backward translation's insertions into <devices>: the same order
    slots: list[PlatformHostdev | None] = [None] * (
        _child_nodes(devices) if devices is not None else 0)
    for item in in_insertion_order(stored):
        slots.insert(min(item.position, len(slots)), item.hostdev)
    return [h for h in slots if h is not None]
