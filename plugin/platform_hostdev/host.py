"""The host as seen through a filesystem root (default ``/``).

Reads platform and amba devices from ``<root>/sys/bus/<bus>/devices`` and the
device tree from ``<root>/sys/firmware/devicetree/base``. On a live host
(root ``/``) pyudev is the enumeration and uevent source, behind the same
:class:`DeviceSource` interface; libudev cannot be pointed at a fake tree, so
a non-``/`` root is read from the files directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import HostError

__all__ = [
    "BUSES",
    "HostDevice",
    "DeviceSource",
    "SysfsDeviceSource",
    "UdevDeviceSource",
    "Sysfs",
    "device_source",
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


@dataclass(frozen=True)
class HostDevice:
    """A platform or amba device as the host kernel shows it."""

    name: str
    bus: str
    sysfs_path: str                  # /sys/devices/... as the host sees it (root-relative)
    dt_path: str | None
    driver: str | None
    driver_override: str | None
    iommu_group: str | None          # "3", or None when the device has none
    uevent: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def compatible(self) -> list[str]:
        count = int(self.uevent.get("OF_COMPATIBLE_N", "0") or 0)
        return [self.uevent[f"OF_COMPATIBLE_{i}"] for i in range(count)
                if f"OF_COMPATIBLE_{i}" in self.uevent]


class Sysfs:
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
                            "run as root, or check that sysfs is mounted") from None

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


def _read_override(sysfs: Sysfs, device_dir: str) -> str | None:
    value = sysfs.read_text(device_dir + "/driver_override")
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "(null)") else value


class DeviceSource(Protocol):
    """Enumerates the platform/amba devices of a host."""

    def devices(self, bus: str) -> list[HostDevice]: ...


class SysfsDeviceSource:
    """Devices read straight from ``<root>/sys/bus/<bus>/devices`` files."""

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs

    def devices(self, bus: str) -> list[HostDevice]:
        directory = self.sysfs.path(f"/sys/bus/{bus}/devices")
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        return [self.device(bus, name) for name in names]

    def device(self, bus: str, name: str) -> HostDevice:
        link = f"/sys/bus/{bus}/devices/{name}"
        real = self.sysfs.host_path(self.sysfs.path(link))
        uevent = parse_uevent(self.sysfs.read_text(link + "/uevent") or "")
        dt_path = self.sysfs.dt_path_of(link) or uevent.get("OF_FULLNAME")
        return HostDevice(
            name=name,
            bus=bus,
            sysfs_path=real,
            dt_path=dt_path,
            driver=self.sysfs.link_name(link + "/driver"),
            driver_override=_read_override(self.sysfs, link),
            iommu_group=self.sysfs.link_name(link + "/iommu_group"),
            uevent=uevent,
        )


class UdevDeviceSource:
    """Devices from libudev (pyudev) on the live host; sysfs for the links udev lacks."""

    def __init__(self, sysfs: Sysfs) -> None:
        import pyudev  # imported only here: the hook's fast path must not pay for it

        self.sysfs = sysfs
        self.context = pyudev.Context()

    def devices(self, bus: str) -> list[HostDevice]:
        result = []
        for dev in self.context.list_devices(subsystem=bus):
            props = {k: dev.properties[k] for k in dev.properties}
            link = f"/sys/bus/{bus}/devices/{dev.sys_name}"
            result.append(HostDevice(
                name=dev.sys_name,
                bus=bus,
                sysfs_path=dev.sys_path,
                dt_path=props.get("OF_FULLNAME") or self.sysfs.dt_path_of(link),
                driver=dev.driver,
                driver_override=_read_override(self.sysfs, link),
                iommu_group=self.sysfs.link_name(link + "/iommu_group"),
                uevent=props,
            ))
        return sorted(result, key=lambda d: d.name)


def is_noiommu(sysfs: Sysfs, group: str | None) -> bool:
    """Whether IOMMU group ``group`` is one of vfio's no-IOMMU groups."""
    if group is None:
        return False
    name = sysfs.read_text(f"/sys/kernel/iommu_groups/{group}/name")
    return (name or "").strip() == NOIOMMU_GROUP_NAME


def device_source(sysfs: Sysfs) -> DeviceSource:
    """pyudev on the live root, plain files elsewhere (fake hosts, chroots)."""
    if os.path.realpath(sysfs.root) == "/":
        try:
            return UdevDeviceSource(sysfs)
        except ImportError:
            pass
    return SysfsDeviceSource(sysfs)
