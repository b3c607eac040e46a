"""The platform hostdevs a domain declares, read without the heavy machinery.

Used by the hook (which must stay light), by sync and by the fingerprint.
"""
from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from .guestdt_rules import qemu_builds_node
from .hostdev_xml import PlatformHostdev
from .translate import backward, platform_hostdev_elements

__all__ = ["declared_hostdevs", "device_keys", "needs_guest_dtb"]


def declared_hostdevs(tree: etree._ElementTree) -> list[PlatformHostdev]:
    """The domain's platform hostdevs, in document (= QEMU command-line) order."""
    user = backward(tree)
    return [PlatformHostdev.from_element(e, f"platform hostdev #{i + 1}")
            for i, e in enumerate(platform_hostdev_elements(user.getroot()))]


def device_keys(hostdevs: Sequence[PlatformHostdev]) -> list[str]:
    """What the fingerprint records of the devices: name or path, in order."""
    return [h.name or h.dt_path or "" for h in hostdevs]


def needs_guest_dtb(compatibles: Sequence[Sequence[str]]) -> bool:
    """True unless QEMU builds every device's guest node itself (xgmac/xgbe)."""
    return any(qemu_builds_node(c) is None for c in compatibles)
