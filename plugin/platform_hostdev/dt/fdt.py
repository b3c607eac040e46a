"""Readers for the two forms a device tree reaches us in.

* a flattened DTB blob (devicetree specification v0.4, chapter 5);
* the kernel's unflattened copy, /sys/firmware/devicetree/base (one directory
  per node, one file per property holding the raw big-endian bytes).

Both produce the same :class:`RawNode` tree; :mod:`platform_hostdev.dt.tree`
interprets it.
"""
from __future__ import annotations

import array
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platform_hostdev.dt.limits import (
    MAX_FDT_SIZE,
    MAX_LIVE_BYTES,
    MAX_LIVE_ENTRIES,
    MAX_NODE_DEPTH,
    NAME_MAX,
)
from platform_hostdev.errors import DeviceTreeError

__all__ = ["RawNode", "parse_dtb", "read_blob", "read_dtb", "read_sysfs_tree", "build_dtb",
           "FDT_MAGIC", "walk_dtb"]

FDT_MAGIC = 0xD00DFEED
_FDT_BEGIN_NODE = 1
_FDT_END_NODE = 2
_FDT_PROP = 3
_FDT_NOP = 4
_FDT_END = 9
_HEADER = struct.Struct(">10I")
_DEPTH_LIMIT = (f"the kernel keeps nodes at most {MAX_NODE_DEPTH} levels below the root "
                "(drivers/of/fdt.c unflatten_dt_nodes(), FDT_MAX_DEPTH)")
_DEPTH_FIX = "nest the nodes less deeply in the DTS and rebuild the DTB"
_NAME_LIMIT = (f"longer than the {NAME_MAX} bytes a name can have under "
               "/sys/firmware/devicetree/base (NAME_MAX, include/uapi/linux/limits.h)")
_NAME_FIX = "shorten the name in the DTS and rebuild the DTB"
_FIRST_READ = 1 << 16


class RawNode:
    """A node as stored: its name (with unit address), properties in order, children."""

    __slots__ = ("name", "properties", "children")

    def __init__(self, name: str, properties: dict[str, bytes] | None = None,
                 children: list[RawNode] | None = None) -> None:
        self.name = name
        self.properties: dict[str, bytes] = properties if properties is not None else {}
        self.children: list[RawNode] = children if children is not None else []

    def __repr__(self) -> str:
        return (f"RawNode(name={self.name!r}, properties={self.properties!r}, "
                f"children={self.children!r})")


def parse_dtb(blob: bytes, source: str = "<dtb>") -> RawNode:
    """Parse a DTB blob into a RawNode tree; raise DeviceTreeError on any malformation."""
    root: RawNode = walk_dtb(blob, source, _raw_node)[0]
    return root


def _raw_node(name: str, parent: Any) -> RawNode:
    return RawNode(name)


def walk_dtb(blob: bytes, source: str, make: Callable[[str, Any], Any]) -> list[Any]:
    """Parse a DTB blob with ``make(name, parent)`` building each node (the root: ``make("",
    None)``); returns every node made, in document order (the root first).

    A node made must have ``name``, ``properties`` (a dict the parser fills)
    and ``children``: a list the parser appends to, or an empty tuple it
    replaces with a list at the first child.
    Any malformation is a DeviceTreeError.
    """
    if len(blob) < _HEADER.size:
        raise DeviceTreeError(source, None, f"{len(blob)} bytes is too short for a DTB header")
    (magic, totalsize, off_struct, off_strings, _off_rsv, version, _last_comp, _cpu,
     size_strings, size_struct) = _HEADER.unpack_from(blob, 0)
    if magic != FDT_MAGIC:
        raise DeviceTreeError(source, None, f"bad magic 0x{magic:08x}, not a DTB",
                              "pass a .dtb file (compile a .dts with dtc -I dts -O dtb)")
    if totalsize > MAX_FDT_SIZE:
        raise DeviceTreeError(source, None,
                              f"header says {totalsize} bytes, more than the {MAX_FDT_SIZE} "
                              "(2 MiB) an arm64 kernel boots (MAX_FDT_SIZE, "
                              "arch/arm64/include/asm/boot.h)",
                              "pass the DTB an arm64 board boots with; a larger blob is not one")
    if totalsize > len(blob):
        raise DeviceTreeError(source, None,
                              f"header says {totalsize} bytes but the file has {len(blob)} "
                              "(truncated DTB)")
    if version < 17:
        size_struct = totalsize - off_struct
    struct_end = off_struct + size_struct
    strings_end = off_strings + size_strings
    if struct_end > totalsize or strings_end > totalsize:
        raise DeviceTreeError(source, None, "structure or strings block lies outside the blob")
    return _walk_structure(blob, source, off_struct, struct_end, off_strings, strings_end, make)


def _walk_structure(blob: bytes, source: str, base: int, struct_end: int, off_strings: int,
                    strings_end: int, make: Callable[[str, Any], Any]) -> list[Any]:
    """The structure block's tokens into nodes (devicetree specification v0.4, 5.4).

    The blob up to the block's end is read as one array of big-endian u32
    words, word k at byte 4k (every token sits at a 4-byte aligned offset,
    5.4.2); paths are only built for error messages (from the stack of open
    nodes); property names are decoded once per strings-block offset.
    """
    if base % 4:
        raise DeviceTreeError(source, None, f"the structure block starts at offset {base}, "
                                            "not 4-byte aligned (devicetree spec 5.4.2)")
    words = array.array("I")
    if words.itemsize != 4:  # pragma: no cover - every Linux ABI has a 4-byte unsigned int
        words = array.array("L")
    words.frombytes(blob[:struct_end - struct_end % 4])
    if sys.byteorder == "little":
        words.byteswap()
    stack: list[Any] = []
    made: list[Any] = []
    names: dict[int, str] = {}
    props: dict[str, bytes] = {}

    def where() -> str:
        return "/" + "/".join(n.name for n in stack[1:]) if stack else source

    i = base >> 2
    while True:
        try:
            token = words[i]
        except IndexError:
            raise DeviceTreeError(source, None,
                                  "structure block ends before FDT_END (truncated)") from None
        if token == _FDT_PROP:
            if not stack:
                raise DeviceTreeError(source, None, "property outside any node")
            try:
                length = words[i + 1]
                nameoff = words[i + 2]
            except IndexError:
                raise DeviceTreeError(where(), None, "property header truncated") from None
            start = (i + 3) << 2
            end = start + length
            if end > struct_end:
                raise DeviceTreeError(where(), None,
                                      f"property value of {length} bytes is truncated")
            pname = names.get(nameoff)
            if pname is None:
                pname = names[nameoff] = _name_at(blob, off_strings + nameoff, strings_end,
                                                  nameoff, where)
            if pname in props:
                raise DeviceTreeError(where(), pname,
                                      "appears twice in the node (dtc refuses a duplicate "
                                      "property name; the kernel would use the first, sysfs "
                                      "can show only one)",
                                      "remove one of the two in the DTS and rebuild the DTB")
            props[pname] = blob[start:end]
            i = (end + 3) >> 2
        elif token == _FDT_BEGIN_NODE:
            start = (i + 1) << 2
            nul = blob.find(b"\0", start, struct_end)
            if nul < 0:
                raise DeviceTreeError(where(), None,
                                      "string runs past the end of its block (truncated DTB)")
            if nul - start > NAME_MAX:
                raise DeviceTreeError(where(), None, f"a child node name of {nul - start} bytes "
                                      f"is {_NAME_LIMIT}", _NAME_FIX)
            raw_name = blob[start:nul]
            i = (nul + 4) >> 2
            try:
                name = raw_name.decode("ascii")
            except UnicodeDecodeError:
                raise DeviceTreeError(where(), None,
                                      f"name is not ASCII: {raw_name!r}") from None
            if not stack:
                if made:
                    raise DeviceTreeError(source, None, "more than one root node")
                node = make("", None)
            else:
                if len(stack) > MAX_NODE_DEPTH:
                    raise DeviceTreeError(where(), None,
                                          f"child node {name!r} is {len(stack)} levels below "
                                          f"the root; {_DEPTH_LIMIT}", _DEPTH_FIX)
                if not name or "/" in name:
                    raise DeviceTreeError(where(), None, f"invalid child node name {name!r}")
                parent = stack[-1]
                node = make(name, parent)
                siblings = parent.children
                if siblings.__class__ is tuple:  # a leaf so far that shares the empty tuple
                    parent.children = [node]
                else:
                    siblings.append(node)
            made.append(node)
            stack.append(node)
            props = node.properties
        elif token == _FDT_END_NODE:
            if not stack:
                raise DeviceTreeError(source, None, "FDT_END_NODE without a node")
            stack.pop()
            if stack:
                props = stack[-1].properties
            i += 1
        elif token == _FDT_NOP:
            i += 1
        elif token == _FDT_END:
            if stack:
                raise DeviceTreeError(where(), None, "FDT_END inside an open node")
            break
        else:
            raise DeviceTreeError(where(), None,
                                  f"unknown structure token 0x{token:x} at {4 * i}")
    if not made:
        raise DeviceTreeError(source, None, "no root node")
    return made


def _name_at(blob: bytes, start: int, strings_end: int, nameoff: int,
             where: Callable[[], str]) -> str:
    """A property name from the strings block (errors located at the current node)."""
    if start >= strings_end:
        raise DeviceTreeError(where(), None, f"property name offset {nameoff} out of range")
    nul = blob.find(b"\0", start, strings_end)
    if nul < 0:
        raise DeviceTreeError(where(), None,
                              "string runs past the end of its block (truncated DTB)")
    if nul - start > NAME_MAX:
        raise DeviceTreeError(where(), None, f"a property name of {nul - start} bytes is "
                              f"{_NAME_LIMIT}", _NAME_FIX)
    try:
        return blob[start:nul].decode("ascii")
    except UnicodeDecodeError:
        raise DeviceTreeError(where(), None, f"name is not ASCII: {blob[start:nul]!r}") from None


def read_blob(path: str | os.PathLike[str]) -> bytes:
    """The first MAX_FDT_SIZE bytes of a DTB file: all a DTB an arm64 kernel boots can use
    (a longer file, /dev/zero, a FIFO is never read to its end)."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FDT_SIZE)
    except OSError as exc:
        raise DeviceTreeError(str(path), None, f"cannot read the DTB: {exc.strerror}",
                              "check the path given with --dtb") from None


def read_dtb(path: str | os.PathLike[str]) -> RawNode:
    """Read and parse a DTB file."""
    return parse_dtb(read_blob(path), str(path))


def read_sysfs_tree(base: str | os.PathLike[str]) -> RawNode:
    """Read /sys/firmware/devicetree/base (or a copy of it) into a RawNode tree.

    A symlink is refused, never followed: the kernel creates none there, and
    following one would let a crafted tree make us read outside it (skipping it
    silently would drop a property or node and mislead every later answer).
    Names must be ASCII, as in a DTB; depth, node and property counts and
    property sizes are held to :mod:`platform_hostdev.dt.limits`.
    """
    base_path = Path(base)
    if not base_path.is_dir():
        raise DeviceTreeError("/", None, f"{base_path} is not a directory",
                              "the host exposes no device tree: is this a DT-booted ARM host? "
                              "Use --dtb FILE to analyse a board offline")
    root = RawNode("")
    _read_dir(base_path, root, "/", 0, _Budget())
    return root


class _Budget:
    """What a live tree may still hold: entries (nodes and properties) and value bytes."""

    __slots__ = ("entries", "bytes")

    def __init__(self) -> None:
        self.entries = MAX_LIVE_ENTRIES
        self.bytes = MAX_LIVE_BYTES

    def take(self, path: str, prop: str | None, count: int, size: int) -> None:
        self.entries -= count
        self.bytes -= size
        if self.entries < 0:
            raise DeviceTreeError(path, prop, f"the tree holds more than {MAX_LIVE_ENTRIES} "
                                  "nodes and properties, more than a tree unflattened from a "
                                  "bootable DTB can (see platform_hostdev.dt.limits)",
                                  "point --root at a copy of a real host's sysfs")
        if self.bytes < 0:
            raise DeviceTreeError(path, prop, f"the property values add up to more than "
                                  f"{MAX_LIVE_BYTES} bytes, more than a tree unflattened from "
                                  "a bootable DTB holds (see platform_hostdev.dt.limits)",
                                  "point --root at a copy of a real host's sysfs")


def _read_dir(directory: Path, node: RawNode, path: str, depth: int, budget: _Budget) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise DeviceTreeError(path, None, f"cannot list node directory: {exc.strerror}") from None
    budget.take(path, None, len(entries), 0)
    for entry in entries:
        if entry.is_symlink():
            raise DeviceTreeError(
                path, entry.name,
                f"is a symlink (to {os.readlink(entry.path)!r}); the kernel creates none in "
                "the device tree, so the tree has been tampered with",
                f"remove {entry.path}, or point --root at an untouched sysfs copy")
        if not entry.name.isascii():
            raise DeviceTreeError(path, None, f"name is not ASCII: {entry.name!r}",
                                  "names in a device tree are ASCII; point --root at an "
                                  "untouched sysfs copy")
        if entry.is_dir(follow_symlinks=False):
            if depth >= MAX_NODE_DEPTH:
                raise DeviceTreeError(path, None, f"child node {entry.name!r} is {depth + 1} "
                                      f"levels below the root; {_DEPTH_LIMIT}", _DEPTH_FIX)
            child = RawNode(entry.name)
            node.children.append(child)
            _read_dir(Path(entry.path), child, path.rstrip("/") + "/" + entry.name, depth + 1,
                      budget)
        elif entry.is_file(follow_symlinks=False):
            try:
                with open(entry.path, "rb") as f:
                    # a small first read: read(n) allocates n bytes up front
                    value = f.read(_FIRST_READ)
                    if len(value) == _FIRST_READ:
                        value += f.read(MAX_FDT_SIZE + 1 - _FIRST_READ)
            except OSError as exc:
                raise DeviceTreeError(path, entry.name,
                                      f"cannot read property file: {exc.strerror}") from None
            if len(value) > MAX_FDT_SIZE:
                raise DeviceTreeError(path, entry.name, f"holds more than {MAX_FDT_SIZE} bytes, "
                                      "more than the largest DTB an arm64 kernel boots "
                                      "(MAX_FDT_SIZE, arch/arm64/include/asm/boot.h)",
                                      "point --root at a copy of a real host's sysfs")
            budget.take(path, entry.name, 0, len(value))
            node.properties[entry.name] = value


def build_dtb(root: RawNode, boot_cpuid: int = 0) -> bytes:
    """Flatten a RawNode tree into a version-17 DTB (empty memory reservation map).

    Property names are de-duplicated in the strings block; the output parses
    back with :func:`parse_dtb` and with dtc.
    """
    structure = bytearray()
    strings = bytearray()
    offsets: dict[str, int] = {}

    def emit(node: RawNode, is_root: bool) -> None:
        structure.extend(struct.pack(">I", _FDT_BEGIN_NODE))
        name = b"" if is_root else node.name.encode("ascii")
        structure.extend(name + b"\0")
        structure.extend(b"\0" * (-len(structure) % 4))
        for pname, value in node.properties.items():
            off = offsets.get(pname)
            if off is None:
                off = offsets[pname] = len(strings)
                strings.extend(pname.encode("ascii") + b"\0")
            structure.extend(struct.pack(">III", _FDT_PROP, len(value), off))
            structure.extend(value)
            structure.extend(b"\0" * (-len(structure) % 4))
        for child in node.children:
            emit(child, False)
        structure.extend(struct.pack(">I", _FDT_END_NODE))

    emit(root, True)
    structure.extend(struct.pack(">I", _FDT_END))
    rsvmap = b"\0" * 16
    off_rsv = _HEADER.size
    off_struct = off_rsv + len(rsvmap)
    off_strings = off_struct + len(structure)
    total = off_strings + len(strings)
    header = _HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsv, 17, 16,
                          boot_cpuid, len(strings), len(structure))
    return header + rsvmap + bytes(structure) + bytes(strings)
