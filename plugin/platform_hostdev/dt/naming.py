"""Which DT nodes become platform/AMBA devices, and what the kernel names them.

* Names follow of_device_make_bus_id() (drivers/of/platform.c, 6.x): walking
  from the node up, the first node whose reg[0] translates gives
  "<addr>.<name>" (or "<addr>.<ffs(mask)-1>.<name>" with a `mask` property),
  prefixed to the ":"-joined full names of the untranslatable nodes below it;
  a node with no translatable ancestor gets the ":"-joined full names.
* Devices follow of_platform_default_populate_init() (drivers/of/platform.c,
  6.12), in its order, each node populated once (OF_POPULATED):
  1. every node, anywhere, compatible with one of ``reserved_mem_matches``
     (phram, qcom,rmtfs-mem, qcom,cmd-db, qcom,smem, ramoops, nvmem-rmem,
     google,open-dice): one platform device each (of_platform_device_create);
  2. the children of /firmware (of_platform_populate with no bus table: a
     child needs a compatible; its own children are not populated);
  3. /chosen's first child compatible with simple-framebuffer
     (of_get_compatible_child), when available;
  4. of_platform_default_populate() from the root with the default bus table
     (simple-bus, simple-mfd, isa, arm,amba-bus).
  A node needs status okay; "arm,primecell" nodes populated as buses go to
  the amba bus.
  Nodes the kernel claims before populate are marked OF_POPULATED and get no
  device: irqchips initialised by of_irq_init() (modelled for the GIC family and the
  BCM2835/6 armctrl and BCM2836 local controllers)
  and clocks initialised by of_clk_init() (fixed-clock, fixed-factor-clock).
  Other IRQCHIP/CLK_OF_DECLARE drivers are not modelled: on a live host sysfs
  is the truth; this prediction serves --dtb and fake hosts.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from platform_hostdev.dt.address import first_reg_address
from platform_hostdev.dt.interrupts import is_gic
from platform_hostdev.dt.tree import DeviceTree, Node

__all__ = ["PredictedDevice", "device_name", "predict_devices", "BUS_COMPATIBLES",
           "RESERVED_MEM_MATCHES"]

BUS_COMPATIBLES = frozenset({"simple-bus", "simple-mfd", "isa", "arm,amba-bus"})
# drivers/of/platform.c reserved_mem_matches (6.12)
RESERVED_MEM_MATCHES = frozenset({"phram", "qcom,rmtfs-mem", "qcom,cmd-db", "qcom,smem",
                                  "ramoops", "nvmem-rmem", "google,open-dice"})
# one of them as a whole entry of a raw compatible string list (a cheap first look)
_RESERVED_RAW = re.compile(b"(?:^|\0)(?:" + b"|".join(
    re.escape(c.encode()) for c in sorted(RESERVED_MEM_MATCHES)) + b")\0")
_SKIPPED = frozenset({"operating-points-v2"})
# CLK_OF_DECLARE'd clocks of drivers/clk/clk-fixed-rate.c and clk-fixed-factor.c
_EARLY_CLOCKS = frozenset({"fixed-clock", "fixed-factor-clock"})
# IRQCHIP_DECLARE'd controllers besides the GIC family: drivers/irqchip/irq-bcm2835.c
# (bcm2835_armctrl_ic, bcm2836_armctrl_ic) and irq-bcm2836.c (bcm2836_arm_irqchip_l1_intc)
_EARLY_IRQCHIPS = frozenset({"brcm,bcm2835-armctrl-ic", "brcm,bcm2836-armctrl-ic",
                             "brcm,bcm2836-l1-intc"})


def _claimed_early(node: Node) -> bool:
    """OF_POPULATED before of_platform_populate(): of_irq_init() (drivers/of/irq.c sets
    OF_POPULATED on every controller it initialises) / of_clk_init()."""
    if "interrupt-controller" in node.properties and (
            is_gic(node) or not _EARLY_IRQCHIPS.isdisjoint(node.compatible)):
        return True
    return not _EARLY_CLOCKS.isdisjoint(node.compatible)


class PredictedDevice(NamedTuple):
    name: str
    bus: str  # "platform" or "amba"
    dt_path: str
    parent_name: str | None  # the device this one sits under in /sys/devices, if any


def device_name(node: Node) -> str:
    """The kernel's device name for a DT node (of_device_make_bus_id)."""
    suffix: str | None = None
    current: Node | None = node
    while current is not None and current.parent is not None:
        addr = first_reg_address(current)
        if addr is not None:
            addr &= (1 << 64) - 1
            if "mask" in current.properties:
                mask = current.u32("mask")
                bit = (mask & -mask).bit_length() - 1  # ffs(mask) - 1
                head = f"{addr:x}.{bit:x}.{current.basename}"
            else:
                head = f"{addr:x}.{current.basename}"
            return head if suffix is None else f"{head}:{suffix}"
        suffix = current.name if suffix is None else f"{current.name}:{suffix}"
        current = current.parent
    return suffix if suffix is not None else ""


def predict_devices(tree: DeviceTree) -> list[PredictedDevice]:
    """The platform and amba devices of_platform_default_populate_init() would create."""
    out = _Populate()
    for node in tree:  # for_each_matching_node(node, reserved_mem_matches)
        raw = node.properties.get("compatible")
        if raw and _RESERVED_RAW.search(raw) and \
                not RESERVED_MEM_MATCHES.isdisjoint(node.compatible):
            out.create(node, None)
    firmware = tree.by_path.get("/firmware")
    if firmware is not None:
        for child in firmware.children:
            out.bus_create(child, None, recurse=False)
    chosen = tree.by_path.get("/chosen")
    if chosen is not None:
        framebuffer = next((c for c in chosen.children
                            if "simple-framebuffer" in c.compatible), None)
        if framebuffer is not None:
            out.create(framebuffer, None)
    for child in tree.root.children:
        out.bus_create(child, None)
    return out.devices


class _Populate:
    """The devices made so far; a node is populated once (the kernel's OF_POPULATED)."""

    def __init__(self) -> None:
        self.devices: list[PredictedDevice] = []
        self.populated: set[str] = set()

    def create(self, node: Node, parent: str | None, bus: str = "platform") -> str | None:
        """of_platform_device_create_pdata(): None if unavailable or already populated."""
        if node.path in self.populated or not node.is_available() or _claimed_early(node):
            return None
        self.populated.add(node.path)
        name = device_name(node)
        self.devices.append(PredictedDevice(name, bus, node.path, parent))
        return name

    def bus_create(self, node: Node, parent: str | None, recurse: bool = True) -> None:
        """of_platform_bus_create() (strict): this node, and its children if it is a bus."""
        compatible = node.compatible
        if not compatible or not _SKIPPED.isdisjoint(compatible):
            return
        if "arm,primecell" in compatible:
            self.create(node, parent, "amba")
            return
        name = self.create(node, parent)
        if name is None or not recurse or BUS_COMPATIBLES.isdisjoint(compatible):
            return
        for child in node.children:
            self.bus_create(child, name)
