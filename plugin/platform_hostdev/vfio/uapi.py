"""The flag words of include/uapi/linux/vfio.h, decoded to names.

Kept apart from the ioctl client (:mod:`platform_hostdev.vfio.client`) so
that what only needs the tables (the DT correlation, ``show``) does not load
the client.
"""
from __future__ import annotations

from collections.abc import Mapping

__all__ = ["FLAGS", "flag_names", "flag_bit"]

# Flag words, bit -> name, as in include/uapi/linux/vfio.h.
FLAGS: Mapping[str, Mapping[int, str]] = {
    "device": {0x1: "RESET", 0x2: "PCI", 0x4: "PLATFORM", 0x8: "AMBA", 0x10: "CCW",
               0x20: "AP", 0x40: "FSL_MC", 0x80: "CAPS", 0x100: "CDX"},
    "region": {0x1: "READ", 0x2: "WRITE", 0x4: "MMAP", 0x8: "CAPS"},
    "irq": {0x1: "EVENTFD", 0x2: "MASKABLE", 0x4: "AUTOMASKED", 0x8: "NORESIZE"},
    "group": {0x1: "VIABLE", 0x2: "CONTAINER_SET"},
}


def flag_names(kind: str, value: int) -> list[str]:
    """Names of the set bits of a flag word (``kind`` keys :data:`FLAGS`); unknown bits in hex."""
    table = FLAGS[kind]
    names = [name for bit, name in table.items() if value & bit]
    rest = value & ~sum(table)
    if rest:
        names.append(hex(rest))
    return names


def flag_bit(kind: str, name: str) -> int:
    """The bit of a flag name (``flag_bit("region", "MMAP") == 4``)."""
    for bit, known in FLAGS[kind].items():
        if known == name:
            return bit
    raise KeyError(f"no {kind} flag {name}")
