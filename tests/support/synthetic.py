"""Synthetic device trees for tests and benchmarks (built with the FDT writer).

:func:`gic_soc` is a small GIC-based board with one ``simple-bus``; tests add
the nodes they need to it. :func:`large_soc` generates a SoC of any size for
the benchmark (2,000 devices / 20,000 nodes by default).
"""
from __future__ import annotations

from pathlib import Path

from platform_hostdev.dt.fdt import RawNode, parse_dtb
from platform_hostdev.dt.tree import DeviceTree

from .fdtwriter import node, to_dtb

__all__ = ["GIC_PHANDLE", "CLK_PHANDLE", "gic_soc", "tree_of", "write_dtb", "large_soc"]

GIC_PHANDLE = 1
CLK_PHANDLE = 2


def tree_of(root: RawNode, source: str = "<synthetic>") -> DeviceTree:
    """A DeviceTree from a RawNode tree, round-tripped through a real DTB blob."""
    return DeviceTree(parse_dtb(to_dtb(root), source), source)


def write_dtb(path: Path, root: RawNode) -> Path:
    path.write_bytes(to_dtb(root))
    return path


def gic_soc(*soc_children: RawNode, top: tuple[RawNode, ...] = ()) -> RawNode:
    """/ (2 address, 2 size cells, GIC as interrupt parent), /intc, /clk, /soc (simple-bus,
    1:1 ``ranges`` to 32-bit addresses) holding ``soc_children``; ``top`` adds root nodes."""
    return node("", {"#address-cells": 2, "#size-cells": 2, "interrupt-parent": GIC_PHANDLE,
                     "compatible": "test,board", "model": "synthetic"}, [
        node("intc@8000000", {"compatible": "arm,gic-400", "#interrupt-cells": 3,
                              "interrupt-controller": True, "phandle": GIC_PHANDLE,
                              "reg": [0, 0x8000000, 0, 0x10000]}),
        node("clk", {"compatible": "fixed-clock", "#clock-cells": 0,
                     "clock-frequency": 24000000, "phandle": CLK_PHANDLE}),
        node("soc", {"compatible": "simple-bus", "#address-cells": 1, "#size-cells": 1,
                     "ranges": [0, 0, 0, 0x40000000]}, list(soc_children)),
        *top,
    ])


def large_soc(devices: int = 2000, nodes_per_device: int = 10) -> RawNode:
    """A SoC of ``devices`` platform devices, each with ``nodes_per_device - 1`` children.

    Devices sit under 20 simple-bus segments with their own ``ranges`` (two
    translation levels); every device has two reg entries, two SPIs, a clock
    and an alias, so naming, translation, IRQ decoding and link parsing all run.
    """
    segments = 20
    per_segment = -(-devices // segments)
    buses = []
    aliases: dict[str, str] = {}
    made = 0
    for seg in range(segments):
        base = 0x1000_0000 + seg * 0x100_0000
        children = []
        for i in range(per_segment):
            if made == devices:
                break
            offset = i * 0x2000
            name = f"dev@{offset:x}"
            kids = [node(f"port@{k}", {"reg": k, "label": f"port{k}"})
                    for k in range(nodes_per_device - 1)]
            children.append(node(name, {
                "compatible": ["vendor,block-v2", "vendor,block"],
                "reg": [offset, 0x1000, offset + 0x1000, 0x100],
                "interrupts": [0, (made * 2) % 900, 4, 0, (made * 2 + 1) % 900, 1],
                "clocks": [CLK_PHANDLE],
                "#address-cells": 1, "#size-cells": 0,
            }, kids))
            aliases[f"block{made}"] = f"/soc/bus@{base:x}/{name}"
            made += 1
        buses.append(node(f"bus@{base:x}", {
            "compatible": "simple-bus", "#address-cells": 1, "#size-cells": 1,
            "ranges": [0, base, 0x100_0000]}, children))
    root = gic_soc(*buses)
    root.children.append(node("aliases", dict(aliases)))
    return root
