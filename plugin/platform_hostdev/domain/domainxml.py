"""The domain XML as the hook reads it: the stdlib's expat, a small element tree.

libvirt runs the hook for every domain on every phase, as root, on XML a less
trusted user may have written. The hook must stay light, so it does not load
lxml (about a third of its start-up): it parses with expat and refuses any
DOCTYPE or ENTITY declaration (external entities, billion laughs). What the
``<metadata><phd:hostdevs>`` declares is read from this tree by
:func:`platform_hostdev.domain.model.declared_hostdevs`, the same reader and
field table the commands use on lxml's tree.

:class:`Element` offers the part of the ElementTree API that the readers of a
domain share with lxml (``find``, ``findall``, ``findtext``, ``get``,
``attrib``, ``text``, ``iter``, iteration), with plain child paths such as
``"os/type"``, so the model and the guest-DT fingerprint read both alike.
"""
from __future__ import annotations

import pyexpat
from collections.abc import Iterator

from platform_hostdev.errors import XmlError

__all__ = ["Element", "parse_domain"]


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
    except (LookupError, ValueError) as exc:
        # the declaration's encoding=: unknown to Python (LookupError), not a text
        # encoding, or one expat cannot take (multi-byte: ValueError, UnicodeError)
        raise XmlError(f"{what} declares an encoding expat cannot read ({exc})",
                       "write the XML in UTF-8 and drop encoding= from its declaration "
                       "(libvirt always writes UTF-8)") from None
    return roots[0]


def _clark(name: str) -> str:
    return "{" + name if "}" in name else name
