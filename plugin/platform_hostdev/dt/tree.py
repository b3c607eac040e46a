"""The device-tree model: nodes, typed property access, phandles and aliases.

A :class:`DeviceTree` is built once from a :class:`~platform_hostdev.dt.fdt.RawNode`
tree and indexes every node by path and by phandle, so later look-ups are
dictionary look-ups. Property readers raise :class:`DeviceTreeError` located
as ``node X, property Y: ...``.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from platform_hostdev.dt.fdt import RawNode, read_blob, read_sysfs_tree, walk_dtb
from platform_hostdev.dt.limits import ADDR_CELLS_LIMIT, ARGS_LIMIT, SIZE_CELLS_LIMIT
from platform_hostdev.errors import DeviceTreeError

__all__ = ["Node", "DeviceTree", "OF_ROOT_ADDR_CELLS", "OF_ROOT_SIZE_CELLS"]

# Linux's defaults when no ancestor has #address-cells/#size-cells
# (include/linux/of.h OF_ROOT_NODE_ADDR_CELLS_DEFAULT / _SIZE_CELLS_DEFAULT).
OF_ROOT_ADDR_CELLS = 1
OF_ROOT_SIZE_CELLS = 1
_U32S: dict[int, struct.Struct] = {}


def _u32s(size: int) -> struct.Struct:
    """The big-endian u32 cells of a ``size``-byte value (a multiple of 4)."""
    found = _U32S.get(size)
    if found is None:
        found = _U32S[size] = struct.Struct(f">{size // 4}I")
    return found


class Node:
    """One device-tree node: ``name``, ``path``, ``parent``, ``properties``, ``children``.

    A tree is read-only once built, so derived values (cells, compatibles,
    inherited #address-cells/#size-cells, translated reg) are computed once
    and kept in ``memo``. Compared by identity.
    """

    __slots__ = ("name", "path", "parent", "properties", "children", "memo")

    def __init__(self, name: str, parent: Node | None,
                 properties: dict[str, bytes] | None = None) -> None:
        """``name`` with its unit address ("" for the root); the path follows from the
        parent's. A leaf shares the empty tuple as ``children``; whoever builds the tree
        gives a node with children a list."""
        self.name = name
        if parent is None:
            self.path = "/"
        else:
            above = parent.path
            self.path = above + "/" + name if above != "/" else "/" + name
        self.parent = parent
        self.properties = properties if properties is not None else {}
        self.children: Sequence[Node] = ()
        self.memo: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Node({self.path!r})"

    @property
    def basename(self) -> str:
        """The name without its unit address (the kernel's %pOFn)."""
        return self.name.split("@", 1)[0]

    @property
    def unit_address(self) -> str | None:
        return self.name.split("@", 1)[1] if "@" in self.name else None

    def has(self, prop: str) -> bool:
        return prop in self.properties

    def error(self, prop: str | None, problem: str, fix: str = "") -> DeviceTreeError:
        return DeviceTreeError(self.path, prop, problem, fix)

    def cells(self, prop: str) -> tuple[int, ...]:
        """A property as big-endian u32 cells."""
        found: tuple[int, ...] | None = self.memo.get(prop)
        if found is not None:
            return found
        raw = self.properties[prop]
        if len(raw) % 4:
            raise self.error(prop, f"length {len(raw)} is not a multiple of 4 bytes (u32 cells)")
        layout = _U32S.get(len(raw)) or _u32s(len(raw))
        found = self.memo[prop] = layout.unpack(raw)
        return found

    def u32(self, prop: str, default: int | None = None) -> int:
        raw = self.properties.get(prop)
        if raw is None:
            if default is None:
                raise self.error(prop, "missing")
            return default
        if len(raw) < 4:
            raise self.error(prop, f"holds {len(raw)} bytes, a u32 needs 4")
        return int.from_bytes(raw[:4], "big")

    def cell_count(self, prop: str, limit: tuple[int, str] = ARGS_LIMIT,
                   default: int | None = None) -> int:
        """A ``#...-cells`` property (``default`` when absent, else missing is an error),
        refused above the kernel's ``limit`` (value, name; :mod:`platform_hostdev.dt.limits`)."""
        value = self.u32(prop, default)
        if value > limit[0]:
            raise self.error(prop, f"{value} cells is more than the {limit[0]} Linux supports "
                                   f"({limit[1]})",
                             f"set {prop} of {self.path} to what the binding of its compatible "
                             f"says (at most {limit[0]}) and rebuild the DTB")
        return value

    def strings(self, prop: str) -> list[str]:
        """A string-list property (NUL-separated); non-UTF-8 is an error."""
        raw = self.properties.get(prop)
        if not raw:
            return []
        if not raw.endswith(b"\0"):
            raise self.error(prop, "string list is not NUL-terminated")
        try:
            # a NUL byte is a whole character in UTF-8: split after decoding
            return raw[:-1].decode("utf-8").split("\0")
        except UnicodeDecodeError as exc:
            # located within its own string, as when each is decoded on its own
            at = exc.start - raw.rfind(b"\0", 0, exc.start) - 1
            raise self.error(prop, f"not valid UTF-8 at byte {at}") from None

    def string(self, prop: str) -> str | None:
        values = self.strings(prop)
        return values[0] if values else None

    @property
    def compatible(self) -> tuple[str, ...]:
        found: tuple[str, ...] | None = self.memo.get("\0compatible")
        if found is None:
            raw = self.properties.get("compatible")
            found = () if not raw else tuple(self.strings("compatible"))
            self.memo["\0compatible"] = found
        return found

    def is_available(self) -> bool:
        """The kernel's of_device_is_available(): no status, or "okay"/"ok"."""
        if "status" not in self.properties:
            return True
        status = self.string("status")
        return status is None or status in ("okay", "ok")

    def address_cells(self) -> int:
        """#address-cells for this node's children (inherited, as Linux does)."""
        found: int | None = self.memo.get("\0ac")
        if found is None:
            found = self.memo["\0ac"] = _inherited_cells(self, "#address-cells",
                                                          OF_ROOT_ADDR_CELLS)
        return found

    def size_cells(self) -> int:
        """#size-cells for this node's children (inherited, as Linux does)."""
        found: int | None = self.memo.get("\0sc")
        if found is None:
            found = self.memo["\0sc"] = _inherited_cells(self, "#size-cells",
                                                          OF_ROOT_SIZE_CELLS)
        return found

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, depth first, in DT order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def _inherited_cells(node: Node | None, prop: str, default: int) -> int:
    while node is not None:
        if prop in node.properties:
            return node.cell_count(prop, ADDR_CELLS_LIMIT if prop == "#address-cells"
                                   else SIZE_CELLS_LIMIT)
        node = node.parent
    return default


def _refuse_duplicate(nodes: list[Node]) -> None:
    """Two siblings of one name: the first node whose path was seen before, located."""
    seen: set[str] = set()
    for node in nodes:
        if node.path in seen:
            assert node.parent is not None
            raise node.error(None, f"{node.parent.path} has two child nodes named "
                                   f"{node.name!r}; dtc refuses that (duplicate node name) and "
                                   "the kernel's sysfs can hold only one of them",
                             "rename or merge one of the two nodes in the DTS and rebuild the "
                             "DTB")
        seen.add(node.path)


class DeviceTree:
    """A whole device tree with path, phandle and alias indexes."""

    def __init__(self, raw: RawNode, source: str = "<dt>") -> None:
        self.source = source
        self.root = Node("", None, raw.properties)
        stack: list[tuple[RawNode, Node]] = [(raw, self.root)]
        while stack:
            raw_node, node = stack.pop()
            if raw_node.children:
                children = [Node(raw_child.name, node, raw_child.properties)
                            for raw_child in raw_node.children]
                node.children = children
                stack += zip(raw_node.children, children, strict=True)
        self._index(list(self.root.walk()))

    def _index(self, nodes: list[Node]) -> None:
        """Index ``nodes`` (every node, in document order) by path and phandle; read the
        aliases."""
        self.nodes: list[Node] = nodes
        self.by_path: dict[str, Node] = {node.path: node for node in nodes}
        if len(self.by_path) != len(nodes):
            _refuse_duplicate(nodes)
        self.by_phandle: dict[int, Node] = {}
        for node in nodes:
            props = node.properties
            if "phandle" in props or "linux,phandle" in props:
                self._index_phandle(node)
        self.aliases: dict[str, str] = self._read_aliases()

    @classmethod
    def from_blob(cls, blob: bytes, source: str = "<dtb>") -> DeviceTree:
        """Parse a DTB blob straight into the model (no intermediate RawNode tree)."""
        tree = cls.__new__(cls)
        tree.source = source
        nodes: list[Node] = walk_dtb(blob, source, Node)
        tree.root = nodes[0]
        tree._index(nodes)
        return tree

    @classmethod
    def from_dtb(cls, path: str | os.PathLike[str]) -> DeviceTree:
        return cls.from_blob(read_blob(path), str(path))

    @classmethod
    def from_sysfs(cls, base: str | os.PathLike[str]) -> DeviceTree:
        return cls(read_sysfs_tree(base), str(base))

    def _index_phandle(self, node: Node) -> None:
        for prop in ("phandle", "linux,phandle"):
            if prop in node.properties:
                value = node.u32(prop)
                if value in (0, 0xFFFFFFFF):
                    raise node.error(prop, f"0x{value:x} is not a valid phandle")
                other = self.by_phandle.get(value)
                if other is not None and other is not node:
                    raise node.error(prop, f"phandle 0x{value:x} is also used by {other.path}")
                self.by_phandle[value] = node

    def _read_aliases(self) -> dict[str, str]:
        aliases: dict[str, str] = {}
        node = self.by_path.get("/aliases")
        if node is None:
            return aliases
        for name in node.properties:
            if name in ("name", "phandle", "linux,phandle"):
                continue
            target = node.string(name)
            # The kernel ignores aliases that do not point at an absolute path.
            if target and target.startswith("/"):
                aliases[name] = target
        return aliases

    def node(self, path: str) -> Node:
        try:
            return self.by_path[path]
        except KeyError:
            raise DeviceTreeError(path, None, "no such node",
                                  "check the DT path; list nodes with 'platform-hostdev "
                                  "nodedev-list'") from None

    def phandle(self, value: int, user: Node, prop: str) -> Node:
        """The node a phandle refers to; a dangling phandle is a located error."""
        try:
            return self.by_phandle[value]
        except KeyError:
            raise user.error(prop, f"phandle 0x{value:x} refers to no node (dangling)") from None

    def alias_target(self, alias: str) -> Node | None:
        path = self.aliases.get(alias)
        return self.by_path.get(path) if path else None

    def aliases_of(self, node: Node) -> list[str]:
        """The aliases naming ``node``, sorted."""
        by_target = self.__dict__.get("_aliases_by_path")
        if by_target is None:
            by_target = {}
            for alias, path in sorted(self.aliases.items()):
                by_target.setdefault(path, []).append(alias)
            self.__dict__["_aliases_by_path"] = by_target
        return list(by_target.get(node.path, ()))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.by_path)
