"""Device links of a fake host, made from its device tree the way fw_devlink does (Linux 6.12).

The rules, each from the kernel source:

* Which properties name suppliers: drivers/of/property.c of_supplier_bindings,
  in table order, the first binding that parses a property wins
  (of_link_property). ``iommus``, ``iommu-map`` and ``dmas`` are optional and
  skipped unless fw_devlink.strict=1; ``post-init-providers`` never makes a
  link (FWLINK_FLAG_IGNORE). ``interrupts`` links to the interrupt parent
  after interrupt-map translation (of_irq_parse_one); ``remote-endpoint``
  links the two port parents (of_graph_get_port_parent).
* A supplier node that is not available, or has an unavailable ancestor before
  one with a device, makes no link (of_link_to_phandle).
* The supplier device: the node's own device; for a node that never becomes
  a device, its nearest ancestor device once that device has bound
  (fw_devlink_pickup_dangling_consumers, device_links_driver_bound); none when
  the node was initialised without a device (irqchips and clocks set up
  before populate, fwnode_init_without_drv), nor when the supplier device is
  unbound and such a node (fw_devlink_create_devlink "dev might never
  probe"). A fake host cannot tell an early-initialised interrupt controller
  or clock provider from one whose driver is not loaded: any unbound one
  counts as initialised without a driver.
* The consumer: the node's own device (flags FW_DEVLINK_FLAGS_RPM:
  INFERRED | AUTOPROBE_CONSUMER | PM_RUNTIME), else for a descendant node a
  "proxy" link from the nearest ancestor device with SYNC_STATE_ONLY
  (FW_DEVLINK_FLAGS_PERMISSIVE, __fw_devlink_link_to_suppliers); a proxy from
  a device that is also an ancestor of the supplier is not made
  (__fw_devlink_link_to_consumers), and a device that binds drops its
  SYNC_STATE_ONLY supplier links (device_links_driver_bound). A descendant
  that has a device of its own got a proxy only if the supplier existed
  before the ancestor (populate order).
* No link to itself; no link whose supplier depends on the consumer
  (device_link_add: device_is_dependent, a descendant or consumer of it)
  unless it is SYNC_STATE_ONLY; a cycle between own links is relaxed to
  SYNC_STATE_ONLY | CYCLE (__fw_devlink_relax_cycles).
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from platform_hostdev.dt.interrupts import resolve_interrupts
from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.errors import DeviceTreeError

__all__ = ["FakeLink", "fw_devlinks", "supplier_nodes"]

# of_supplier_bindings, in order: (property or suffix rule, #cells name or None, optional)
_SIMPLE: tuple[tuple[str, str | None, bool], ...] = (
    ("clocks", "#clock-cells", False),
    ("interconnects", "#interconnect-cells", False),
    ("iommus", "#iommu-cells", True),
    ("iommu-map", None, True),            # parse_iommu_maps: every 4th cell from 1
    ("mboxes", "#mbox-cells", False),
    ("io-channels", "#io-channel-cells", False),
    ("io-backends", "#io-backend-cells", False),
    ("dmas", "#dma-cells", True),
    ("power-domains", "#power-domain-cells", False),
    ("hwlocks", "#hwlock-cells", False),
    ("extcon", None, False),
    ("nvmem-cells", "#nvmem-cell-cells", False),
    ("phys", "#phy-cells", False),
    ("wakeup-parent", None, False),
    *((f"pinctrl-{i}", None, False) for i in range(9)),
    ("remote-endpoint", None, False),
    ("pwms", "#pwm-cells", False),
    ("resets", "#reset-cells", False),
    ("leds", None, False),
    ("backlight", None, False),
    ("panel", None, False),
    ("msi-parent", "#msi-cells", False),
    ("pses", "#pse-cells", False),
    ("power-supplies", None, False),
    ("gpio", "#gpio-cells", False),       # parse_gpio_compat: "gpio" and "gpios"
    ("gpios", "#gpio-cells", False),
    ("interrupts", None, False),
    ("interrupts-extended", None, False),
    ("interrupt-map", None, False),
    ("access-controllers", "#access-controller-cells", False),
)
_SUFFIX = ((re.compile(r".+-supply$"), None), (re.compile(r".+-gpio$"), "#gpio-cells"),
           (re.compile(r".+-gpios$"), "#gpio-cells"))


@dataclass
class FakeLink:
    """A device link between two devices of a fake host (names), with its flags."""

    supplier: str
    consumer: str
    sync_state_only: bool = False
    autoprobe: bool = True          # DL_FLAG_AUTOPROBE_CONSUMER
    pm_runtime: bool = True         # DL_FLAG_PM_RUNTIME
    stateless: bool = False         # DL_FLAG_STATELESS ("not tracked")
    auto_remove_on: str = "never"


def _phandle_list(tree: DeviceTree, node: Node, prop: str, cells: str | None) -> list[Node]:
    """__of_parse_phandle_with_args over the whole list; stops at the first bad entry."""
    try:
        values = node.cells(prop)
    except DeviceTreeError:
        return []
    found: list[Node] = []
    pos = 0
    while pos < len(values):
        value = values[pos]
        pos += 1
        if value == 0:
            continue
        try:
            target = tree.phandle(value, node, prop)
        except DeviceTreeError:
            break
        count = 0
        if cells is not None:
            if cells in target.properties:
                count = target.u32(cells)
            elif cells != "#msi-cells":
                break
        pos += count
        found.append(target)
    return found


def _port_parent(node: Node) -> Node | None:
    """of_graph_get_port_parent(): endpoint -> port -> [ports ->] device node."""
    current: Node | None = node
    for depth in (3, 2, 1):
        current = current.parent if current is not None else None
        if current is None:
            return None
        if depth == 2 and current.basename not in ("ports", "in-ports", "out-ports"):
            break
    return current


def supplier_nodes(tree: DeviceTree, node: Node, strict: bool = False
                   ) -> list[tuple[str, Node, Node]]:
    """(property, consumer node, supplier node) of every supplier fw_devlink reads in ``node``."""
    found: list[tuple[str, Node, Node]] = []
    for prop in node.properties:
        targets: list[Node] = []
        consumer = node
        rule = next(((name, cells, optional) for name, cells, optional in _SIMPLE
                     if name == prop), None)
        if rule is not None:
            name, cells, optional = rule
            if optional and not strict:
                continue
            if name in ("gpio", "gpios") and "gpio-hog" in node.properties:
                continue
            if name == "iommu-map":
                try:
                    values = node.cells(prop)
                except DeviceTreeError:
                    values = ()
                for index in range(1, len(values), 4):
                    try:
                        targets.append(tree.phandle(values[index], node, prop))
                    except DeviceTreeError:
                        break
            elif name in ("interrupts", "interrupts-extended"):
                try:
                    specs = resolve_interrupts(tree, node).specs
                except DeviceTreeError:
                    specs = []
                targets = [tree.by_path[s.controller] for s in specs]
            elif name == "interrupt-map":
                continue  # a nexus (PCI hosts): its parents are not platform suppliers here
            elif name == "remote-endpoint":
                remote = _phandle_list(tree, node, prop, None)
                parent = _port_parent(node)
                far = _port_parent(remote[0]) if remote else None
                if parent is None or far is None:
                    continue
                consumer, targets = parent, [far]
            else:
                targets = _phandle_list(tree, node, prop, cells)
        else:
            suffix = next((cells for pattern, cells in _SUFFIX if pattern.match(prop)), "none")
            if suffix == "none" or prop.endswith(",nr-gpios"):
                continue
            targets = _phandle_list(tree, node, prop, suffix)
        found += [(prop, consumer, target) for target in targets]
    return found


def _available_path(node: Node, devices: Mapping[str, str]) -> bool:
    """of_link_to_phandle(): the supplier and its ancestors up to one with a device are
    available."""
    current: Node | None = node
    while current is not None:
        if current.path in devices:
            return True
        if not current.is_available():
            return False
        current = current.parent
    return True


def _initialised(node: Node) -> bool:
    return "interrupt-controller" in node.properties or "#clock-cells" in node.properties


def fw_devlinks(tree: DeviceTree, devices: Mapping[str, str], order: Mapping[str, int],
                bound: Collection[str], strict: bool = False) -> list[FakeLink]:
    """The device links of a booted host.

    ``devices``: DT path -> device name of every device; ``order``: device name ->
    its place in populate order; ``bound``: the names bound to a driver.
    """
    by_name = {name: path for path, name in devices.items()}

    def device_of(node: Node) -> str | None:
        return devices.get(node.path)

    def ancestor_device(node: Node) -> str | None:
        current = node.parent
        while current is not None:
            if current.path in devices:
                return devices[current.path]
            current = current.parent
        return None

    def is_ancestor(anc: str, other: str) -> bool:
        a, b = by_name[anc], by_name[other]
        return b.startswith(a.rstrip("/") + "/") or a == "/"

    def supplier_device(node: Node) -> str | None:
        own = device_of(node)
        if own is not None:
            if own not in bound and _initialised(node):
                return None  # "Not linking ... dev might never probe"
            return own
        current: Node | None = node
        while current is not None and current.path not in devices:
            if _initialised(current):
                return None  # initialised without a device: fwnode_init_without_drv
            current = current.parent
        if current is None:
            return None
        ancestor = devices[current.path]
        return ancestor if ancestor in bound else None  # picked up when it binds

    links: dict[tuple[str, str], FakeLink] = {}
    for node in tree:
        if not node.is_available():
            continue
        for _, consumer_node, target in supplier_nodes(tree, node, strict):
            if not _available_path(target, devices):
                continue
            supplier = supplier_device(target)
            if supplier is None:
                continue
            consumer = device_of(consumer_node)
            proxy = consumer is None
            if proxy:
                consumer = ancestor_device(consumer_node)
                if consumer is None or consumer in bound or is_ancestor(consumer, supplier):
                    continue
            assert consumer is not None
            if supplier == consumer:
                continue
            if not proxy and is_ancestor(consumer, supplier):
                continue  # device_is_dependent: a descendant cannot supply its ancestor
            key = (supplier, consumer)
            if key in links and not links[key].sync_state_only:
                continue
            links[key] = FakeLink(supplier, consumer, sync_state_only=proxy, autoprobe=not proxy,
                                  pm_runtime=not proxy)
        # proxies for descendants that are devices themselves but were populated after a
        # supplier that already existed when their ancestor was added
        own = device_of(node)
        if own is None or own in bound:
            continue
        for child in node.walk():
            if child is node or child.path not in devices or not child.is_available():
                continue
            for _, _, target in supplier_nodes(tree, child, strict):
                supplier = supplier_device(target) if _available_path(target, devices) else None
                if supplier is None or supplier == own or is_ancestor(own, supplier) \
                        or order[supplier] > order[own] or (supplier, own) in links:
                    continue
                links[(supplier, own)] = FakeLink(supplier, own, sync_state_only=True,
                                                  autoprobe=False, pm_runtime=False)
    _relax_cycles(links)
    return list(links.values())


def _relax_cycles(links: dict[tuple[str, str], FakeLink]) -> None:
    """Own links on a dependency cycle become SYNC_STATE_ONLY (fw_devlink relaxes them)."""
    edges: dict[str, set[str]] = {}
    for (supplier, consumer), link in links.items():
        if not link.sync_state_only:
            edges.setdefault(consumer, set()).add(supplier)

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            current = stack.pop()
            if current == goal:
                return True
            if current in seen:
                continue
            seen.add(current)
            stack.extend(edges.get(current, ()))
        return False

    for (supplier, consumer), link in links.items():
        if not link.sync_state_only and reaches(supplier, consumer):
            link.sync_state_only, link.autoprobe, link.pm_runtime = True, False, False
