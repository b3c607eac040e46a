"""A fake VFIO kernel side for unit tests of platform_hostdev.vfio.client.

:class:`FakeVfio` implements the client's ``Syscalls`` protocol (open, close,
ioctl) and answers like drivers/vfio/{container,group}.c and
vfio_platform_common.c would for one device: it refuses GET_DEVICE_FD before
SET_IOMMU and SET_IOMMU before SET_CONTAINER with EINVAL, checks ``argsz``,
and writes its answers with its own struct layouts (written out here from
include/uapi/linux/vfio.h, deliberately not taken from the code under test).

:func:`vfio_sysfs` writes the few sysfs links the client reads for one device
(driver, iommu_group, the group's name and members) under a temporary root.

The device cdev and iommufd (drivers/vfio/device_cdev.c, vfio_main.c
vfio_device_fops_unl_ioctl(), drivers/iommu/iommufd/ioas.c): ``cdev_node``
opens as a device fd that refuses every ioctl but BIND_IOMMUFD with EINVAL
until bound (access_granted); BIND checks argsz/flags/iommufd (EINVAL) and
that the fd is an iommufd (EBADF); on a device fd from a group BIND is EINVAL
("only allowed for cdev fds") with ``cdev_supported``, else ENOTTY (the stub
of a vfio without CONFIG_VFIO_DEVICE_CDEV); ATTACH needs the bind (EINVAL)
and an allocated IOAS (ENOENT).
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FakeVfio", "FakeRegion", "FakeIrq", "vfio_sysfs", "NUMBERS"]

# ioctl numbers, _IO(';', 100 + n) (include/uapi/linux/vfio.h: VFIO_TYPE ';', VFIO_BASE 100),
# spelled out here, not taken from the code under test.
NUMBERS = {
    0x3B64: "GET_API_VERSION", 0x3B65: "CHECK_EXTENSION", 0x3B66: "SET_IOMMU",
    0x3B67: "GROUP_GET_STATUS", 0x3B68: "GROUP_SET_CONTAINER",
    0x3B69: "GROUP_UNSET_CONTAINER", 0x3B6A: "GROUP_GET_DEVICE_FD",
    0x3B6B: "DEVICE_GET_INFO", 0x3B6C: "DEVICE_GET_REGION_INFO", 0x3B6D: "DEVICE_GET_IRQ_INFO",
    0x3B76: "DEVICE_BIND_IOMMUFD", 0x3B77: "DEVICE_ATTACH_IOMMUFD_PT",
    # include/uapi/linux/iommufd.h: _IO(';', 0x80 + n)
    0x3B80: "IOMMU_DESTROY", 0x3B81: "IOMMU_IOAS_ALLOC",
}


@dataclass(frozen=True)
class FakeRegion:
    flags: int
    size: int


@dataclass(frozen=True)
class FakeIrq:
    flags: int
    count: int = 1


@dataclass
class FakeVfio:
    """One device in one group, as the kernel shows it through VFIO."""

    device: str = "a000000.virtio_mmio"
    group_node: str = "/dev/vfio/noiommu-0"
    device_flags: int = 0x4
    regions: list[FakeRegion] = field(default_factory=lambda: [FakeRegion(0x3, 0x200)])
    irqs: list[FakeIrq] = field(default_factory=lambda: [FakeIrq(0x1)])
    extensions: frozenset[int] = frozenset({8})
    viable: bool = True
    open_errors: dict[str, int] = field(default_factory=dict)     # host path -> errno
    ioctl_errors: dict[str, int] = field(default_factory=dict)    # ioctl name -> errno
    root: str = "/"
    calls: list[tuple[str, str]] = field(default_factory=list)    # (call, object)
    open_fds: dict[int, str] = field(default_factory=dict)
    _next_fd: int = 100
    _container_groups: int = 0
    _iommu_set: bool = False
    cdev_node: str | None = None        # /dev/vfio/devices/vfioN when the device has one
    cdev_supported: bool = True         # vfio built with CONFIG_VFIO_DEVICE_CDEV
    bound: bool = False
    ioas: list[int] = field(default_factory=list)

    def _host(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return "/" + rel if not rel.startswith("..") else path

    def _new_fd(self, kind: str) -> int:
        self._next_fd += 1
        self.open_fds[self._next_fd] = kind
        return self._next_fd

    def open(self, path: str, flags: int) -> int:
        host = self._host(path)
        self.calls.append(("open", host))
        if host in self.open_errors:
            code = self.open_errors[host]
            raise OSError(code, os.strerror(code), path)
        if host == "/dev/vfio/vfio":
            return self._new_fd("container")
        if host == self.group_node:
            return self._new_fd("group")
        if host == "/dev/iommu":
            return self._new_fd("iommufd")
        if self.cdev_node is not None and host == self.cdev_node:
            return self._new_fd("cdev")
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)

    def close(self, fd: int) -> None:
        kind = self.open_fds.pop(fd)
        self.calls.append(("close", kind))
        if kind == "cdev":
            self.bound = False  # vfio_df_unbind_iommufd() on release
        if kind == "iommufd":
            self.ioas.clear()

    def ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        name = NUMBERS.get(request)
        kind = self.open_fds.get(fd)
        self.calls.append((name or hex(request), kind or "?"))
        if name is None or kind is None:
            raise _fail(errno.ENOTTY if kind else errno.EBADF)
        if name in self.ioctl_errors:
            code = self.ioctl_errors[name]
            raise OSError(code, os.strerror(code))
        return getattr(self, "_" + name.lower())(kind, arg)

    # -- container ------------------------------------------------------------
    def _get_api_version(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "container"
        return 0

    def _check_extension(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "container" and isinstance(arg, int)
        return int(arg in self.extensions)

    def _set_iommu(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "container"
        if not self._container_groups or arg not in self.extensions:
            raise _fail(errno.EINVAL)
        self._iommu_set = True
        return 0

    # -- group ----------------------------------------------------------------
    def _group_get_status(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "group" and isinstance(arg, bytearray)
        argsz, _ = struct.unpack_from("=II", arg)
        if argsz < 8:
            raise _fail(errno.EINVAL)
        flags = (1 if self.viable else 0) | (2 if self._container_groups else 0)
        struct.pack_into("=II", arg, 0, argsz, flags)
        return 0

    def _group_set_container(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "group" and isinstance(arg, bytearray) and len(arg) == 4
        (fd,) = struct.unpack("=i", arg)
        if self.open_fds.get(fd) != "container":
            raise _fail(errno.EBADF)
        if not self.viable:
            raise _fail(errno.EBUSY)
        self._container_groups += 1
        return 0

    def _group_get_device_fd(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "group" and isinstance(arg, bytearray)
        assert arg.endswith(b"\0"), "the name must be NUL-terminated"
        if not self._iommu_set:
            raise _fail(errno.EINVAL)
        if arg[:-1].decode() != self.device:
            raise _fail(errno.ENODEV)
        return self._new_fd("device")

    # -- cdev and iommufd -----------------------------------------------------
    def _device_bind_iommufd(self, kind: str, arg: int | bytearray) -> int:
        assert kind in ("device", "cdev") and isinstance(arg, bytearray)
        if not self.cdev_supported:
            raise _fail(errno.ENOTTY)
        argsz, flags, iommufd, _ = struct.unpack_from("=IIiI", arg)
        if argsz < 16 or flags or iommufd < 0 or kind == "device" or self.bound:
            raise _fail(errno.EINVAL)
        if self.open_fds.get(iommufd) != "iommufd":
            raise _fail(errno.EBADF)
        self.bound = True
        struct.pack_into("=IIiI", arg, 0, argsz, flags, iommufd, 1)
        return 0

    def _device_attach_iommufd_pt(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "cdev" and isinstance(arg, bytearray)
        argsz, flags, pt_id = struct.unpack_from("=III", arg)
        if argsz < 12 or flags or not self.bound:
            raise _fail(errno.EINVAL)
        if pt_id not in self.ioas:
            raise _fail(errno.ENOENT)
        struct.pack_into("=III", arg, 0, argsz, flags, pt_id + 100)  # the auto-created hwpt
        return 0

    def _iommu_ioas_alloc(self, kind: str, arg: int | bytearray) -> int:
        assert kind == "iommufd" and isinstance(arg, bytearray)
        size, flags, _ = struct.unpack_from("=III", arg)
        if size < 12 or flags:
            raise _fail(errno.EINVAL)
        self.ioas.append(len(self.ioas) + 2)
        struct.pack_into("=III", arg, 0, size, flags, self.ioas[-1])
        return 0

    # -- device ---------------------------------------------------------------
    def _device_access(self, kind: str) -> None:
        assert kind in ("device", "cdev")
        if kind == "cdev" and not self.bound:
            raise _fail(errno.EINVAL)  # !df->access_granted

    def _device_get_info(self, kind: str, arg: int | bytearray) -> int:
        self._device_access(kind)
        assert isinstance(arg, bytearray)
        (argsz,) = struct.unpack_from("=I", arg)
        if argsz < 16:
            raise _fail(errno.EINVAL)
        # the kernel copies back minsz = offsetofend(num_irqs) = 16 bytes
        struct.pack_into("=IIII", arg, 0, argsz, self.device_flags, len(self.regions),
                         len(self.irqs))
        return 0

    def _device_get_region_info(self, kind: str, arg: int | bytearray) -> int:
        self._device_access(kind)
        assert isinstance(arg, bytearray)
        argsz, _, index = struct.unpack_from("=III", arg)
        if argsz < 32 or index >= len(self.regions):
            raise _fail(errno.EINVAL)
        region = self.regions[index]
        struct.pack_into("=IIIIQQ", arg, 0, argsz, region.flags, index, 0, region.size,
                         index << 40)
        return 0

    def _device_get_irq_info(self, kind: str, arg: int | bytearray) -> int:
        self._device_access(kind)
        assert isinstance(arg, bytearray)
        argsz, _, index = struct.unpack_from("=III", arg)
        if argsz < 16 or index >= len(self.irqs):
            raise _fail(errno.EINVAL)
        irq = self.irqs[index]
        struct.pack_into("=IIII", arg, 0, argsz, irq.flags, index, irq.count)
        return 0


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def vfio_sysfs(root: Path, bus: str, name: str, driver: str | None, group: str | None,
               group_name: str | None = "vfio-noiommu",
               members: dict[str, str | None] | None = None, cdev: str | None = None,
               cdev_dev: bool = True) -> None:
    """The sysfs links of one device (and its iommu group) under ``root``; ``cdev`` (vfioN)
    adds its vfio-dev entry, with ``dev`` and the /dev node when ``cdev_dev``."""
    devices = root / "sys/devices/platform"
    device = devices / name
    device.mkdir(parents=True, exist_ok=True)
    bus_devices = root / f"sys/bus/{bus}/devices"
    bus_devices.mkdir(parents=True, exist_ok=True)
    (bus_devices / name).symlink_to(device)
    if driver is not None:
        driver_dir = root / f"sys/bus/{bus}/drivers/{driver}"
        driver_dir.mkdir(parents=True, exist_ok=True)
        (device / "driver").symlink_to(driver_dir)
    if cdev is not None:
        (device / "vfio-dev" / cdev).mkdir(parents=True)
        if cdev_dev:
            (device / "vfio-dev" / cdev / "dev").write_text("507:0\n")
            (root / "dev/vfio/devices").mkdir(parents=True, exist_ok=True)
            (root / "dev/vfio/devices" / cdev).write_text("")
    if group is None:
        return
    group_dir = root / f"sys/kernel/iommu_groups/{group}"
    (group_dir / "devices").mkdir(parents=True, exist_ok=True)
    if group_name is not None:
        (group_dir / "name").write_text(group_name + "\n")
    (device / "iommu_group").symlink_to(group_dir)
    (group_dir / "devices" / name).symlink_to(device)
    for other, other_driver in (members or {}).items():
        other_dir = devices / other
        other_dir.mkdir(parents=True, exist_ok=True)
        if other_driver is not None:
            drv = root / f"sys/bus/platform/drivers/{other_driver}"
            drv.mkdir(parents=True, exist_ok=True)
            (other_dir / "driver").symlink_to(drv)
        (group_dir / "devices" / other).symlink_to(other_dir)
