"""The domain XML as the hook reads it: the stdlib's expat, a small element tree.

libvirt runs the hook for every domain on every phase, as root, on XML a less
trusted user may have written. The hook must stay light, so it does not load
lxml (about a third of its start-up): it parses with expat, refuses any
DOCTYPE or ENTITY declaration (external entities, billion laughs) and checks
the ``<metadata><phd:hostdevs>`` it acts on against the grammar of
``metadata.rng`` (tests/unit/test_domainxml.py holds the two to the same
verdicts, on hand-picked and generated input). The commands keep lxml and the
RelaxNG schemas (hostdev_xml, translate); sync reads the declared devices with
this module too, so the guest-DT fingerprint it stores and the one the hook
recomputes name the devices alike.

:class:`Element` offers the part of the ElementTree API that the readers of a
domain share with lxml (``find``, ``findall``, ``findtext``, ``get``,
``attrib``, ``text``, iteration), with plain child paths such as
``"os/type"``, so the guest-DT fingerprint reads both alike.
"""
from __future__ import annotations

import pyexpat
from collections.abc import Callable, Iterator

from platform_hostdev.errors import XmlError

__all__ = ["Element", "DeclaredHostdev", "parse_domain", "declared_hostdevs", "PHD_NS",
           "QEMU_NS", "SCHEMA_HINT"]

PHD_NS = "http://platform-hostdev.org/schemas/domain/1.0"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
SCHEMA_HINT = ("allowed: <hostdev mode='subsystem' type='platform' managed='yes|no'> with "
               "<source><devicetree path='/...'/> and/or <device name='...'/></source>, "
               "optional <driver name='vfio' mmap='on|off' irqfd='on|off' "
               "mmap_timeout='MS'/> and <alias name='...'/>, nothing else")

_CONTAINER = f"{{{PHD_NS}}}hostdevs"
_HOSTDEV = f"{{{PHD_NS}}}hostdev"
_XSD_SPACE = " \t\n\r"   # XML Schema's \s
_UNSIGNED_INT_MAX = 4294967295
_ADDED = frozenset({"metadata", "commandline", "memoryBacking", "locked"})


class Element:
    """An element: Clark-notation ``tag`` ({ns}local), ``attrib``, leading ``text``, children."""

    __slots__ = ("tag", "attrib", "text", "tails", "children", "nodes")

    def __init__(self, tag: str, attrib: dict[str, str]) -> None:
        self.tag = tag
        self.attrib = attrib
        self.text: str | None = None    # before the first child node, as in lxml
        self.tails = ""                 # all text after it (only checked for being blank)
        self.children: list[Element] = []
        self.nodes = 0                  # child nodes as lxml counts them: + comments, PIs

    def __iter__(self) -> Iterator[Element]:
        return iter(self.children)

    def __len__(self) -> int:
        return len(self.children)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrib.get(key, default)

    def iter(self) -> Iterator[Element]:
        """This element and every descendant, in document order (no recursion: any depth)."""
        stack = [self]
        while stack:
            element = stack.pop()
            yield element
            stack.extend(reversed(element.children))

    def findall(self, path: str) -> list[Element]:
        """The elements at a child path ("a/b/c", tags in Clark notation), in document order."""
        found = [self]
        for tag in _steps(path):
            found = [c for e in found for c in e.children if c.tag == tag]
        return found

    def find(self, path: str) -> Element | None:
        found = self.findall(path)
        return found[0] if found else None

    def findtext(self, path: str, default: str | None = None) -> str | None:
        element = self.find(path)
        return default if element is None else element.text or ""


def _steps(path: str) -> list[str]:
    """A child path's tags: split at "/", except inside a {namespace}."""
    steps, start, depth = [], 0, 0
    for i, char in enumerate(path):
        depth += (char == "{") - (char == "}")
        if char == "/" and depth == 0:
            steps.append(path[start:i])
            start = i + 1
    steps.append(path[start:])
    return steps


class DeclaredHostdev:
    """A platform hostdev recorded in the domain's metadata, as the hook needs it."""

    __slots__ = ("name", "dt_path", "managed")

    def __init__(self, name: str | None, dt_path: str | None, managed: bool) -> None:
        self.name = name
        self.dt_path = dt_path
        self.managed = managed

    @property
    def key(self) -> str:
        """What the guest-DT fingerprint records of the device: its name, else its path."""
        return self.name or self.dt_path or ""

    def __repr__(self) -> str:
        return f"DeclaredHostdev({self.name!r}, {self.dt_path!r}, managed={self.managed})"


def parse_domain(data: bytes, what: str = "the domain XML") -> Element:
    """The root element of untrusted XML; XmlError for DOCTYPE/ENTITY or malformed input."""
    parser = pyexpat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    roots: list[Element] = []

    def refuse(*_: object) -> None:
        raise XmlError(f"{what} holds a DOCTYPE or ENTITY declaration; refused (entities can "
                       "read host files or expand without bound)",
                       "remove the <!DOCTYPE ...> block; domain XML never needs one")

    def start(name: str, attributes: dict[str, str]) -> None:
        element = Element(_clark(name), {_clark(k): v for k, v in attributes.items()})
        if stack:
            stack[-1].children.append(element)
        else:
            roots.append(element)
        other_node()
        stack.append(element)

    def end(_: str) -> None:
        stack.pop()

    def other_node(*_: object) -> None:  # an element, comment or PI inside the top element
        if stack:
            stack[-1].nodes += 1

    def characters(text: str) -> None:
        if not stack:
            return
        if stack[-1].nodes:
            stack[-1].tails += text
        else:
            stack[-1].text = (stack[-1].text or "") + text

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.CommentHandler = other_node
    parser.ProcessingInstructionHandler = other_node
    try:
        parser.Parse(data, True)
    except pyexpat.ExpatError as exc:
        raise XmlError(f"{what} is not well-formed XML: {exc}",
                       "fix the XML syntax at the line and column given") from None
    return roots[0]


def _clark(name: str) -> str:
    return "{" + name if "}" in name else name


def declared_hostdevs(root: Element) -> list[DeclaredHostdev]:
    """The domain's platform hostdevs in QEMU command-line order (translate.backward's).

    Only the metadata copy counts (libvirt itself refuses a <hostdev
    type='platform'> in <devices>, so the XML libvirt hands the hook never
    holds one); it must follow metadata.rng.
    """
    containers = root.findall(f"metadata/{_CONTAINER}")
    inside = {id(e) for c in containers for e in c.iter()}
    for element in root.iter():
        if element.tag.startswith(f"{{{PHD_NS}}}") and id(element) not in inside:
            raise XmlError(f"element <{element.tag}> of our namespace is outside "
                           "<metadata><phd:hostdevs>", "remove it; only phd:hostdevs is allowed")
    if not containers:
        return []
    if len(containers) > 1:
        raise XmlError("<metadata> holds phd:hostdevs twice", "keep one phd:hostdevs element")
    stored = _check_container(containers[0])
    devices = root.find("devices")
    # translate.backward inserts each stored hostdev at its position in <devices>
    # (sorted by position, then document order): replay that to get the same order.
    slots: list[DeclaredHostdev | None] = [None] * (devices.nodes if devices is not None else 0)
    for position, _, hostdev in sorted(stored, key=lambda t: t[:2]):
        slots.insert(min(position, len(slots)), hostdev)
    return [h for h in slots if h is not None]


# ------------------------------------------------------------------ metadata.rng, by hand

def _invalid(detail: str) -> XmlError:
    return XmlError(f"<metadata><phd:hostdevs> does not follow the platform hostdev schema: "
                    f"{detail}", SCHEMA_HINT)


def _xsd_split(value: str) -> list[str]:
    """A list value split at XML Schema whitespace."""
    for space in _XSD_SPACE[1:]:
        value = value.replace(space, " ")
    return [part for part in value.split(" ") if part]


def _token(value: str) -> str:
    """RelaxNG's built-in token type: whitespace collapsed."""
    return " ".join(_xsd_split(value))


def _unsigned_int(value: str) -> int | None:
    """XML Schema's unsignedInt: optional sign, digits ("-0" is 0), at most 2^32 - 1."""
    text = _token(value)
    digits = text[1:] if text.startswith(("+", "-")) else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    number = int(digits)
    if text.startswith("-") and number:
        return None
    return number if number <= _UNSIGNED_INT_MAX else None


def _no_text(element: Element, where: str) -> None:
    text = ((element.text or "") + element.tails).strip(_XSD_SPACE)
    if text:
        raise _invalid(f"{where} holds text {text[:40]!r}")


def _attributes(element: Element, where: str, allowed: tuple[str, ...]) -> dict[str, str]:
    for key in element.attrib:
        if key not in allowed:
            raise _invalid(f"{where} has an attribute {key!r}, which is not allowed")
    return element.attrib


CharTest = Callable[[str], bool]


def _pattern(value: str, first: CharTest | None, rest: CharTest, low: int, high: int) -> bool:
    """A hand-made XML Schema pattern: a ``first`` char, then ``rest`` chars; low..high long."""
    if not low <= len(value) <= high:
        return False
    if first is not None and not first(value[0]):
        return False
    return all(rest(c) for c in value[1 if first is not None else 0:])


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


def _leaf(element: Element, where: str, attr: str, first: CharTest | None, rest: CharTest,
          low: int, high: int) -> str:
    _attributes(element, where, (attr,))
    _no_text(element, where)
    if element.children:
        raise _invalid(f"{where} holds an element <{element.children[0].tag}>")
    value = element.get(attr)
    if value is None:
        raise _invalid(f"{where} has no {attr} attribute")
    if not _pattern(value, first, rest, low, high):
        raise _invalid(f"{where} {attr}={value!r} is not allowed")
    return value


def _check_container(container: Element) -> list[tuple[int, int, DeclaredHostdev]]:
    """(position, order, hostdev) of each stored hostdev, checked as metadata.rng does."""
    where = "phd:hostdevs"
    _attributes(container, where, ("added",))
    unknown = set(_xsd_split(container.get("added") or "")) - _ADDED
    if unknown:
        raise _invalid(f"{where} added= holds {sorted(unknown)[0]!r}")
    _no_text(container, where)
    stored = []
    for order, element in enumerate(container.children):
        if element.tag != _HOSTDEV:
            raise _invalid(f"{where} holds <{element.tag}>, not <phd:hostdev>")
        position, hostdev = _check_hostdev(element, f"platform hostdev #{order + 1}")
        stored.append((position, order, hostdev))
    return stored


def _check_hostdev(element: Element, where: str) -> tuple[int, DeclaredHostdev]:
    attrib = _attributes(element, where, ("mode", "type", "managed", "position"))
    if _token(attrib.get("mode", "subsystem")) != "subsystem":
        raise _invalid(f"{where} mode={attrib['mode']!r} is not 'subsystem'")
    if "type" not in attrib or _token(attrib["type"]) != "platform":
        raise _invalid(f"{where} type={attrib.get('type')!r} is not 'platform'")
    managed = _token(attrib.get("managed", "yes"))
    if managed not in ("yes", "no"):
        raise _invalid(f"{where} managed={attrib['managed']!r} is not 'yes' or 'no'")
    position = 1 << 30  # as translate.backward: no position appends
    if "position" in attrib:
        number = _unsigned_int(attrib["position"])
        if number is None:
            raise _invalid(f"{where} position={attrib['position']!r} is not an unsigned int")
        position = number
    _no_text(element, where)
    seen: dict[str, Element] = {}
    for child in element.children:
        local = child.tag[len(PHD_NS) + 2:] if child.tag.startswith(f"{{{PHD_NS}}}") else ""
        if local not in ("source", "driver", "alias") or local in seen:
            raise _invalid(f"{where} holds {'another' if local in seen else 'an element'} "
                           f"<{child.tag}>")
        seen[local] = child
    if "source" not in seen:
        raise _invalid(f"{where} has no <source>")
    name, dt_path = _check_source(seen["source"], f"the <source> of {where}")
    if "driver" in seen:
        _check_driver(seen["driver"], f"the <driver> of {where}")
    if "alias" in seen:
        _leaf(seen["alias"], f"the <alias> of {where}", "name", _ascii_letter, _alias_char, 1,
              64)
    return position, DeclaredHostdev(name, dt_path, managed == "yes")


def _check_source(source: Element, where: str) -> tuple[str | None, str | None]:
    _attributes(source, where, ())
    _no_text(source, where)
    found: dict[str, str] = {}
    for child in source.children:
        if child.tag == f"{{{PHD_NS}}}devicetree" and "path" not in found:
            found["path"] = _leaf(child, f"<devicetree> in {where}", "path", _slash,
                                  _non_space, 2, 4096)
        elif child.tag == f"{{{PHD_NS}}}device" and "name" not in found:
            found["name"] = _leaf(child, f"<device> in {where}", "name", None, _name_char,
                                  1, 255)
        else:
            raise _invalid(f"{where} holds an unexpected <{child.tag}>")
    if not found:
        raise _invalid(f"{where} names no device (give <devicetree path> and/or <device name>)")
    return found.get("name"), found.get("path")


def _check_driver(driver: Element, where: str) -> None:
    attrib = _attributes(driver, where, ("name", "mmap", "irqfd", "mmap_timeout"))
    _no_text(driver, where)
    if driver.children:
        raise _invalid(f"{where} holds an element <{driver.children[0].tag}>")
    if "name" in attrib and _token(attrib["name"]) != "vfio":
        raise _invalid(f"{where} name={attrib['name']!r} is not 'vfio'")
    for key in ("mmap", "irqfd"):
        if key in attrib and _token(attrib[key]) not in ("on", "off"):
            raise _invalid(f"{where} {key}={attrib[key]!r} is not 'on' or 'off'")
    if "mmap_timeout" in attrib:
        number = _unsigned_int(attrib["mmap_timeout"])
        if number is None or number > 3600000:
            raise _invalid(f"{where} mmap_timeout={attrib['mmap_timeout']!r} is not a number "
                           "of milliseconds up to 3600000")
