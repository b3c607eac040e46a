"""Which guest DT nodes QEMU builds itself, and so whether a domain needs our guest DTB.

A table and two functions, kept apart from guestdt.rules so the hook can
decide without loading the guest-DT machinery.
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["QEMU_BUILDS_NODE", "qemu_builds_node", "needs_guest_dtb"]

# hw/core/sysbus-fdt.c: the only vfio-platform devices QEMU writes a guest node for
QEMU_BUILDS_NODE = {"calxeda,hb-xgmac": "vfio-calxeda-xgmac",
                    "amd,xgbe-seattle-v1a": "vfio-amd-xgbe"}


def qemu_builds_node(compatible: Sequence[str]) -> str | None:
    """The QEMU device that builds its own guest node for a host device, if any.

    hw/core/sysbus-fdt.c matches every compatible string of the host node.
    """
    return next((QEMU_BUILDS_NODE[c] for c in compatible if c in QEMU_BUILDS_NODE), None)


def needs_guest_dtb(compatibles: Sequence[Sequence[str]]) -> bool:
    """True unless QEMU builds every device's guest node itself (xgmac/xgbe)."""
    return any(qemu_builds_node(c) is None for c in compatibles)
