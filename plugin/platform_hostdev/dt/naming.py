"""Which DT nodes become platform/AMBA devices, and what the kernel names them.

* Names follow of_device_make_bus_id() (drivers/of/platform.c, 6.x): walking
  from the node up, the first node whose reg[0] translates gives
  "<addr>.<name>" (or "<addr>.<ffs(mask)-1>.<name>" with a `mask` property),
  prefixed to the ":"-joined full names of the untranslatable nodes below it;
  a node with no translatable ancestor gets the ":"-joined full names.
* Devices follow of_platform_populate() from the root with the default bus
  table (simple-bus, simple-mfd, isa, arm,amba-bus), plus the children of
  /firmware (of_platform_default_populate_init): a node needs a compatible
  and status okay; "arm,primecell" nodes go to the amba bus.
  Nodes the kernel claims before populate are marked OF_POPULATED and get no
  device: irqchips initialised by of_irq_init() (modelled for the GIC family)
  and clocks initialised by of_clk_init() (fixed-clock, fixed-factor-clock).
  Other IRQCHIP/CLK_OF_DECLARE drivers are not modelled: on a live host sysfs
  is the truth; this prediction serves --dtb and fake hosts.
"""
from __future__ import annotations

from typing import NamedTuple

from platform_hostdev.dt.address import Untranslatable, translate
from platform_hostdev.dt.interrupts import is_gic
from platform_hostdev.dt.tree import DeviceTree, Node

__all__ = ["PredictedDevice", "device_name", "predict_devices", "BUS_COMPATIBLES"]

BUS_COMPATIBLES = frozenset({"simple-bus", "simple-mfd", "isa", "arm,amba-bus"})
_SKIPPED = frozenset({"operating-points-v2"})
# CLK_OF_DECLARE'd clocks of drivers/clk/clk-fixed-rate.c and clk-fixed-factor.c
_EARLY_CLOCKS = frozenset({"fixed-clock", "fixed-factor-clock"})


def _claimed_early(node: Node) -> bool:
    """OF_POPULATED before of_platform_populate(): of_irq_init() / of_clk_init()."""
    if "interrupt-controller" in node.properties and is_gic(node):
        return True
    return any(c in _EARLY_CLOCKS for c in node.compatible)


class PredictedDevice(NamedTuple):
    name: str
    bus: str  # "platform" or "amba"
    dt_path: str
    parent_name: str | None  # the device this one sits under in /sys/devices, if any


def _first_reg_address(node: Node) -> int | None:
    if "reg" not in node.properties or node.parent is None:
        return None
    na = node.parent.address_cells()
    cells = node.cells("reg")
    if na == 0 or len(cells) < na:
        return None
    try:
        return translate(node, cells[:na])
    except Untranslatable:
        return None


def device_name(node: Node) -> str:
    """The kernel's device name for a DT node (of_device_make_bus_id)."""
    suffix: str | None = None
    current: Node | None = node
    while current is not None and current.parent is not None:
        addr = _first_reg_address(current)
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
    """The platform and amba devices of_platform_populate() would create."""
    devices: list[PredictedDevice] = []
    for child in tree.root.children:
        _populate(child, None, devices, strict=True)
    firmware = tree.by_path.get("/firmware")
    if firmware is not None:
        for child in firmware.children:
            _populate(child, None, devices, strict=True)
    # A node is populated once (OF_POPULATED), even if /firmware is also a simple-bus.
    unique: dict[str, PredictedDevice] = {}
    for device in devices:
        unique.setdefault(device.dt_path, device)
    return list(unique.values())


def _populate(node: Node, parent: str | None, out: list[PredictedDevice], strict: bool) -> None:
    compatible = node.compatible
    if strict and not compatible:
        return
    if any(c in _SKIPPED for c in compatible):
        return
    if not node.is_available() or _claimed_early(node):
        return
    if "arm,primecell" in compatible:
        out.append(PredictedDevice(device_name(node), "amba", node.path, parent))
        return
    name = device_name(node)
    out.append(PredictedDevice(name, "platform", node.path, parent))
    if any(c in BUS_COMPATIBLES for c in compatible):
        for child in node.children:
            _populate(child, name, out, strict=True)
