"""Forward and backward translation between the user form and XML libvirt accepts.

libvirt rejects ``<hostdev type='platform'>``, so :func:`forward` moves each
one out of ``<devices>`` into ``<metadata><phd:hostdevs>`` (our namespace, the
source of truth, document order, each with its ``position`` in ``<devices>``),
adds ``-device vfio-platform,host=NAME,id=phd-ID[,tuning]`` pairs to
``<qemu:commandline>`` and ``<memoryBacking><locked/>`` so VFIO can pin guest
RAM (libvirt raises RLIMIT_MEMLOCK only for hostdevs it knows). With
``<locked/>`` libvirt 11.3 adds ``-overcommit mem-lock=on`` and sets the QEMU
process's RLIMIT_MEMLOCK to ``<memtune><hard_limit>``, or to unlimited when
there is none; both need CAP_SYS_RESOURCE in libvirtd (seen failing without:
"cannot limit locked memory ... Operation not permitted"). Give the domain a
``<memtune><hard_limit>`` (guest RAM plus QEMU's own overhead) to bound it. The
``added`` attribute of ``phd:hostdevs`` records which of metadata,
qemu:commandline, memoryBacking and locked the translation created, so
:func:`backward` removes only those; our QEMU arguments are found by their
``id=phd-`` prefix, the user's own arguments are never touched.

Rules:
* ``forward`` starts from ``backward`` of its input, so forward(forward(x)) ==
  forward(x), and hostdevs added to an already translated document are merged.
* backward(forward(x)) == x except for these normalisations: the XML
  declaration is dropped and attributes are written with double quotes (as
  lxml writes them); a hostdev that was the last child of ``<devices>``
  gets the indentation of the child before it; after libvirt has rewritten the
  document (defined, then dumped), libvirt's own reformatting and device
  order stay and a position beyond the end of ``<devices>`` appends.
* QEMU ids: ``phd-<alias>`` for a hostdev with ``<alias name>``, else
  ``phd-<n>`` (n counts platform hostdevs in document order). QEMU assigns
  platform-bus MMIO and IRQs in command-line order, which is document order.
* The iommufd backend (``<driver iommufd='yes'>``): one ``-object
  iommufd,id=phd-iommufd0`` per domain, before the first ``-device``
  (backends/iommufd.c; QEMU opens /dev/iommu itself, as libvirt 12.1 before
  its fd passing), and ``iommufd=phd-iommufd0`` on each device that uses it
  (the link property of hw/vfio/platform.c): QEMU then opens the device's
  vfio cdev found below its sysfs ``vfio-dev/`` (hw/vfio/iommufd.c
  iommufd_cdev_getfd()) instead of its /dev/vfio/N group. Legacy devices of
  the same domain keep their group.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from platform_hostdev.domain.hostdev import (
    PHD_PREFIX,
    is_platform_hostdev,
    renamespace,
    validate_element,
)
from platform_hostdev.domain.model import (
    CONTAINER,
    PHD_NS,
    QEMU_NS,
    PlatformHostdev,
    in_insertion_order,
    read_container,
    stored_container,
)
from platform_hostdev.virt.qemu_caps import VFIO_PLATFORM_MODELS

__all__ = ["Translation", "forward", "backward", "qemu_device_arg", "qemu_object_arg",
           "IOMMUFD_ID", "to_string",
           "platform_hostdev_elements", "add_device", "remove_device"]

if TYPE_CHECKING:  # validate pulls in the inventory; the hook reads XML without them
    from platform_hostdev.domain.validate import ResolvedHostdev
    from platform_hostdev.host.inventory import Inventory

_MODELS = "|".join(map(re.escape, VFIO_PLATFORM_MODELS))
_OUR_ARG = re.compile(rf"(?:{_MODELS}),(?:[^,]*,)*id=phd-[^,]*(?:,.*)?")
IOMMUFD_ID = "phd-iommufd0"
_OUR_OBJECT = re.compile(r"iommufd,(?:[^,]*,)*id=phd-[^,]*(?:,.*)?")
_METADATA_AFTER = ("name", "uuid", "genid", "title", "description")
_MEMORY_BACKING_AFTER = ("memory", "maxMemory", "currentMemory", "blkiotune", "memtune")


@dataclass
class Translation:
    """The result of :func:`forward`: the libvirt form and what it holds."""

    tree: etree._ElementTree
    hostdevs: list[ResolvedHostdev] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def xml(self) -> str:
        return to_string(self.tree)


def to_string(tree: etree._ElementTree) -> str:
    """The document as text (no XML declaration), ending with a newline."""
    return etree.tostring(tree, encoding="unicode").rstrip("\n") + "\n"


def qemu_device_arg(item: ResolvedHostdev, qemu_id: str) -> str:
    """The ``-device`` value for one hostdev."""
    backend = [f"iommufd={IOMMUFD_ID}"] if item.hostdev.iommufd else []
    props = [item.model, f"host={item.name}", f"id={qemu_id}", *backend,
             *item.hostdev.qemu_tuning()]
    return ",".join(props)


def qemu_object_arg() -> str:
    """The ``-object`` value of the domain's iommufd backend."""
    return f"iommufd,id={IOMMUFD_ID}"


def platform_hostdev_elements(root: etree._Element) -> list[etree._Element]:
    """The user-form platform hostdevs in <devices>, in document order."""
    devices = root.find("devices")
    return [] if devices is None else [e for e in devices if is_platform_hostdev(e)]


def forward(tree: etree._ElementTree, inventory: Inventory | None) -> Translation:
    """The libvirt form of a domain in the user form (or already translated)."""
    tree = backward(tree)
    root = tree.getroot()
    elements = platform_hostdev_elements(root)
    if not elements:
        return Translation(tree)
    from platform_hostdev.domain.validate import check_domain, resolve_hostdevs

    check_domain(root)
    models = [PlatformHostdev.from_element(e, f"platform hostdev #{i + 1}")
              for i, e in enumerate(elements)]
    resolved, warnings = resolve_hostdevs(models, inventory)

    devices = root.find("devices")
    assert devices is not None
    added: list[str] = []
    container = etree.Element(CONTAINER, nsmap={PHD_PREFIX: PHD_NS})
    for element in elements:
        stored = renamespace(element, PHD_NS)
        stored.set("position", str(devices.index(element)))
        _append(container, stored, depth=3)
    for element in reversed(elements):
        _remove(element)

    metadata = root.find("metadata")
    if metadata is None:
        metadata = _insert_after(root, "metadata", _METADATA_AFTER)
        added.append("metadata")
    _append(metadata, container)

    commandline = root.find(f"{{{QEMU_NS}}}commandline")
    if commandline is None:
        commandline = etree.Element(f"{{{QEMU_NS}}}commandline", nsmap={"qemu": QEMU_NS})
        _append(root, commandline)
        added.append("commandline")
    if any(item.hostdev.iommufd for item in resolved):
        for value in ("-object", qemu_object_arg()):
            _append(commandline, etree.Element(f"{{{QEMU_NS}}}arg", value=value))
    for n, item in enumerate(resolved):
        qemu_id = f"phd-{item.hostdev.alias}" if item.hostdev.alias else f"phd-{n}"
        for value in ("-device", qemu_device_arg(item, qemu_id)):
            _append(commandline, etree.Element(f"{{{QEMU_NS}}}arg", value=value))

    backing = root.find("memoryBacking")
    if backing is None:
        backing = _insert_after(root, "memoryBacking", _MEMORY_BACKING_AFTER)
        added.append("memoryBacking")
    if backing.find("locked") is None:
        _append(backing, etree.Element("locked"))
        added.append("locked")
    if added:
        container.set("added", " ".join(added))
    return Translation(tree, resolved, warnings)


def backward(tree: etree._ElementTree) -> etree._ElementTree:
    """The user form of a translated domain (a copy; input without our metadata is kept)."""
    tree = copy.deepcopy(tree)
    root = tree.getroot()
    container = stored_container(root)
    if container is None:
        return tree
    validate_element(container, "metadata", "<metadata><phd:hostdevs>")
    added, stored = read_container(container)

    commandline = root.find(f"{{{QEMU_NS}}}commandline")
    if commandline is not None:
        _remove_our_args(commandline)
        if "commandline" in added and len(commandline) == 0:
            _remove(commandline)
    backing = root.find("memoryBacking")
    if backing is not None:
        locked = backing.find("locked")
        if "locked" in added and locked is not None:
            _remove(locked)
        if "memoryBacking" in added and len(backing) == 0:
            _remove(backing)

    metadata = container.getparent()
    assert metadata is not None
    _remove(container)
    if "metadata" in added and len(metadata) == 0:
        _remove(metadata)

    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    for item in in_insertion_order(stored):
        user = renamespace(item.element, None)
        user.attrib.pop("position", "")
        _insert_at(devices, item.position, user)
    return tree


def add_device(root: etree._Element, element: etree._Element) -> None:
    """Append a device element to <devices> (created if absent), indented like its siblings."""
    devices = root.find("devices")
    if devices is None:
        devices = etree.Element("devices")
        _append(root, devices)
    _append(devices, element)


def remove_device(element: etree._Element) -> None:
    """Remove an element and the indentation that stood before it."""
    _remove(element)


def _remove_our_args(commandline: etree._Element) -> None:
    args = [a for a in commandline if a.tag == f"{{{QEMU_NS}}}arg"]
    ours: list[etree._Element] = []
    for first, second in zip(args, args[1:], strict=False):
        value = second.get("value") or ""
        if first in ours:
            continue
        if (first.get("value") == "-device" and _OUR_ARG.fullmatch(value)) or (
                first.get("value") == "-object" and _OUR_OBJECT.fullmatch(value)):
            ours += [first, second]
    for arg in ours:
        _remove(arg)


# Whitespace-preserving tree edits: the text before an element is the tail of
# its previous sibling, or its parent's text for the first child.

def _text_before(parent: etree._Element, index: int) -> str | None:
    return parent[index - 1].tail if index > 0 else parent.text


def _set_text_before(parent: etree._Element, index: int, text: str | None) -> None:
    if index > 0:
        parent[index - 1].tail = text
    else:
        parent.text = text


def _indent_unit(element: etree._Element) -> str:
    text = element.getroottree().getroot().text or ""
    unit = text.rsplit("\n", 1)[-1]
    return unit if unit and not unit.strip() else "  "


def _depth(element: etree._Element) -> int:
    return sum(1 for _ in element.iterancestors())


def _remove(element: etree._Element) -> None:
    parent = element.getparent()
    assert parent is not None
    index = parent.index(element)
    _set_text_before(parent, index, element.tail)
    parent.remove(element)


def _append(parent: etree._Element, child: etree._Element, depth: int | None = None) -> None:
    """Append with the indentation of the parent's other children (or one level deeper)."""
    unit = _indent_unit(parent)
    level = _depth(parent) if depth is None else depth - 1
    if len(parent):
        last = len(parent) - 1
        child.tail = parent[last].tail
        parent[last].tail = _text_before(parent, last)
    else:
        parent.text = "\n" + unit * (level + 1)
        child.tail = "\n" + unit * level
    parent.append(child)


def _insert_at(parent: etree._Element, index: int, child: etree._Element) -> None:
    if index >= len(parent):
        _append(parent, child)
        return
    text = _text_before(parent, index)
    parent.insert(index, child)
    child.tail = text


def _insert_after(root: etree._Element, tag: str, after: Sequence[str]) -> etree._Element:
    """A new empty <tag> placed after the last of ``after`` (first child otherwise)."""
    index = 0
    for i, child in enumerate(root):
        if child.tag in after:
            index = i + 1
    element = etree.Element(tag)
    _insert_at(root, index, element)
    return element
