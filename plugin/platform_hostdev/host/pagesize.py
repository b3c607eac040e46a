"""The page size of the kernel a host runs: it decides which VFIO regions can be mmap-ed.

vfio-platform offers VFIO_REGION_INFO_FLAG_MMAP only for a region whose
address and size are page aligned (drivers/vfio/platform/vfio_platform_common.c
vfio_platform_regions_init), and arm64 kernels come with 4, 16 or 64 KiB
pages (CONFIG_ARM64_{4K,16K,64K}_PAGES; RHEL ships a 64 KiB kernel-64k).

The running kernel states its page size to every process in the ELF
auxiliary vector, AT_PAGESZ (fs/binfmt_elf.c create_elf_tables;
include/uapi/linux/auxvec.h), readable as ``/proc/self/auxv``: pairs of
native unsigned longs (type, value), ending with AT_NULL. That file is read
below the host's root, so a fake host states its page size with the same
file; on the live root it is the value ``os.sysconf("SC_PAGE_SIZE")`` gives.
A board analysed offline (``--dtb``) has no running kernel: its page size is
given (``--page-size``) or assumed to be 4 KiB, and the output says which.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from platform_hostdev.errors import HostdevError, HostError
from platform_hostdev.host.fs import HostFs

__all__ = ["PageSize", "AUXV", "AT_PAGESZ", "ARM64_PAGE_SIZES", "read_page_size",
           "parse_page_size", "dtb_page_size", "auxv_bytes"]

AUXV = "/proc/self/auxv"
AT_NULL = 0
AT_PAGESZ = 6
ARM64_PAGE_SIZES = (4096, 16384, 65536)
_AUXV_ENTRY = struct.Struct("@LL")
_SIZE = re.compile(r"^([0-9]+)([KkMm]?)(i?[Bb])?$")


@dataclass(frozen=True)
class PageSize:
    """A page size in bytes and where it comes from."""

    size: int
    source: str       # "running kernel (/proc/self/auxv AT_PAGESZ)", "--page-size", ...
    assumed: bool     # True when nothing stated it (a --dtb without --page-size)

    def describe(self) -> str:
        return f"{_human(self.size)} ({self.source})"


def _human(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} bytes"


def auxv_bytes(page_size: int) -> bytes:
    """An auxiliary vector holding AT_PAGESZ, as /proc/self/auxv shows it (for fake hosts)."""
    return _AUXV_ENTRY.pack(AT_PAGESZ, page_size) + _AUXV_ENTRY.pack(AT_NULL, 0)


def read_page_size(fs: HostFs) -> PageSize:
    """AT_PAGESZ from ``<root>/proc/self/auxv``; a HostError when it cannot be read."""
    path = fs.path(AUXV)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HostError(f"cannot read the kernel's page size from {AUXV}: "
                        f"{exc.strerror or exc}",
                        "mount /proc (a chroot needs it too); a fake host below --root states "
                        "its page size in proc/self/auxv (AT_PAGESZ)") from None
    usable = len(raw) - len(raw) % _AUXV_ENTRY.size
    for kind, value in _AUXV_ENTRY.iter_unpack(raw[:usable]):
        if kind == AT_PAGESZ:
            if value < 4096 or value & (value - 1):
                raise HostError(f"{AUXV} says the page size is {value}, which is not a power "
                                "of two of at least 4096", f"check {path}")
            return PageSize(value, f"running kernel, {AUXV} AT_PAGESZ", False)
        if kind == AT_NULL:
            break
    raise HostError(f"{AUXV} holds no AT_PAGESZ entry ({len(raw)} bytes)",
                    f"check {path}: the kernel writes AT_PAGESZ for every process")


def parse_page_size(text: str) -> int:
    """``4K``/``16K``/``64K`` (or KiB), or a byte count: one of arm64's page sizes."""
    match = _SIZE.match(text.strip())
    value = None
    if match:
        number, unit = int(match.group(1)), match.group(2).upper()
        value = number * {"": 1, "K": 1024, "M": 1024 * 1024}[unit]
    if value not in ARM64_PAGE_SIZES:
        raise HostdevError(f"--page-size {text!r} is not a page size an arm64 kernel uses",
                           "give 4K, 16K or 64K (or 4096, 16384, 65536)",
                           code="invalid-page-size", page_size=text)
    assert value is not None
    return value


def dtb_page_size(given: int | None) -> PageSize:
    """The page size for a board analysed from its DTB: the one given, or 4 KiB assumed."""
    if given is not None:
        return PageSize(given, "given with --page-size", False)
    return PageSize(4096, "assumed for --dtb: Debian's arm64 kernels use 4 KiB pages; "
                          "--page-size 16K or 64K for other kernels", True)
