"""Synthetic DTBs for tests and benchmarks.

Serialisation is the package's own :func:`platform_hostdev.dt.fdt.build_dtb`
(a version-17 DTB from a :class:`~platform_hostdev.dt.fdt.RawNode` tree), so a
synthetic board reaches every reader exactly as a real DTB would. :func:`node` and
:func:`encode` make those trees short to write::

    dtb = to_dtb(node("", {"#address-cells": 1, "#size-cells": 1}, [
        node("uart@1000", {"compatible": "ns16550a", "reg": [0x1000, 0x100]}),
    ]))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from platform_hostdev.dt.fdt import RawNode, build_dtb

__all__ = ["PropValue", "encode", "node", "to_dtb", "cells", "strings"]

PropValue = bool | int | str | bytes | Sequence[int] | Sequence[str]


def cells(*values: int) -> bytes:
    """Big-endian u32 cells."""
    return b"".join(v.to_bytes(4, "big") for v in values)


def strings(*values: str) -> bytes:
    """A NUL-separated, NUL-terminated string list."""
    return b"".join(v.encode() + b"\0" for v in values)


def encode(value: PropValue) -> bytes:
    """Property bytes: True -> empty, int -> one cell, str -> string, lists -> cells/strings."""
    if isinstance(value, bool):
        if not value:
            raise ValueError("a boolean property is present (True) or left out")
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return cells(value)
    if isinstance(value, str):
        return strings(value)
    texts = [v for v in value if isinstance(v, str)]
    if texts and len(texts) == len(value):
        return strings(*texts)
    return cells(*[v for v in value if isinstance(v, int)])


def node(name: str, props: Mapping[str, PropValue] | None = None,
         children: Sequence[RawNode] = ()) -> RawNode:
    """A RawNode with encoded properties (in the given order) and children."""
    return RawNode(name, {k: encode(v) for k, v in (props or {}).items()}, list(children))


def to_dtb(root: RawNode, boot_cpuid: int = 0) -> bytes:
    """Serialise a RawNode tree as a DTB blob (the package's own fdt.build_dtb)."""
    return build_dtb(root, boot_cpuid)
