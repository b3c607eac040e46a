"""Properties that carry phandles, as one table (the device tree's "ABI").

Each rule says how to split a property into (target, arguments): either a
fixed argument count, or the count read from the target's ``#<name>-cells``
(as of_parse_phandle_with_args() does), at most MAX_PHANDLE_ARGS
(:mod:`platform_hostdev.dt.limits`). Vendor properties outside this table
are not interpreted: a raw u32 could be anything.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from platform_hostdev.dt.tree import DeviceTree, Node

__all__ = ["PhandleLink", "phandle_links", "phandle_cells", "link_rule"]


class PhandleLink(NamedTuple):
    """One reference from ``prop`` of a node to ``target`` with its argument cells."""

    prop: str
    index: int  # type: ignore[assignment]  # shadows tuple.index
    target: str
    args: tuple[int, ...]


# property name -> the target's cells property, or a fixed argument count.
_RULES: dict[str, str | int] = {
    "clocks": "#clock-cells",
    "assigned-clocks": "#clock-cells",
    "assigned-clock-parents": "#clock-cells",
    "resets": "#reset-cells",
    "power-domains": "#power-domain-cells",
    "iommus": "#iommu-cells",
    "dmas": "#dma-cells",
    "phys": "#phy-cells",
    "interconnects": "#interconnect-cells",
    "mboxes": "#mbox-cells",
    "pwms": "#pwm-cells",
    "io-channels": "#io-channel-cells",
    "thermal-sensors": "#thermal-sensor-cells",
    "hwlocks": "#hwlock-cells",
    "sound-dai": "#sound-dai-cells",
    "interrupts-extended": "#interrupt-cells",
    "access-controllers": "#access-controller-cells",
    "nvmem-cells": 0,
    "memory-region": 0,
    "phy-handle": 0,
    "interrupt-parent": 0,
    "operating-points-v2": 0,
    "sram": 0,
    "remote-endpoint": 0,
    "cpu": 0,
    "pcs-handle": 0,
    "sfp": 0,
    "i2c-bus": 0,
    "ddc-i2c-bus": 0,
    "dma-coherent-pool": 0,
    "msi-parent": "#msi-cells",
    "gpio-ranges": 3,
}
# cells properties whose absence means "no arguments" (of_parse_phandle_with_optional_args)
_OPTIONAL_CELLS = frozenset({"#msi-cells"})
_PINCTRL = re.compile(r"pinctrl-[0-9]+$")
_GPIOS = re.compile(r"(.+-)?gpios?$")
_GPIO_COUNT = re.compile(r"(^|[-,])(nr-gpios?|ngpios)$")  # counts, not links
_SUPPLY = re.compile(r".+-supply$")
# A GPIO hog's gpios are <offset flags> of its parent controller, no phandle
# (drivers/of/property.c parse_gpio_compat ignores nodes with gpio-hog).
_HOG_PROPS = frozenset({"gpio", "gpios"})


_RULE_MEMO: dict[str, str | int | None] = {}
# PhandleLink(...) without the Python-level __new__ typing.NamedTuple adds (all fields given)
_new_tuple = tuple.__new__


def link_rule(prop: str) -> str | int | None:
    """How ``prop`` carries phandles: a #cells name, a fixed arg count, or None (not a link)."""
    try:
        return _RULE_MEMO[prop]
    except KeyError:
        rule = _RULE_MEMO[prop] = _link_rule(prop)
        return rule


def _link_rule(prop: str) -> str | int | None:
    rule = _RULES.get(prop)
    if rule is not None:
        return rule
    if _PINCTRL.match(prop) or _SUPPLY.match(prop):
        return 0
    if _GPIOS.match(prop) and not prop.startswith("#") and not _GPIO_COUNT.search(prop):
        return "#gpio-cells"
    return None


def phandle_links(tree: DeviceTree, node: Node) -> list[PhandleLink]:
    """Every phandle reference ``node`` makes through a known property, in property order.

    A dangling phandle, or a target lacking the #cells property, is a located
    DeviceTreeError (the kernel would fail the same look-up).
    """
    links: list[PhandleLink] = []
    hog = "gpio-hog" in node.properties
    rules = _RULE_MEMO
    for prop in node.properties:
        rule = rules.get(prop, "")  # "" is no rule: not looked at yet
        if rule == "":
            rule = link_rule(prop)
        if rule is None or (hog and prop in _HOG_PROPS):
            continue
        for index, _, target, args in _references(tree, node, prop, rule):
            links.append(_new_tuple(PhandleLink, (prop, index, target.path, args)))
    return links


def phandle_cells(tree: DeviceTree, node: Node, prop: str) -> list[tuple[int, str]]:
    """(cell position, target path) of every phandle in ``prop`` (empty if not a link)."""
    rule = link_rule(prop)
    if rule is None or ("gpio-hog" in node.properties and prop in _HOG_PROPS):
        return []
    return [(pos, target.path) for _, pos, target, _ in _references(tree, node, prop, rule)]


def _references(tree: DeviceTree, node: Node, prop: str,
                rule: str | int) -> list[tuple[int, int, Node, tuple[int, ...]]]:
    """(entry index, phandle cell position, target, argument cells) of each reference."""
    found: list[tuple[int, int, Node, tuple[int, ...]]] = []
    cells = node.cells(prop)
    end = len(cells)
    by_phandle = tree.by_phandle
    # a target's #...-cells, read once per target (the tree is read-only)
    count_key = "" if isinstance(rule, int) else "\0" + rule
    pos = index = 0
    while pos < end:
        value = cells[pos]
        at = pos
        pos += 1
        if value == 0:  # an empty slot (e.g. gpios = <0>, <&gpio 1 0>)
            index += 1
            continue
        target = by_phandle.get(value) or tree.phandle(value, node, prop)
        if isinstance(rule, int):
            count = rule
        elif count_key in target.memo:
            count = target.memo[count_key]
        elif rule in target.properties:
            # of_phandle_iterator_args(): at most MAX_PHANDLE_ARGS
            count = target.memo[count_key] = target.cell_count(rule)
        elif rule in _OPTIONAL_CELLS:
            count = 0
        elif rule == "#interrupt-cells" or prop.endswith("gpios") or prop.endswith("gpio"):
            raise node.error(prop, f"target {target.path} has no {rule}")
        else:
            # of_parse_phandle_with_args() treats a missing #cells as 0 only for
            # some bindings; report instead of guessing.
            raise node.error(prop, f"target {target.path} has no {rule}",
                             f"add {rule} to {target.path}")
        if pos + count > end:
            raise node.error(prop, f"entry {index} wants {count} argument cells for "
                                   f"{target.path} but the property ends")
        found.append((index, at, target, cells[pos:pos + count]))
        pos += count
        index += 1
    return found
