"""Fake hosts: a sysfs tree under a temporary root, laid out as the kernel does it.

:func:`build_fake_host` turns a DTB into the files a DT-booted arm64 host
shows (Linux 6.x):

* ``/sys/firmware/devicetree/base``: one directory per node, one file per
  property with the raw bytes, plus the ``name`` property the kernel adds to
  every node when unflattening (drivers/of/fdt.c populate_properties());
* ``/sys/devices/platform/[parent devices/]NAME`` for every device
  :func:`platform_hostdev.dt.naming.predict_devices` predicts, with ``uevent``
  (DRIVER=, OF_NAME, OF_FULLNAME, OF_TYPE, OF_COMPATIBLE_i/_N, OF_ALIAS_i,
  then the bus's MODALIAS), ``modalias``, ``driver_override`` reading
  ``(null)``, and relative symlinks ``of_node``, ``subsystem``, ``driver``,
  ``iommu_group``;
* ``/sys/bus/{platform,amba}/``: ``devices/NAME`` links, ``drivers/DRV/``
  with ``bind``, ``unbind`` and ``NAME`` links, ``drivers_probe``,
  ``drivers_autoprobe``;
* ``/sys/kernel/iommu_groups/N/devices/NAME`` when an IOMMU is modelled;
* ``/sys/module/vfio/parameters/enable_unsafe_noiommu_mode`` and the
  vfio-platform / vfio-amba driver directories when vfio is "loaded";
* device links as fw_devlink makes them from the DT (tests/support/
  fakedevlinks.py): ``/sys/devices/virtual/devlink/<sbus>:<s>--<cbus>:<c>/``
  with ``status`` (following the bound state of both ends: dormant,
  available, active; "not tracked" when stateless), ``sync_state_only``,
  ``auto_remove_on``, ``runtime_pm`` and ``supplier``/``consumer`` links, the
  ``/sys/class/devlink`` links to them, and ``consumer:<bus>:<name>`` /
  ``supplier:<bus>:<name>`` in the two devices' directories
  (drivers/base/core.c devlink_add_symlinks);
* a driver in ``suppress_bind_attrs`` has no ``bind``/``unbind`` files
  (drivers/base/bus.c add_bind_files); one in ``modules`` has a ``module`` link
  to /sys/module/<module> (drivers/base/module.c module_add_driver).

All layout knowledge sits in :class:`SysfsLayout`; :class:`FakeHost` keeps
the links consistent when a device is bound or unbound, which is what a fake
kernel (tests/support/fakekernel.py) builds on.
"""
from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from platform_hostdev.dt.fdt import RawNode
from platform_hostdev.dt.naming import PredictedDevice, predict_devices
from platform_hostdev.dt.tree import DeviceTree, Node
from platform_hostdev.host.fs import BUSES, HostFs
from platform_hostdev.host.pagesize import AUXV, auxv_bytes
from platform_hostdev.vfio.uapi import VFIO_DRIVERS  # the vfio driver of each bus

from tests.support.fakedevlinks import FakeLink, fw_devlinks

__all__ = [
    "FakeHost",
    "SysfsLayout",
    "IommuSpec",
    "build_fake_host",
    "write_devicetree",
    "tree_state",
]

IommuSpec = Literal["all", "none"] | Collection[str] | Mapping[str, int]
_PRIMECELL = re.compile(r"arm,pl(\d{3})$")


@dataclass(frozen=True)
class SysfsLayout:
    """Where Linux puts each sysfs object, as host-absolute paths (``/sys/...``)."""

    DT_BASE = "/sys/firmware/devicetree/base"
    DEVICES = "/sys/devices/platform"
    IOMMU_GROUPS = "/sys/kernel/iommu_groups"

    def dt_node(self, dt_path: str) -> str:
        return self.DT_BASE if dt_path == "/" else self.DT_BASE + dt_path

    def device(self, chain: list[str]) -> str:
        """A device below /sys/devices/platform, given its parent devices' names and its own."""
        return "/".join([self.DEVICES, *chain])

    def bus(self, bus: str) -> str:
        return f"/sys/bus/{bus}"

    def bus_device(self, bus: str, name: str) -> str:
        return f"/sys/bus/{bus}/devices/{name}"

    def driver(self, bus: str, driver: str) -> str:
        return f"/sys/bus/{bus}/drivers/{driver}"

    def iommu_group(self, group: int) -> str:
        return f"{self.IOMMU_GROUPS}/{group}"

    def module_parameter(self, module: str, parameter: str) -> str:
        return f"/sys/module/{module}/parameters/{parameter}"


@dataclass
class FakeHost:
    """A fake host's root, its device tree and its devices; moves links like the kernel."""

    root: Path
    tree: DeviceTree
    fs: HostFs
    layout: SysfsLayout
    devices: dict[str, Path] = field(default_factory=dict)      # name -> device dir
    host_paths: dict[str, str] = field(default_factory=dict)    # name -> /sys/devices/...
    buses: dict[str, str] = field(default_factory=dict)         # name -> "platform"/"amba"
    dt_paths: dict[str, str] = field(default_factory=dict)      # name -> DT path
    iommu_groups: dict[int, list[str]] = field(default_factory=dict)
    skipped: list[PredictedDevice] = field(default_factory=list)  # duplicate names
    links: list[FakeLink] = field(default_factory=list)        # device links
    suppress_bind_attrs: set[str] = field(default_factory=set)  # drivers without bind/unbind
    modules: dict[str, str] = field(default_factory=dict)       # driver -> loadable module

    # -- look-ups ---------------------------------------------------------------
    def path(self, host_path: str) -> Path:
        """The real path under the root of a host path such as /sys/bus/platform."""
        return self.fs.path(host_path)

    def device_dir(self, name: str) -> Path:
        return self.devices[name]

    def driver_dir(self, bus: str, driver: str) -> Path:
        return self.path(self.layout.driver(bus, driver))

    def driver_of(self, name: str) -> str | None:
        link = self.devices[name] / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def iommu_group_of(self, name: str) -> int | None:
        for group, members in self.iommu_groups.items():
            if name in members:
                return group
        return None

    def driver_override(self, name: str) -> str | None:
        value = (self.devices[name] / "driver_override").read_text().strip()
        return None if value == "(null)" else value

    # -- changes a kernel would make ----------------------------------------------
    def add_driver(self, bus: str, driver: str) -> Path:
        """Create /sys/bus/BUS/drivers/DRIVER (bind, unbind, uevent; no bind/unbind when the
        driver suppresses them; a ``module`` link for a loadable module) if missing."""
        directory = self.driver_dir(bus, driver)
        if not directory.is_dir():
            directory.mkdir(parents=True)
            attrs = ("uevent",) if driver in self.suppress_bind_attrs else \
                ("bind", "unbind", "uevent")
            for attr in attrs:
                _write(directory / attr, b"", 0o200)
            module = self.modules.get(driver)
            if module is not None:
                module_dir = self.path(f"/sys/module/{module}")
                (module_dir / "drivers").mkdir(parents=True, exist_ok=True)
                _link(directory / "module", module_dir)
                _link(module_dir / "drivers" / f"{bus}:{driver}", directory)
        return directory

    def bind(self, name: str, driver: str) -> None:
        """Bind ``name`` to ``driver`` (unbinding it first): both links and uevent DRIVER=;
        its SYNC_STATE_ONLY supplier links go (device_links_driver_bound)."""
        self.unbind(name)
        bus = self.buses[name]
        directory = self.add_driver(bus, driver)
        _link(directory / name, self.devices[name])
        _link(self.devices[name] / "driver", directory)
        self._write_uevent(name)
        for link in [lk for lk in self.links if lk.consumer == name and lk.sync_state_only]:
            self.remove_link(link)
        self.refresh_links(name)

    def unbind(self, name: str) -> None:
        """Remove the device's driver link and the driver's link to it (no-op if unbound)."""
        driver = self.driver_of(name)
        if driver is None:
            return
        (self.driver_dir(self.buses[name], driver) / name).unlink(missing_ok=True)
        (self.devices[name] / "driver").unlink()
        self._write_uevent(name)
        self.refresh_links(name)

    # -- device links ------------------------------------------------------------------
    def link_name(self, link: FakeLink) -> str:
        """dev_set_name(&link->link_dev, "%s:%s--%s:%s", ...) of device_link_add()."""
        return (f"{self.buses[link.supplier]}:{link.supplier}--"
                f"{self.buses[link.consumer]}:{link.consumer}")

    def link_status(self, link: FakeLink) -> str:
        """The settled status: the bound state of both ends decides (drivers/base/core.c)."""
        if link.stateless:
            return "not tracked"
        if self.driver_of(link.supplier) is None:
            return "dormant"
        return "active" if self.driver_of(link.consumer) is not None else "available"

    def add_link(self, link: FakeLink) -> None:
        """Create a link's device, its class link and both ends' symlinks."""
        self.links.append(link)
        name = self.link_name(link)
        directory = self.path(f"/sys/devices/virtual/devlink/{name}")
        directory.mkdir(parents=True)
        for attr, value in (("sync_state_only", "1" if link.sync_state_only else "0"),
                            ("auto_remove_on", link.auto_remove_on),
                            ("runtime_pm", "1" if link.pm_runtime else "0")):
            _write(directory / attr, f"{value}\n".encode(), 0o444)
        _link(directory / "supplier", self.devices[link.supplier])
        _link(directory / "consumer", self.devices[link.consumer])
        _link(self.path(f"/sys/class/devlink/{name}"), directory)
        _link(self.devices[link.supplier] / f"consumer:{self.buses[link.consumer]}:"
              f"{link.consumer}", directory)
        _link(self.devices[link.consumer] / f"supplier:{self.buses[link.supplier]}:"
              f"{link.supplier}", directory)
        self._write_status(link)

    def remove_link(self, link: FakeLink) -> None:
        """device_link_drop_managed(): the link's device and every symlink to it go."""
        name = self.link_name(link)
        self.links.remove(link)
        (self.devices[link.supplier] / f"consumer:{self.buses[link.consumer]}:"
         f"{link.consumer}").unlink(missing_ok=True)
        (self.devices[link.consumer] / f"supplier:{self.buses[link.supplier]}:"
         f"{link.supplier}").unlink(missing_ok=True)
        self.path(f"/sys/class/devlink/{name}").unlink(missing_ok=True)
        directory = self.path(f"/sys/devices/virtual/devlink/{name}")
        for entry in directory.iterdir():
            entry.unlink()
        directory.rmdir()

    def refresh_links(self, name: str) -> None:
        """Rewrite the status of every link with ``name`` at one end (only if it changed)."""
        for link in self.links:
            if name in (link.supplier, link.consumer):
                self._write_status(link)

    def _write_status(self, link: FakeLink) -> None:
        path = self.path(f"/sys/devices/virtual/devlink/{self.link_name(link)}/status")
        text = self.link_status(link) + "\n"
        if not path.is_file() or path.read_text() != text:
            if path.is_file():
                os.chmod(path, 0o644)
            _write(path, text.encode(), 0o444)

    def set_driver_override(self, name: str, value: str | None) -> None:
        """What a write to driver_override leaves behind ("(null)" once cleared)."""
        text = "(null)" if not value or not value.strip() else value.strip()
        (self.devices[name] / "driver_override").write_text(text + "\n")

    def add_to_iommu_group(self, name: str, group: int) -> None:
        """Put a device in IOMMU group ``group`` (created if new)."""
        group_dir = self.path(self.layout.iommu_group(group))
        if not group_dir.is_dir():
            (group_dir / "devices").mkdir(parents=True)
            _write(group_dir / "type", b"DMA\n", 0o644)
            _write(group_dir / "reserved_regions", b"", 0o444)
        _link(group_dir / "devices" / name, self.devices[name])
        _link(self.devices[name] / "iommu_group", group_dir)
        self.iommu_groups.setdefault(group, []).append(name)

    def load_vfio(self, noiommu: bool = False) -> None:
        """Model ``modprobe vfio[ enable_unsafe_noiommu_mode=1] vfio-platform vfio-amba``."""
        _write(self.path(self.layout.module_parameter("vfio", "enable_unsafe_noiommu_mode")),
               b"Y\n" if noiommu else b"N\n", 0o644)
        for bus, driver in VFIO_DRIVERS.items():
            self.add_driver(bus, driver)

    def _write_uevent(self, name: str) -> None:
        node = self.tree.by_path[self.dt_paths[name]]
        text = _uevent(self.tree, node, self.buses[name], self.driver_of(name))
        _write(self.devices[name] / "uevent", text.encode(), 0o644)


def build_fake_host(root: Path, dtb: Path | None = None, *, tree: DeviceTree | None = None,
                    drivers: Mapping[str, str] | None = None, iommu: IommuSpec = "none",
                    vfio_loaded: bool = False, noiommu: bool = False,
                    suppress_bind_attrs: Collection[str] = (),
                    modules: Mapping[str, str] | None = None, devlinks: bool = True,
                    fw_devlink_strict: bool = False, page_size: int = 4096) -> FakeHost:
    """Write a host's sysfs for ``dtb`` (or an already parsed ``tree``) below ``root``.

    ``page_size`` is the running kernel's, stated as Linux does in
    ``/proc/self/auxv`` (AT_PAGESZ; see platform_hostdev.host.pagesize).

    ``drivers`` maps a compatible to the driver that binds it (the first of a
    device's compatibles found wins, as the kernel's match order does).
    ``iommu``: "none", "all" (one group per device, numbered from 0 in device
    order), a collection of device names (one group each) or a mapping
    name -> group number (shared groups). ``suppress_bind_attrs``: drivers
    without bind/unbind files; ``modules``: driver -> the loadable module that
    registers it (others are built in). ``devlinks``: the device links
    fw_devlink makes (``fw_devlink_strict``: fw_devlink.strict=1, which adds
    the optional iommus and dmas links).
    """
    if tree is None:
        if dtb is None:
            raise ValueError("give a dtb or a tree")
        tree = DeviceTree.from_dtb(dtb)
    layout = SysfsLayout()
    host = FakeHost(Path(root), tree, HostFs(root), layout,
                    suppress_bind_attrs=set(suppress_bind_attrs), modules=dict(modules or {}))
    write_devicetree(host.path(layout.DT_BASE), tree)
    for bus in BUSES:
        base = host.path(layout.bus(bus))
        (base / "devices").mkdir(parents=True, exist_ok=True)
        (base / "drivers").mkdir(exist_ok=True)
        _write(base / "drivers_probe", b"", 0o200)
        _write(base / "drivers_autoprobe", b"1\n", 0o644)
        _write(base / "uevent", b"", 0o200)
    host.path(layout.DEVICES).mkdir(parents=True, exist_ok=True)
    _write(host.path(layout.DEVICES) / "uevent", b"", 0o644)
    host.path(AUXV).parent.mkdir(parents=True, exist_ok=True)
    _write(host.path(AUXV), auxv_bytes(page_size), 0o444)

    chains: dict[str, list[str]] = {}  # DT path of a created device -> its /sys/devices chain
    for predicted in predict_devices(tree):
        node = tree.by_path[predicted.dt_path]
        parent_chain: list[str] = []
        if predicted.parent_name is not None:
            assert node.parent is not None
            if node.parent.path not in chains:  # the parent failed to register
                host.skipped.append(predicted)
                continue
            parent_chain = chains[node.parent.path]
        if predicted.name in host.devices:  # device_add(): -EEXIST, no device
            host.skipped.append(predicted)
            continue
        chain = parent_chain + [predicted.name]
        chains[predicted.dt_path] = chain
        _add_device(host, predicted, node, chain)

    assignments = _assignments(host, drivers or {})
    for name, driver in assignments.items():
        host.bind(name, driver)
    for name, group in _groups(host, iommu).items():
        host.add_to_iommu_group(name, group)
    if vfio_loaded:
        host.load_vfio(noiommu)
    if devlinks:
        order = {name: index for index, name in enumerate(host.devices)}
        paths = {path: name for name, path in host.dt_paths.items()}
        for link in fw_devlinks(tree, paths, order, set(assignments), fw_devlink_strict):
            host.add_link(link)
    return host


def _add_device(host: FakeHost, predicted: PredictedDevice, node: Node, chain: list[str]) -> None:
    layout, name, bus = host.layout, predicted.name, predicted.bus
    host_path = layout.device(chain)
    directory = host.path(host_path)
    directory.mkdir(parents=True)
    host.devices[name] = directory
    host.host_paths[name] = host_path
    host.buses[name] = bus
    host.dt_paths[name] = node.path
    _write(directory / "driver_override", b"(null)\n", 0o644)
    _write(directory / "modalias", (_modalias(node, bus) + "\n").encode(), 0o444)
    _link(directory / "of_node", host.path(layout.dt_node(node.path)))
    _link(directory / "subsystem", host.path(layout.bus(bus)))
    _link(host.path(layout.bus_device(bus, name)), directory)
    host._write_uevent(name)


def _assignments(host: FakeHost, drivers: Mapping[str, str]) -> dict[str, str]:
    result = {}
    for name, dt_path in host.dt_paths.items():
        for compatible in host.tree.by_path[dt_path].compatible:
            if compatible in drivers:
                result[name] = drivers[compatible]
                break
    return result


def _groups(host: FakeHost, iommu: IommuSpec) -> dict[str, int]:
    if iommu == "none":
        return {}
    if iommu == "all":
        return {name: index for index, name in enumerate(host.devices)}
    if isinstance(iommu, Mapping):
        unknown = set(iommu) - set(host.devices)
        if unknown:
            raise ValueError(f"iommu names unknown devices: {sorted(unknown)}")
        return dict(iommu)
    wanted = set(iommu)
    unknown = wanted - set(host.devices)
    if unknown:
        raise ValueError(f"iommu names unknown devices: {sorted(unknown)}")
    return {name: index for index, name in enumerate(n for n in host.devices if n in wanted)}


def _modalias(node: Node, bus: str) -> str:
    if bus == "amba":
        return f"amba:d{_periphid(node):08X}"
    device_type = node.string("device_type")
    compatibles = "".join("C" + c.replace(" ", "_") for c in node.compatible)
    # of_modalias(): "of:N%pOFnT%s" with a NULL type printed as "(null)"
    return f"of:N{node.basename}T{device_type if device_type is not None else '(null)'}" \
           f"{compatibles}"


def _periphid(node: Node) -> int:
    """arm,primecell-periphid if given; else ARM's ID for an arm,plNNN compatible, else 0.

    A real kernel reads the ID from the device's registers; a fake host has none.
    """
    if "arm,primecell-periphid" in node.properties:
        return node.u32("arm,primecell-periphid")
    for compatible in node.compatible:
        match = _PRIMECELL.match(compatible)
        if match:
            return 0x00041000 | int(match.group(1), 16)
    return 0


def _uevent(tree: DeviceTree, node: Node, bus: str, driver: str | None) -> str:
    """dev_uevent(): DRIVER, of_device_uevent()'s OF_* variables, then the bus's own."""
    lines = [f"DRIVER={driver}"] if driver else []
    lines += [f"OF_NAME={node.basename}", f"OF_FULLNAME={node.path}"]
    device_type = node.string("device_type")
    if device_type is not None:
        lines.append(f"OF_TYPE={device_type}")
    compatible = node.compatible
    lines += [f"OF_COMPATIBLE_{i}={c}" for i, c in enumerate(compatible)]
    lines.append(f"OF_COMPATIBLE_N={len(compatible)}")
    lines += [f"OF_ALIAS_{i}={a}" for i, a in enumerate(tree.aliases_of(node))]
    if bus == "amba":
        lines.append(f"AMBA_ID={_periphid(node):08x}")
    lines.append(f"MODALIAS={_modalias(node, bus)}")
    return "\n".join(lines) + "\n"


def write_devicetree(base: Path, tree: DeviceTree | RawNode) -> None:
    """Write /sys/firmware/devicetree/base: a directory per node, a raw file per property."""
    root = tree.root if isinstance(tree, DeviceTree) else tree
    stack: list[tuple[Path, RawNode | Node]] = [(base, root)]
    while stack:
        directory, current = stack.pop()
        directory.mkdir(parents=True, exist_ok=True)
        for prop, value in current.properties.items():
            _write(directory / prop, value, 0o444)
        if "name" not in current.properties:
            # the kernel's unit-name-less copy: up to the last '@' (fdt.c populate_properties)
            _write(directory / "name", current.name.rsplit("@", 1)[0].encode() + b"\0", 0o444)
        for child in current.children:
            if (directory / child.name).exists():  # a property of that name wins, as in sysfs
                continue
            stack.append((directory / child.name, child))


def tree_state(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every entry below ``root``: kind, size, mtime_ns and link target (for no-write checks)."""
    state: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            full = os.path.join(dirpath, entry)
            st = os.lstat(full)
            if os.path.islink(full):
                state[os.path.relpath(full, root)] = ("link", 0, st.st_mtime_ns,
                                                      os.readlink(full))
            else:
                kind = "dir" if os.path.isdir(full) else "file"
                size = 0 if kind == "dir" else st.st_size
                state[os.path.relpath(full, root)] = (kind, size, st.st_mtime_ns, "")
    return state


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as sysfs makes them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    os.symlink(os.path.relpath(target, link.parent), link)
