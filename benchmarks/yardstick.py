"""The yardstick for bench_discovery: an independent, stdlib-only DTB reader that only names
devices (parse the blob, walk of_platform_default_populate_init()'s device set, name each
device as of_device_make_bus_id() does) and nothing more. It shares no code with the
package, so the package's list + correlate can be timed against it as a ratio.
"""
from __future__ import annotations

import struct

__all__ = ["device_names"]

_BUSES = {"simple-bus", "simple-mfd", "isa", "arm,amba-bus"}
_RESERVED = {"phram", "qcom,rmtfs-mem", "qcom,cmd-db", "qcom,smem", "ramoops", "nvmem-rmem",
             "google,open-dice"}
_GIC = {"arm,gic-v3", "arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic",
        "arm,cortex-a7-gic", "arm,cortex-a5-gic", "arm,gic-v2", "arm,arm11mp-gic", "arm,pl390",
        "qcom,msm-qgic2", "qcom,msm-8660-qgic", "arm,eb11mp-gic", "arm,tc11mp-gic",
        "arm,arm1176jzf-devchip-gic", "nvidia,tegra210-agic"}
_EARLY_CLOCKS = {"fixed-clock", "fixed-factor-clock"}


class _Node:
    __slots__ = ("name", "props", "children", "parent")

    def __init__(self, name: str, parent: _Node | None) -> None:
        self.name = name
        self.props: dict[str, bytes] = {}
        self.children: list[_Node] = []
        self.parent = parent


def _parse(blob: bytes) -> _Node:
    (_magic, _total, off_struct, off_strings) = struct.unpack_from(">4I", blob, 0)
    pos = off_struct
    stack: list[_Node] = []
    root: _Node | None = None
    while True:
        (token,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if token == 1:
            end = blob.index(b"\0", pos)
            name = blob[pos:end].decode("ascii")
            pos = (end + 4) & ~3
            node = _Node(name, stack[-1] if stack else None)
            if stack:
                stack[-1].children.append(node)
            else:
                root = node
            stack.append(node)
        elif token == 2:
            stack.pop()
        elif token == 3:
            length, nameoff = struct.unpack_from(">II", blob, pos)
            pos += 8
            start = off_strings + nameoff
            pname = blob[start:blob.index(b"\0", start)].decode("ascii")
            stack[-1].props[pname] = blob[pos:pos + length]
            pos = (pos + length + 3) & ~3
        elif token == 9:
            break
    assert root is not None
    return root


def _u32s(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(raw) // 4}I", raw)


def _compat(node: _Node) -> list[str]:
    raw = node.props.get("compatible")
    return raw[:-1].decode("utf-8", "replace").split("\0") if raw else []


def _cells(node: _Node | None, prop: str, default: int) -> int:
    while node is not None:
        raw = node.props.get(prop)
        if raw is not None:
            return int.from_bytes(raw[:4], "big")
        node = node.parent
    return default


def _number(cells: tuple[int, ...]) -> int:
    value = 0
    for c in cells:
        value = (value << 32) | c
    return value


def _translate(node: _Node) -> int | None:
    """reg[0]'s CPU address through every ancestor's ranges (drivers/of/address.c)."""
    bus = node.parent
    if bus is None or "reg" not in node.props:
        return None
    na = _cells(bus, "#address-cells", 1)
    reg = _u32s(node.props["reg"])
    if na == 0 or len(reg) < na:
        return None
    addr = reg[:na]
    while bus.parent is not None:
        ranges = bus.props.get("ranges")
        if ranges is None:
            return None
        pna = _cells(bus.parent, "#address-cells", 1)
        ns = _cells(bus, "#size-cells", 1)
        pci = bus.props.get("device_type") in (b"pci\0", b"pciex\0") and na == 3
        target = _number(addr[1:]) if pci else _number(addr)
        if ranges:
            r = _u32s(ranges)
            width = na + pna + ns
            for i in range(0, len(r) - width + 1, width):
                child = r[i:i + na]
                if pci and (child[0] >> 24) & 3 != (addr[0] >> 24) & 3:
                    continue
                base = _number(child[1:]) if pci else _number(child)
                size = _number(r[i + na + pna:i + width])
                if base <= target < base + size:
                    target = _number(r[i + na:i + na + pna]) + target - base
                    break
            else:
                return None
        if target >> (32 * pna):
            return None
        addr = tuple((target >> (32 * (pna - 1 - k))) & 0xFFFFFFFF for k in range(pna))
        na = pna
        bus = bus.parent
    return _number(addr)


def _name(node: _Node) -> str:
    suffix = None
    while node.parent is not None:
        addr = _translate(node)
        if addr is not None:
            addr &= (1 << 64) - 1
            base = node.name.split("@", 1)[0]
            mask = node.props.get("mask")
            if mask is not None:
                m = int.from_bytes(mask[:4], "big")
                head = f"{addr:x}.{(m & -m).bit_length() - 1:x}.{base}"
            else:
                head = f"{addr:x}.{base}"
            return head if suffix is None else f"{head}:{suffix}"
        suffix = node.name if suffix is None else f"{node.name}:{suffix}"
        node = node.parent
    return suffix or ""


def _ok(node: _Node) -> bool:
    status = node.props.get("status")
    if status is not None and status.rstrip(b"\0") not in (b"okay", b"ok"):
        return False
    compat = _compat(node)
    if "interrupt-controller" in node.props and any(c in _GIC for c in compat):
        return False
    return not any(c in _EARLY_CLOCKS for c in compat)


def device_names(blob: bytes) -> list[str]:
    """The names the kernel gives the platform/amba devices of a DTB."""
    root = _parse(blob)
    done: set[int] = set()
    names: list[str] = []

    def create(node: _Node) -> bool:
        if id(node) in done or not _ok(node):
            return False
        done.add(id(node))
        names.append(_name(node))
        return True

    def bus_create(node: _Node, recurse: bool = True) -> None:
        compat = _compat(node)
        if not compat or "operating-points-v2" in compat:
            return
        if not create(node) or "arm,primecell" in compat or not recurse:
            return
        if any(c in _BUSES for c in compat):
            for child in node.children:
                bus_create(child)

    stack = [root]
    while stack:
        node = stack.pop()
        if _RESERVED.intersection(_compat(node)):
            create(node)
        stack.extend(reversed(node.children))
    by_name = {c.name: c for c in root.children}
    if "firmware" in by_name:
        for child in by_name["firmware"].children:
            bus_create(child, recurse=False)
    if "chosen" in by_name:
        fb = next((c for c in by_name["chosen"].children
                   if "simple-framebuffer" in _compat(c)), None)
        if fb is not None:
            create(fb)
    for child in root.children:
        bus_create(child)
    return names
