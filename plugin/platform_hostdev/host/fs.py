"""The host as seen through a filesystem root (default ``/``): :class:`HostFs`.

Every host path goes through a HostFs, so a fake host is a directory tree: the
devices under ``<root>/sys/bus/<bus>/devices``, the device tree under
``<root>/sys/firmware/devicetree/base``. How devices are enumerated (pyudev
on a live host, files elsewhere) is in :mod:`sources`. This module stays
light: the hook imports it on every domain start.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from platform_hostdev.errors import HostError

__all__ = [
    "BUSES",
    "HostFs",
    "parse_uevent",
    "is_noiommu",
    "NOIOMMU_GROUP_NAME",
]

BUSES = ("platform", "amba")
# The name vfio gives the group it creates for a device without an IOMMU
# (vfio.enable_unsafe_noiommu_mode=1); its node is /dev/vfio/noiommu-N.
NOIOMMU_GROUP_NAME = "vfio-noiommu"
DT_BASE = "sys/firmware/devicetree/base"


def parse_uevent(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a sysfs uevent file."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = value
    return result


class HostFs:
    """Paths and reads under a filesystem root; every host path goes through here."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def path(self, host_path: str) -> Path:
        """``<root>/<host_path>`` for an absolute host path such as /sys/bus/platform."""
        return self.root / host_path.lstrip("/")

    def host_path(self, real: str | os.PathLike[str]) -> str:
        """The host-absolute form of a path under the root."""
        rel = os.path.relpath(os.path.realpath(real), os.path.realpath(self.root))
        if rel == "." or rel.startswith(".."):
            return "/" if rel == "." else str(real)
        return "/" + rel

    def read_text(self, host_path: str) -> str | None:
        try:
            return self.path(host_path).read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise HostError(f"cannot read {host_path}: {exc.strerror}",
                            "run as root, or check that sysfs is mounted",
                            code="permission-denied" if exc.errno in (errno.EPERM, errno.EACCES)
                            else "host-state",
                            path=host_path) from None

    def link_name(self, host_path: str) -> str | None:
        """The last component of a symlink's target (driver, iommu_group), or None."""
        try:
            return os.path.basename(os.readlink(self.path(host_path)))
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None

    def dt_path_of(self, device_dir: str) -> str | None:
        """The DT path of a device from its of_node link, e.g. /soc/ethernet@ff0e0000."""
        link = self.path(device_dir + "/of_node")
        if not link.is_symlink():
            return None
        target = os.path.realpath(link)
        base = os.path.realpath(self.path("/" + DT_BASE))
        rel = os.path.relpath(target, base)
        if rel.startswith(".."):
            return None
        return "/" if rel == "." else "/" + rel


def is_noiommu(fs: HostFs, group: str | None) -> bool:
    """Whether IOMMU group ``group`` is one of vfio's no-IOMMU groups."""
    if group is None:
        return False
    name = fs.read_text(f"/sys/kernel/iommu_groups/{group}/name")
    return (name or "").strip() == NOIOMMU_GROUP_NAME
