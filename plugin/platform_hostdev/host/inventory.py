"""One scan of a host (or a DTB) and constant-time look-ups by name, DT path or alias.

A device spec given by a user is one of:
* a DT path: ``/soc/ethernet@ff0e0000`` (absolute, normalised: no ``.``/``..``,
  no empty components);
* a sysfs device name: ``ff0e0000.ethernet`` (no ``/``, not ``.`` or ``..``);
* a DT alias: ``ethernet0``;
* a nodedev name: ``platform_ff0e0000_ethernet``.
Malformed specs are refused before anything is looked up.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from platform_hostdev.dt.naming import predict_devices
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceNotFoundError, HostdevError
from platform_hostdev.host.boundary import Host, host_at
from platform_hostdev.host.fs import BUSES, DT_BASE, HostFs
from platform_hostdev.host.pagesize import PageSize, dtb_page_size, read_page_size
from platform_hostdev.host.sources import device_source
from platform_hostdev.host.specs import check_spec

__all__ = ["Device", "Inventory", "load_inventory", "check_spec", "nodedev_name"]

def nodedev_name(bus: str, name: str) -> str:
    """libvirt-style node device name: platform_ff0e0000_ethernet."""
    return f"{bus}_" + re.sub(r"[^A-Za-z0-9]", "_", name)


class Device(NamedTuple):
    """A platform or amba device: its identity on the host and in the device tree."""

    name: str
    bus: str
    dt_path: str | None
    compatible: tuple[str, ...]
    driver: str | None = None
    driver_override: str | None = None
    iommu_group: str | None = None
    sysfs_path: str | None = None
    aliases: tuple[str, ...] = ()
    parent: str | None = None
    origin: str = "host"  # "host" (sysfs) or "dtb" (predicted from a DTB)

    @property
    def nodedev_name(self) -> str:
        return nodedev_name(self.bus, self.name)


class Inventory:
    """Every device of a host or DTB, indexed by name, DT path, alias and nodedev name."""

    __slots__ = ("tree", "devices", "by_name", "by_path", "by_alias", "by_nodedev", "page", "fs")

    def __init__(self, tree: DeviceTree, devices: list[Device], page: PageSize | None = None,
                 fs: HostFs | None = None) -> None:
        """``page``: the page size when known up front (a DTB: given or assumed); without
        it, it is read from the host's ``fs`` when first asked for."""
        self.tree = tree
        self.devices = devices
        self.page = page
        self.fs = fs
        self.by_name = {d.name: d for d in self.devices}
        self.by_path = {d.dt_path: d for d in self.devices if d.dt_path}
        self.by_nodedev = {d.nodedev_name: d for d in self.devices}
        self.by_alias: dict[str, Device] = {}
        for alias, path in self.tree.aliases.items():
            device = self.by_path.get(path)
            if device is not None:
                self.by_alias[alias] = device

    def page_size(self) -> PageSize:
        """The page size of the host's running kernel (read once), or the DTB's given one."""
        if self.page is None:
            if self.fs is None:
                raise HostdevError("the page size of this inventory's kernel is not known",
                                   "load the inventory from a host root or give a page size",
                                   code="host-state")
            self.page = read_page_size(self.fs)
        return self.page

    def resolve(self, spec: str) -> Device:
        """The device a spec names; InvalidDeviceSpecError / DeviceNotFoundError otherwise."""
        kind = check_spec(spec)
        if kind == "path":
            device = self.by_path.get(spec)
            if device is None:
                if spec in self.tree.by_path:
                    raise DeviceNotFoundError(
                        spec, f"the DT node {spec} exists but the kernel made no platform or "
                        "amba device of it (no compatible, status not okay, or under a bus "
                        "that is not a simple-bus); pick a device from nodedev-list")
                raise DeviceNotFoundError(spec)
            return device
        for index in (self.by_name, self.by_alias, self.by_nodedev):
            device = index.get(spec)
            if device is not None:
                return device
        raise DeviceNotFoundError(spec)


def load_inventory(host: Host | str | os.PathLike[str] = "/",
                   dtb: str | None = None, page_size: int | None = None) -> Inventory:
    """Scan a host, or predict the devices of a DTB file (``dtb``: the host is not read).

    ``host`` is a :class:`~platform_hostdev.host.boundary.Host` or a filesystem
    root (``host_at(root)``); pyudev enumerates the live host, files any other.
    ``page_size`` (bytes) is the page size of the kernel a DTB's board runs; a
    host's own is read from its running kernel when first asked for
    (:meth:`Inventory.page_size`), so giving one with a host is an error.
    """
    if dtb is None and page_size is not None:
        raise HostdevError("--page-size applies to --dtb only",
                           "a host's page size is read from its running kernel "
                           "(/proc/self/auxv); drop --page-size", code="invalid-page-size")
    if dtb is not None:
        tree = DeviceTree.from_dtb(dtb)
        by_path = tree.by_path
        devices = []
        for p in predict_devices(tree):
            dt_node = by_path[p.dt_path]
            # Device(name, bus, dt_path, compatible, driver, driver_override, iommu_group,
            # sysfs_path, aliases, parent, origin), positionally (cheaper than keywords)
            devices.append(Device(p.name, p.bus, p.dt_path, dt_node.compatible, None, None,
                                  None, None, tuple(tree.aliases_of(dt_node)), p.parent_name,
                                  "dtb"))
        return Inventory(tree, devices, page=dtb_page_size(page_size))
    if not isinstance(host, Host):
        host = host_at(host)
    fs = host.fs
    tree = DeviceTree.from_sysfs(fs.path("/" + DT_BASE))
    source = device_source(fs, host.live)
    devices = []
    for bus in BUSES:
        for host_device in source.devices(bus):
            node = tree.by_path.get(host_device.dt_path or "")
            compatible = tuple(node.compatible) if node else tuple(host_device.compatible)
            devices.append(Device(
                name=host_device.name, bus=bus, dt_path=host_device.dt_path,
                compatible=compatible, driver=host_device.driver,
                driver_override=host_device.driver_override,
                iommu_group=host_device.iommu_group, sysfs_path=host_device.sysfs_path,
                aliases=tuple(tree.aliases_of(node)) if node else (),
                parent=_parent_device(host_device.sysfs_path),
            ))
    return Inventory(tree, devices, fs=fs)


def _parent_device(sysfs_path: str) -> str | None:
    parent = os.path.basename(os.path.dirname(sysfs_path))
    return None if parent in ("platform", "devices", "") else parent
