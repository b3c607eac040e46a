"""How the platform and amba devices of a host are enumerated.

On the live host (``Host.live``, :mod:`platform_hostdev.host.boundary`) pyudev
is the enumeration source, behind the :class:`DeviceSource` interface;
libudev cannot be pointed at a fake tree, so any other root is read from the
sysfs files directly.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Protocol

from platform_hostdev.host.fs import HostFs, parse_uevent

__all__ = ["HostDevice", "DeviceSource", "SysfsDeviceSource", "UdevDeviceSource",
           "device_source"]


class HostDevice(NamedTuple):
    """A platform or amba device as the host kernel shows it."""

    name: str
    bus: str
    sysfs_path: str                  # /sys/devices/... as the host sees it (root-relative)
    dt_path: str | None
    driver: str | None
    driver_override: str | None
    iommu_group: str | None          # "3", or None when the device has none
    uevent: dict[str, str] = {}

    @property
    def compatible(self) -> list[str]:
        count = int(self.uevent.get("OF_COMPATIBLE_N", "0") or 0)
        return [self.uevent[f"OF_COMPATIBLE_{i}"] for i in range(count)
                if f"OF_COMPATIBLE_{i}" in self.uevent]


def _read_override(fs: HostFs, device_dir: str) -> str | None:
    value = fs.read_text(device_dir + "/driver_override")
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "(null)") else value


class DeviceSource(Protocol):
    """Enumerates the platform/amba devices of a host."""

    def devices(self, bus: str) -> list[HostDevice]: ...


class SysfsDeviceSource:
    """Devices read straight from ``<root>/sys/bus/<bus>/devices`` files."""

    def __init__(self, fs: HostFs) -> None:
        self.fs = fs

    def devices(self, bus: str) -> list[HostDevice]:
        directory = self.fs.path(f"/sys/bus/{bus}/devices")
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        return [self.device(bus, name) for name in names]

    def device(self, bus: str, name: str) -> HostDevice:
        link = f"/sys/bus/{bus}/devices/{name}"
        real = self.fs.host_path(self.fs.path(link))
        uevent = parse_uevent(self.fs.read_text(link + "/uevent") or "")
        dt_path = self.fs.dt_path_of(link) or uevent.get("OF_FULLNAME")
        return HostDevice(
            name=name,
            bus=bus,
            sysfs_path=real,
            dt_path=dt_path,
            driver=self.fs.link_name(link + "/driver"),
            driver_override=_read_override(self.fs, link),
            iommu_group=self.fs.link_name(link + "/iommu_group"),
            uevent=uevent,
        )


class UdevDeviceSource:
    """Devices from libudev (pyudev) on the live host; sysfs for the links udev lacks."""

    def __init__(self, fs: HostFs) -> None:
        import pyudev  # imported only here: the hook's fast path must not pay for it

        self.fs = fs
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
                dt_path=props.get("OF_FULLNAME") or self.fs.dt_path_of(link),
                driver=dev.driver,
                driver_override=_read_override(self.fs, link),
                iommu_group=self.fs.link_name(link + "/iommu_group"),
                uevent=props,
            ))
        return sorted(result, key=lambda d: d.name)


def device_source(fs: HostFs, live: bool) -> DeviceSource:
    """pyudev on the live host (``live``, from the Host), plain files elsewhere (fake
    hosts, chroots), and when pyudev is missing."""
    if live:
        try:
            return UdevDeviceSource(fs)
        except ImportError:
            pass
    return SysfsDeviceSource(fs)
