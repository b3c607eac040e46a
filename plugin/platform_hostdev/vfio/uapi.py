"""The kernel's VFIO user-space ABI as tables: ioctls, flag words, IOMMU models, driver names.

Everything here is a constant of include/uapi/linux/vfio.h (or of the vfio
drivers' registration): every ioctl number and argument layout is declared
once, in :data:`IOCTLS`; every flag word is decoded to names through
:data:`FLAGS`. The correlation (what the device tree predicts) and the
client (what the kernel answers) both read these tables, so the correlation
needs no ioctl client. Light on purpose (no dataclasses): the libvirt hook
reads :data:`VFIO_DRIVERS` on every domain start.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "VFIO_TYPE", "VFIO_BASE", "VFIO_API_VERSION",
    "Ioctl", "IOCTLS", "FLAGS", "IOMMU_TYPES", "VFIO_DRIVERS", "VFIO_MODULES",
    "IOMMUFD_CMD_BASE",
    "flag_names", "flag_bit",
]

VFIO_TYPE = ord(";")   # _IO(VFIO_TYPE, VFIO_BASE + n)
VFIO_BASE = 100
VFIO_API_VERSION = 0

# The vfio driver of each bus (drivers/vfio/platform/vfio_platform.c and
# vfio_amba.c register these names) and the module that provides it.
VFIO_DRIVERS: Mapping[str, str] = {"platform": "vfio-platform", "amba": "vfio-amba"}
VFIO_MODULES: Mapping[str, str] = {"platform": "vfio-platform", "amba": "vfio-amba"}


class Ioctl(NamedTuple):
    """One VFIO ioctl: its number and how its argument is passed.

    ``argument`` is "none" (no argument), "int" (an integer by value),
    "fd-pointer" (a pointer to an int file descriptor), "string" (a
    NUL-terminated name) or "struct" (``layout`` in :mod:`struct` syntax, the
    first field ``argsz``). ``min_fields`` is how many leading fields older
    kernel headers already had (a shorter struct is still accepted).
    """

    name: str
    n: int
    argument: str
    layout: str = ""
    fields: tuple[str, ...] = ()
    min_fields: int = 0
    base: int = VFIO_BASE

    @property
    def number(self) -> int:
        """The request number: _IO(';', base + n) (VFIO and iommufd do not encode the size)."""
        return (VFIO_TYPE << 8) | (self.base + self.n)

    @property
    def size(self) -> int:
        """The argument struct's size in bytes."""
        return struct.calcsize(self.layout)

    def pack(self, **values: int) -> bytearray:
        """The argument buffer, ``argsz`` (for structs) set to the full size unless given."""
        size_field = "argsz" if self.base == VFIO_BASE else "size"  # iommufd.h: "size"
        if size_field in self.fields:
            values.setdefault(size_field, self.size)
        unknown = set(values) - set(self.fields)
        if unknown:
            raise TypeError(f"{self.name} has no field {sorted(unknown)}")
        return bytearray(struct.pack(self.layout, *(values.get(f, 0) for f in self.fields)))

    def unpack(self, buffer: bytes | bytearray) -> dict[str, int]:
        """Fields decoded from a buffer; a shorter, older layout leaves the rest 0."""
        result = dict.fromkeys(self.fields, 0)
        order = self.layout[0]
        end = 0
        for index, (name, code) in enumerate(zip(self.fields, self.layout[1:], strict=True)):
            width = struct.calcsize(order + code)
            if end + width > len(buffer):
                if index < (self.min_fields or len(self.fields)):
                    raise ValueError(f"{self.name}: {len(buffer)} bytes, "
                                     f"field {name} needs {end + width}")
                break
            (result[name],) = struct.unpack_from(order + code, buffer, end)
            end += width
        return result


def _table(*ioctls: Ioctl) -> dict[str, Ioctl]:
    return {ioctl.name: ioctl for ioctl in ioctls}


# include/uapi/linux/vfio.h; all _IO(';', 100 + n), the size is not encoded.
IOCTLS: Mapping[str, Ioctl] = _table(
    Ioctl("GET_API_VERSION", 0, "none"),
    Ioctl("CHECK_EXTENSION", 1, "int"),
    Ioctl("SET_IOMMU", 2, "int"),
    Ioctl("GROUP_GET_STATUS", 3, "struct", "=II", ("argsz", "flags")),
    Ioctl("GROUP_SET_CONTAINER", 4, "fd-pointer", "=i", ("fd",)),
    Ioctl("GROUP_UNSET_CONTAINER", 5, "none"),
    Ioctl("GROUP_GET_DEVICE_FD", 6, "string"),
    # 24 bytes since the pad field (v5.x); 20 with older headers (cap_offset, v4.x).
    Ioctl("DEVICE_GET_INFO", 7, "struct", "=IIIIII",
          ("argsz", "flags", "num_regions", "num_irqs", "cap_offset", "pad"), min_fields=4),
    Ioctl("DEVICE_GET_REGION_INFO", 8, "struct", "=IIIIQQ",
          ("argsz", "flags", "index", "cap_offset", "size", "offset")),
    Ioctl("DEVICE_GET_IRQ_INFO", 9, "struct", "=IIII", ("argsz", "flags", "index", "count")),
    # The device cdev (Linux 6.6+, CONFIG_VFIO_DEVICE_CDEV): struct vfio_device_bind_iommufd
    # as of 6.12 (6.17 appends token_uuid_ptr behind a flag), vfio_device_attach_iommufd_pt
    # without the later pasid.
    Ioctl("DEVICE_BIND_IOMMUFD", 18, "struct", "=IIiI",
          ("argsz", "flags", "iommufd", "out_devid")),
    Ioctl("DEVICE_ATTACH_IOMMUFD_PT", 19, "struct", "=III", ("argsz", "flags", "pt_id")),
    # include/uapi/linux/iommufd.h: _IO(IOMMUFD_TYPE = ';', IOMMUFD_CMD_BASE 0x80 + n),
    # on the /dev/iommu fd; the first field is "size".
    Ioctl("IOMMU_DESTROY", 0, "struct", "=II", ("size", "id"), base=0x80),
    Ioctl("IOMMU_IOAS_ALLOC", 1, "struct", "=III", ("size", "flags", "out_ioas_id"),
          base=0x80),
)
IOMMUFD_CMD_BASE = 0x80

# Flag words, bit -> name, as in include/uapi/linux/vfio.h.
FLAGS: Mapping[str, Mapping[int, str]] = {
    "device": {0x1: "RESET", 0x2: "PCI", 0x4: "PLATFORM", 0x8: "AMBA", 0x10: "CCW",
               0x20: "AP", 0x40: "FSL_MC", 0x80: "CAPS", 0x100: "CDX"},
    "region": {0x1: "READ", 0x2: "WRITE", 0x4: "MMAP", 0x8: "CAPS"},
    "irq": {0x1: "EVENTFD", 0x2: "MASKABLE", 0x4: "AUTOMASKED", 0x8: "NORESIZE"},
    "group": {0x1: "VIABLE", 0x2: "CONTAINER_SET"},
}

# SET_IOMMU / CHECK_EXTENSION arguments, in order of preference for real groups.
IOMMU_TYPES: Mapping[str, int] = {"TYPE1v2": 3, "TYPE1": 1, "NOIOMMU": 8}


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
