"""A fake kernel: acts on sysfs writes under a fake host's root as Linux 6.12 does.

:class:`FakeKernel` is a :class:`~platform_hostdev.host.attributes.WritableHostFs`
over a :class:`~tests.support.fakehost.FakeHost`; the code under test writes
through it exactly as it writes to the real sysfs. Each rule below mirrors the
kernel source (6.12), file and function named:

* ``driver_override`` (drivers/base/driver.c driver_set_override): longer than
  PAGE_SIZE-2 -> EINVAL; the value is cut at the first newline; an empty
  value or a leading newline clears it (it then reads "(null)"); a
  zero-length write() never reaches the store callback.
* ``drivers/DRV/unbind`` (bus.c unbind_store): ENODEV unless the named device
  is bound to DRV; else the device is detached (links removed, "unbind" uevent).
* ``drivers/DRV/bind`` (bus.c bind_store): ENODEV unless DRV matches the
  device (with an override set only the override's driver matches); EBUSY if
  already bound; a failed probe returns its errno.
* ``drivers_probe`` (bus.c drivers_probe_store): ENODEV for an unknown name;
  otherwise success even when nothing binds (probe errors are ignored so the
  next driver can try, dd.c __device_attach_driver); a bound device is left
  alone. Matching: the override's driver only (platform_match/amba_match),
  else the first compatible with a registered driver (a driver is registered
  when /sys/bus/BUS/drivers/DRV exists, i.e. its module is loaded).
  vfio-platform/vfio-amba have no ID table: they bind through the override only.
  A real amba bus matches peripheral IDs, not compatibles; for the pl0xx
  devices modelled here the two agree.
* vfio probe (vfio_platform_common.c, group.c): vfio-platform with
  reset_required=Y and no reset handler for the first compatible -> log
  "No reset function found for device D", ENOENT (checked before the group);
  no IOMMU group and no-IOMMU mode off -> EINVAL; no-IOMMU on -> a new IOMMU
  group (lowest free number) named "vfio-noiommu", ``D/iommu_group``,
  /dev/vfio/noiommu-N and the taint warning; all removed on unbind. With an
  IOMMU group, /dev/vfio/N exists while a member is bound to vfio.
  ``debian_61_reset_bug=True`` models Debian 6.1.y: ENOENT without a reset
  handler even when reset_required=N.
* vfio device cdev (drivers/vfio/vfio_main.c vfio_init_device(),
  drivers/vfio/vfio.h vfio_device_add(), device_cdev.c): a bound vfio device
  gets ``D/vfio-dev/vfioN`` (N the lowest free index of vfio.device_ida);
  with ``vfio_cdev=True`` (CONFIG_VFIO_DEVICE_CDEV=y) and an IOMMU group it
  has ``dev`` (MAJ:MIN in the "vfio-dev" region) and /dev/vfio/devices/vfioN
  (devtmpfs, vfio_device_devnode()); a no-IOMMU device gets neither ("cdev
  does not support noiommu device"); all removed on unbind. /proc/devices
  lists "vfio-dev" while vfio is loaded with the cdev (vfio_cdev_init()).
* iommufd (drivers/iommu/iommufd/main.c, device.c): with ``iommufd=True``
  loading vfio loads iommufd first (vfio needs its symbols when IOMMUFD=m):
  /dev/iommu (misc, 10:MINOR) and the ``allow_unsafe_interrupts`` parameter.
* Failed probes log "DRV D: probe with driver DRV failed with error -N"
  (dd.c call_driver_probe; ENODEV/ENXIO stay silent) to ``<root>/dev/kmsg`` in
  /dev/kmsg's record format.
* Module parameters: bool parameters read "Y"/"N"; writes parse with
  kstrtobool (EINVAL otherwise); a 0444 parameter (reset_required) refuses
  opening for write with EACCES (kernfs), as does any read-only attribute.
  Writes to files that do not exist fail with ENOENT (sysfs creates nothing).
* ``modprobe`` through :meth:`FakeKernel.run` (the injected process runner):
  loads vfio, vfio_platform, vfio_amba (dependencies first) when the fake
  kernel "has" them; parameters given as NAME=VALUE.
* bind/unbind send uevents: every :class:`SynchronousWaiter` attached is notified
  during the write, as the real kernel sends KOBJ_BIND/KOBJ_UNBIND within it.
* Device links (drivers/base/core.c, dd.c; links made by tests/support/
  fakedevlinks.py): unbinding a supplier first releases every consumer whose
  managed, non-SYNC_STATE_ONLY link is active, transitively
  (__device_release_driver -> device_links_unbind_consumers), whether or not
  the consumer's driver suppresses its bind attributes. A probe defers
  (EPROBE_DEFER, silent: dev_dbg) while a managed non-SYNC_STATE_ONLY supplier
  link is not "available" (device_links_check_suppliers), and, for a driver
  other than vfio, while a supplier is bound to vfio (the resource it needs is
  not registered: its clock/gpio/mailbox lookup defers). A deferred device
  goes on the deferred list (driver_probe_device); a supplier that binds puts
  the consumers of its AUTOPROBE links there (device_links_driver_bound) and
  every successful bind retries the list (driver_bound ->
  driver_deferred_probe_trigger), here synchronously, in the real kernel from
  a workqueue.

:meth:`FakeKernel.as_host` is the :class:`~platform_hostdev.host.boundary.Host` the
code under test gets: this kernel as its filesystem root, its waiter, its
modprobe, and whatever a test replaces (a clock, a step observer, a QEMU probe).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from platform_hostdev.host.attributes import AttributeWriteError, WritableHostFs
from platform_hostdev.host.boundary import Host
from platform_hostdev.host.kmsg import format_record
from platform_hostdev.host.uevents import SynchronousWaiter
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

from tests.support.fakehost import FakeHost

__all__ = ["FakeKernel", "QEMU_VIRT_DRIVERS", "MODULES", "PAGE_SIZE"]

PAGE_SIZE = 4096
EPROBE_DEFER = 517  # include/linux/errno.h
#: compatible -> driver of the QEMU virt devices a Debian 6.12 kernel binds on the board
QEMU_VIRT_DRIVERS = {
    "arm,pl061": "pl061_gpio",
    "arm,pl031": "rtc-pl031",
    "arm,pl011": "uart-pl011",
    "gpio-keys": "gpio-keys",
}
#: module -> (bus, driver) it registers, parameters (name: (default, mode)), dependencies
MODULES: dict[str, tuple[tuple[str, str] | None, dict[str, tuple[str, int]], tuple[str, ...]]] = {
    "vfio": (None, {"enable_unsafe_noiommu_mode": ("N", 0o644)}, ()),
    "vfio_platform": (("platform", "vfio-platform"), {"reset_required": ("Y", 0o444)},
                      ("vfio",)),
    "vfio_amba": (("amba", "vfio-amba"), {}, ("vfio",)),
    "iommufd": (None, {"allow_unsafe_interrupts": ("N", 0o644)}, ()),
}
VFIO_DEV_MAJOR = 507   # what alloc_chrdev_region() gave "vfio-dev" on a Debian 6.12 board
MISC_MAJOR = 10
_VFIO = set(VFIO_DRIVERS.values())


def _kstrtobool(text: str) -> bool:
    """lib/kstrtox.c kstrtobool: y/Y/t/T/1, n/N/f/F/0, on/off; EINVAL otherwise."""
    if text[:1] in ("y", "Y", "t", "T", "1"):
        return True
    if text[:1] in ("n", "N", "f", "F", "0"):
        return False
    if text[:1] in ("o", "O") and text[1:2] in ("n", "N"):
        return True
    if text[:1] in ("o", "O") and text[1:2] in ("f", "F"):
        return False
    raise ValueError(text)


def _sysfs_streq(value: str) -> str:
    """What sysfs_streq compares: the value without one trailing newline."""
    return value[:-1] if value.endswith("\n") else value


class FakeKernel(WritableHostFs):
    """The kernel side of a fake host: sysfs writes change its tree as Linux would."""

    def __init__(self, host: FakeHost, *, drivers: Mapping[str, str] | None = None,
                 available: Collection[str] = tuple(MODULES),
                 reset_handlers: Collection[str] = (), reset_required: bool = True,
                 debian_61_reset_bug: bool = False, release: str = "6.12.0-fake-arm64",
                 probe_errors: Mapping[str, int] | None = None, vfio_cdev: bool = True,
                 iommufd: bool = True) -> None:
        super().__init__(host.root)
        self.vfio_cdev = vfio_cdev
        self.iommufd = iommufd
        self.host = host
        self.drivers = dict(QEMU_VIRT_DRIVERS if drivers is None else drivers)
        self.available = set(available)
        self.reset_handlers = set(reset_handlers)
        self.debian_61_reset_bug = debian_61_reset_bug
        self.probe_errors = dict(probe_errors or {})   # driver -> errno its probe returns
        self.waiters: list[SynchronousWaiter] = []
        self.deferred: list[str] = []                   # the deferred probe list
        self._retrying = False
        self.writes: list[tuple[str, str]] = []         # (host path, value) as written
        self.log: list[str] = []
        self._release = release
        self._write_file("/proc/sys/kernel/osrelease", release + "\n", 0o444)
        kmsg = self.path("/dev/kmsg")
        kmsg.parent.mkdir(parents=True, exist_ok=True)
        kmsg.touch()
        # build_fake_host(vfio_loaded=True) registers the drivers without /sys/module:
        # the loaded modules' parameters exist in a real kernel, so add them here.
        for module, (registers, params, _) in MODULES.items():
            loaded = registers is not None and host.driver_dir(*registers).is_dir()
            if module == "vfio":
                loaded = self.path("/sys/module/vfio/parameters").is_dir()
            if module == "iommufd":
                loaded = iommufd and self.path("/sys/module/vfio/parameters").is_dir()
            if loaded:
                defaults = dict(params)
                if module == "vfio_platform":
                    defaults["reset_required"] = ("Y" if reset_required else "N", 0o444)
                self._create_module(module, defaults, {})
                self._loaded_side_effects(module)
        self._reset_required_default = reset_required
        self._write_proc_devices()

    # ------------------------------------------------------------------ injection
    def waiter(self) -> SynchronousWaiter:
        """A waiter this kernel notifies of its bind/unbind uevents."""
        waiter = SynchronousWaiter()
        self.waiters.append(waiter)
        return waiter

    def as_host(self, **boundaries: Any) -> Host:
        """A Host around this kernel: its waiter and modprobe; ``boundaries`` replace any
        other (``clock=``, ``observer=``, ``qemu_probe=``...). No QEMU is run unless a
        test gives a probe or dumpdtb runner."""
        boundaries.setdefault("modprobe", self.run)
        return Host(self, self.waiter(), **boundaries)

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """The process runner: modprobe MODULE [PARAM=VALUE...]; anything else exits 127."""
        args = list(argv)
        if not args or os.path.basename(args[0]) != "modprobe" or len(args) < 2:
            return subprocess.CompletedProcess(args, 127, "", f"{args[:1]}: not found\n")
        module = args[1].replace("-", "_")
        params = dict(a.split("=", 1) for a in args[2:] if "=" in a)
        if module not in MODULES or module not in self.available:
            return subprocess.CompletedProcess(
                args, 1, "", f"modprobe: FATAL: Module {args[1]} not found in directory "
                             f"/lib/modules/{self._release}\n")
        self._load(module, params)
        return subprocess.CompletedProcess(args, 0, "", "")

    def register_driver(self, bus: str, driver: str, module: str | None = None) -> list[str]:
        """A host driver's module loads (udev's kmod builtin on MODALIAS): ``driver`` (which
        ``drivers`` maps a compatible to) registers and probes every unbound device it
        matches (drivers/base/bus.c bus_add_driver -> dd.c driver_attach, __driver_attach:
        driver_match_device, which with a driver_override set matches that driver only).
        Returns the devices bound."""
        if module is not None:
            self.host.modules[driver] = module  # add_driver makes the module link
        self.host.add_driver(bus, driver)
        bound = []
        for name, device_bus in self.host.buses.items():
            if device_bus == bus and self.host.driver_of(name) is None \
                    and self._matches(name, driver) and self._probe(name, driver) == 0:
                bound.append(name)
        return bound

    # ------------------------------------------------------------------ sysfs writes
    def write_attr(self, host_path: str, value: str) -> None:
        self.writes.append((host_path, value))
        real = Path(os.path.realpath(self.path(host_path)))
        root = Path(os.path.realpath(self.root))
        if not real.exists():
            raise AttributeWriteError(errno.ENOENT, host_path, value)
        if real.is_dir():
            raise AttributeWriteError(errno.EISDIR, host_path, value)
        if not real.stat().st_mode & 0o222:
            raise AttributeWriteError(errno.EACCES, host_path, value)
        if not value:
            return  # write(fd, "", 0) does not reach a sysfs store callback
        rel = "/" + str(real.relative_to(root))
        parts = rel.strip("/").split("/")
        if parts[-1] == "driver_override":
            self._store_override(self._device_at(real.parent, host_path, value), value, host_path)
        elif parts[:2] == ["sys", "bus"] and len(parts) == 6 and parts[3] == "drivers" \
                and parts[5] in ("bind", "unbind"):
            self._store_bind(parts[2], parts[4], parts[5], value, host_path)
        elif parts[:2] == ["sys", "bus"] and len(parts) == 4 and parts[3] == "drivers_probe":
            self._store_drivers_probe(parts[2], value, host_path)
        elif parts[:2] == ["sys", "module"] and len(parts) == 5 and parts[3] == "parameters":
            try:
                real.write_text(("Y" if _kstrtobool(value) else "N") + "\n")
            except ValueError:
                raise AttributeWriteError(errno.EINVAL, host_path, value) from None
        else:
            real.write_text(value)

    def _device_at(self, directory: Path, host_path: str, value: str) -> str:
        for name, path in self.host.devices.items():
            if os.path.realpath(path) == str(directory):
                return name
        raise AttributeWriteError(errno.ENOENT, host_path, value)

    def _store_override(self, name: str, value: str, host_path: str) -> None:
        if len(value.encode()) >= PAGE_SIZE - 1:
            raise AttributeWriteError(errno.EINVAL, host_path, value)
        value = value.split("\0", 1)[0]
        new = value.split("\n", 1)[0]
        self.host.set_driver_override(name, new or None)

    def _store_bind(self, bus: str, driver: str, action: str, value: str,
                    host_path: str) -> None:
        name = _sysfs_streq(value)
        if self.host.buses.get(name) != bus:
            raise AttributeWriteError(errno.ENODEV, host_path, value)
        if action == "unbind":
            if self.host.driver_of(name) != driver:
                raise AttributeWriteError(errno.ENODEV, host_path, value)
            self._unbind(name)
            return
        if not self._matches(name, driver):
            raise AttributeWriteError(errno.ENODEV, host_path, value)
        if self.host.driver_of(name) is not None:
            raise AttributeWriteError(errno.EBUSY, host_path, value)
        err = self._probe(name, driver)
        if err:
            raise AttributeWriteError(err, host_path, value)

    def _store_drivers_probe(self, bus: str, value: str, host_path: str) -> None:
        name = _sysfs_streq(value)
        if self.host.buses.get(name) != bus:
            raise AttributeWriteError(errno.ENODEV, host_path, value)
        self._attach(name)

    def _attach(self, name: str) -> int:
        """__device_attach(): try the candidates in order; a deferral stops the search."""
        if self.host.driver_of(name) is not None:
            return 0
        err = errno.ENODEV
        for driver in self._candidates(name):
            err = self._probe(name, driver)
            if err in (0, EPROBE_DEFER):
                break
        return err

    # ------------------------------------------------------------------ driver core
    def _registered(self, bus: str, driver: str) -> bool:
        return self.host.driver_dir(bus, driver).is_dir()

    def _compatibles(self, name: str) -> list[str]:
        return list(self.host.tree.by_path[self.host.dt_paths[name]].compatible)

    def _matches(self, name: str, driver: str) -> bool:
        override = self.host.driver_override(name)
        if override is not None:
            return override == driver
        return driver not in _VFIO and any(self.drivers.get(c) == driver
                                           for c in self._compatibles(name))

    def _candidates(self, name: str) -> list[str]:
        bus = self.host.buses[name]
        override = self.host.driver_override(name)
        if override is not None:
            return [override] if self._registered(bus, override) else []
        found = []
        for compatible in self._compatibles(name):
            driver = self.drivers.get(compatible)
            if driver and driver not in _VFIO and driver not in found \
                    and self._registered(bus, driver):
                found.append(driver)
        return found

    def _probe(self, name: str, driver: str) -> int:
        """really_probe(): 0 and bound, or the probe's errno (logged unless ENODEV/ENXIO or
        EPROBE_DEFER)."""
        err = self._supplier_deferral(name, driver)
        if not err:
            err = self._vfio_probe(name, driver) if driver in _VFIO else \
                self.probe_errors.get(driver, 0)
        if err == EPROBE_DEFER:
            if name not in self.deferred:
                self.deferred.append(name)
            return err
        if err:
            if err not in (errno.ENODEV, errno.ENXIO):
                self._log(f"{driver} {name}: probe with driver {driver} failed with error -{err}")
            return err
        if name in self.deferred:
            self.deferred.remove(name)
        self.host.bind(name, driver)
        for link in self.host.links:  # device_links_driver_bound
            if link.supplier == name and link.autoprobe and not link.stateless \
                    and self.host.driver_of(link.consumer) is None \
                    and link.consumer not in self.deferred:
                self.deferred.append(link.consumer)
        self._notify(name, "bind")
        self._retry_deferred()
        return 0

    def _supplier_deferral(self, name: str, driver: str) -> int:
        for link in self.host.links:
            if link.consumer != name or link.stateless or link.sync_state_only:
                continue
            supplier_driver = self.host.driver_of(link.supplier)
            if supplier_driver is None:
                return EPROBE_DEFER  # device_links_check_suppliers: "supplier ... not ready"
            if supplier_driver in _VFIO and driver not in _VFIO:
                return EPROBE_DEFER  # what the driver gets from its supplier is not there
        return 0

    def _retry_deferred(self) -> None:
        """driver_deferred_probe_trigger(): retry the deferred list until nothing binds."""
        if self._retrying:
            return
        self._retrying = True
        try:
            progress = True
            while progress:
                progress = False
                for name in list(self.deferred):
                    # deferred_probe_work_func(): off the list, then bus_probe_device(); a
                    # deferral puts it back
                    self.deferred.remove(name)
                    if self.host.driver_of(name) is None and self._attach(name) == 0 \
                            and self.host.driver_of(name) is not None:
                        progress = True
        finally:
            self._retrying = False

    def _vfio_probe(self, name: str, driver: str) -> int:
        first = (self._compatibles(name) or [""])[0]
        no_handler = first not in self.reset_handlers
        reset_required = self._param("vfio_platform", "reset_required") == "Y"
        if driver == "vfio-platform" and no_handler and reset_required:
            self._log(f"{driver} {name}: No reset function found for device {name}")
            return errno.ENOENT
        if no_handler and self.debian_61_reset_bug:
            return errno.ENOENT
        group = self.host.iommu_group_of(name)
        if group is None:
            if self._param("vfio", "enable_unsafe_noiommu_mode") != "Y":
                return errno.EINVAL
            group = self._new_noiommu_group(name)
            self._log(f"{driver} {name}: Adding kernel taint for vfio-noiommu group on device")
            self._write_file(f"/dev/vfio/noiommu-{group}", "", 0o600)
        else:
            self._write_file(f"/dev/vfio/{group}", "", 0o600)
        self._add_vfio_device(name, noiommu=self._is_noiommu(group))
        return 0

    def _add_vfio_device(self, name: str, noiommu: bool) -> None:
        used = {int(p.name[4:]) for p in self.path("/sys/class/vfio-dev").iterdir()} \
            if self.path("/sys/class/vfio-dev").is_dir() else set()
        index = next(i for i in range(len(used) + 1) if i not in used)  # ida: lowest free
        directory = self.host.device_dir(name) / "vfio-dev" / f"vfio{index}"
        directory.mkdir(parents=True)
        (directory / "uevent").write_text(f"DEVNAME=vfio/devices/vfio{index}\n"
                                          if self.vfio_cdev and not noiommu else "")
        if self.vfio_cdev and not noiommu:
            (directory / "dev").write_text(f"{VFIO_DEV_MAJOR}:{index}\n")
            self._write_file(f"/dev/vfio/devices/vfio{index}", "", 0o600)
        link = self.path(f"/sys/class/vfio-dev/vfio{index}")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(directory, link.parent))

    def _remove_vfio_device(self, name: str) -> None:
        base = self.host.device_dir(name) / "vfio-dev"
        for entry in sorted(base.iterdir()) if base.is_dir() else []:
            self.path(f"/sys/class/vfio-dev/{entry.name}").unlink(missing_ok=True)
            self.path(f"/dev/vfio/devices/{entry.name}").unlink(missing_ok=True)
        if base.is_dir():
            shutil.rmtree(base)

    def _unbind(self, name: str) -> None:
        for link in list(self.host.links):  # device_links_unbind_consumers, transitively
            if link.supplier == name and not link.stateless and not link.sync_state_only \
                    and self.host.link_status(link) == "active":
                self._unbind(link.consumer)
        driver = self.host.driver_of(name)
        self.host.unbind(name)
        if driver in _VFIO:
            self._remove_vfio_device(name)
            group = self.host.iommu_group_of(name)
            if group is not None and self._is_noiommu(group):
                self._remove_group(name, group)
                self.path(f"/dev/vfio/noiommu-{group}").unlink(missing_ok=True)
            elif group is not None and not any(
                    self.host.driver_of(m) in _VFIO for m in self.host.iommu_groups[group]):
                self.path(f"/dev/vfio/{group}").unlink(missing_ok=True)
        self._notify(name, "unbind")

    def remove_device(self, name: str) -> None:
        """The device goes away (hot-unplug, overlay removal, its bus driver's module
        unloaded): drivers/base/core.c device_del: its driver is released (consumers
        first, as an unbind), it leaves its IOMMU group (the group and its /dev/vfio
        node go with the last member), its bus link and sysfs directory go."""
        if self.host.driver_of(name) is not None:
            self._unbind(name)
        group = self.host.iommu_group_of(name)
        if group is not None:
            members = self.host.iommu_groups[group]
            members.remove(name)
            self.path(f"/sys/kernel/iommu_groups/{group}/devices/{name}").unlink(missing_ok=True)
            if not members:
                shutil.rmtree(self.path(f"/sys/kernel/iommu_groups/{group}"))
                self.host.iommu_groups.pop(group)
                self.path(f"/dev/vfio/{group}").unlink(missing_ok=True)
        bus = self.host.buses[name]
        self.path(f"/sys/bus/{bus}/devices/{name}").unlink()
        shutil.rmtree(self.host.devices.pop(name))
        self._notify(name, "remove")
        del self.host.buses[name]

    def _is_noiommu(self, group: int) -> bool:
        name = self.path(f"/sys/kernel/iommu_groups/{group}/name")
        return name.is_file() and name.read_text().strip() == "vfio-noiommu"

    def _new_noiommu_group(self, name: str) -> int:
        used = {int(n) for n in os.listdir(self.path("/sys/kernel/iommu_groups"))} \
            if self.path("/sys/kernel/iommu_groups").is_dir() else set()
        group = next(i for i in range(len(used) + 1) if i not in used)  # ida: lowest free
        self.host.add_to_iommu_group(name, group)
        self._write_file(f"/sys/kernel/iommu_groups/{group}/name", "vfio-noiommu\n", 0o444)
        return group

    def _remove_group(self, name: str, group: int) -> None:
        (self.host.device_dir(name) / "iommu_group").unlink(missing_ok=True)
        shutil.rmtree(self.path(f"/sys/kernel/iommu_groups/{group}"))
        self.host.iommu_groups.pop(group, None)

    # ------------------------------------------------------------------ modules, log
    def _param(self, module: str, param: str) -> str | None:
        path = self.path(f"/sys/module/{module}/parameters/{param}")
        return path.read_text().strip() if path.is_file() else None

    def _load(self, module: str, params: Mapping[str, str]) -> None:
        registers, defaults, depends = MODULES[module]
        if module == "vfio" and self.iommufd:
            depends = ("iommufd", *depends)
        for dependency in depends:
            if not self.path(f"/sys/module/{dependency}").is_dir():
                self._load(dependency, {})
        if self.path(f"/sys/module/{module}").is_dir():
            return  # already loaded: modprobe ignores the parameters
        values = dict(defaults)
        if module == "vfio_platform":
            values["reset_required"] = ("Y" if self._reset_required_default else "N", 0o444)
        self._create_module(module, values, params)
        self._loaded_side_effects(module)
        if registers is not None:
            self.host.add_driver(*registers)

    def _loaded_side_effects(self, module: str) -> None:
        if module == "iommufd":
            self._write_file("/dev/iommu", "", 0o600)
        if module == "vfio":  # vfio_init(): class_create("vfio-dev")
            self.path("/sys/class/vfio-dev").mkdir(parents=True, exist_ok=True)
        self._write_proc_devices()

    def _write_proc_devices(self) -> None:
        """fs/proc/devices.c: the char majors; vfio-dev once vfio_cdev_init() ran."""
        lines = ["Character devices:", "  1 mem", "  5 /dev/tty", f" {MISC_MAJOR} misc"]
        if self.vfio_cdev and self.path("/sys/module/vfio").is_dir():
            lines.append(f"{VFIO_DEV_MAJOR} vfio-dev")
        lines += ["", "Block devices:", "  8 sd", "259 blkext"]
        self._write_file("/proc/devices", "\n".join(lines) + "\n", 0o444)

    def _create_module(self, module: str, defaults: Mapping[str, tuple[str, int]],
                       given: Mapping[str, str]) -> None:
        self.path(f"/sys/module/{module}/parameters").mkdir(parents=True, exist_ok=True)
        for param, (default, mode) in defaults.items():
            path = f"/sys/module/{module}/parameters/{param}"
            if param in given:
                value = "Y" if _kstrtobool(given[param]) else "N"
            elif self.path(path).is_file():
                value = self.path(path).read_text().strip()
            else:
                value = default
            self._write_file(path, value + "\n", mode)

    def _write_file(self, host_path: str, text: str, mode: int) -> None:
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.chmod(path, 0o644)
        path.write_text(text)
        os.chmod(path, mode)

    def _log(self, message: str) -> None:
        self.log.append(message)
        with open(self.path("/dev/kmsg"), "a") as kmsg:
            kmsg.write(format_record(message, len(self.log)))

    def _notify(self, name: str, action: str) -> None:
        for waiter in self.waiters:
            waiter.notify(self.host.buses[name], name, action)
