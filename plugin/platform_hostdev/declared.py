"""The platform hostdevs a domain declares, as models (lxml; used by sync).

The hook reads the same declaration with domainxml.declared_hostdevs, which
needs no lxml; tests hold the two to the same answer.
"""
from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from .hostdev_xml import PlatformHostdev
from .qemu_nodes import needs_guest_dtb
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
