"""What happens to each host-node property in the guest device tree: one table.

Generic policy by property (``drop`` quietly, ``drop-report`` with a note,
``refuse`` the device, ``clock-stub``); per-compatible fixups override it.
Keep device-specific knowledge here, not in the builder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Fixup", "FIXUPS", "property_policy", "fixup_for"]

# Rewritten or meaningless in the guest: never copied.
_ALWAYS_DROP = frozenset({
    "reg", "interrupts", "interrupts-extended", "interrupt-parent", "phandle", "linux,phandle",
    "name", "status",
})
# Host-side plumbing the host keeps managing; the guest node works without it.
_DROP_REPORT = frozenset({
    "iommus", "iommu-map", "msi-parent", "pinctrl-names", "power-domains",
    "power-domain-names", "resets", "reset-names", "assigned-clocks", "assigned-clock-parents",
    "assigned-clock-rates", "interconnects", "interconnect-names", "operating-points-v2",
})
_DROP_REPORT_PATTERNS = (re.compile(r"pinctrl-[0-9]+$"), re.compile(r".+-supply$"))
# Links to other devices the guest does not have: the device cannot work without them.
# A link into the device's own subtree (a MAC's phy-handle to the PHY on its own MDIO
# bus) is not one of them: the builder carries the subtree and renumbers the phandle.
_REFUSE = frozenset({
    "dmas", "phys", "phy-handle", "memory-region", "nvmem-cells", "mboxes", "hwlocks", "sram",
    "io-channels", "pwms", "sound-dai", "thermal-sensors", "remote-endpoint", "pcs-handle",
    "sfp", "i2c-bus", "ddc-i2c-bus",
})
_REFUSE_PATTERNS = (re.compile(r"(.+-)?gpios?$"),)


@dataclass(frozen=True)
class Fixup:
    """Device-specific rules, keyed by the first compatible."""

    drop: frozenset[str] = frozenset()             # extra properties to drop
    allow: frozenset[str] = frozenset()            # links the device can do without
    required_clocks: tuple[str, ...] = ()          # clock-names the guest node must have
    set_properties: dict[str, bytes] = field(default_factory=dict)
    note: str = ""


# QEMU builds the guest node itself for the virt.qemu_nodes.QEMU_BUILDS_NODE devices
# (hw/core/sysbus-fdt.c), but not when the domain boots with our DTB (-dtb
# disables QEMU's nodes), so they are listed here with the rules QEMU's own
# generator follows.

FIXUPS: dict[str, Fixup] = {
    "calxeda,hb-xgmac": Fixup(note="as QEMU's own xgmac node: compatible, reg, interrupts"),
    "amd,xgbe-seattle-v1a": Fixup(
        required_clocks=("dma_clk", "ptp_clk"),
        drop=frozenset({"amd,serdes-blwc", "amd,serdes-cdr-rate", "amd,serdes-pq-skew",
                        "amd,serdes-tx-amp", "amd,serdes-dfe-tap-config",
                        "amd,serdes-dfe-tap-enable"}),
        note="as QEMU's own xgbe node: fixed clocks dma_clk and ptp_clk at the host rates"),
}


def property_policy(prop: str) -> str:
    """"copy", "drop", "drop-report", "refuse" or "clock-stub" for a property."""
    if prop in _ALWAYS_DROP:
        return "drop"
    if prop == "clocks":
        return "clock-stub"
    if prop in _DROP_REPORT or any(p.match(prop) for p in _DROP_REPORT_PATTERNS):
        return "drop-report"
    if prop in _REFUSE or (any(p.match(prop) for p in _REFUSE_PATTERNS)
                           and not prop.startswith("#") and "nr-gpio" not in prop
                           and prop != "ngpios"):
        return "refuse"
    return "copy"


def fixup_for(compatible: list[str] | tuple[str, ...]) -> Fixup:
    return FIXUPS.get(compatible[0], Fixup()) if compatible else Fixup()
