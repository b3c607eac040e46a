"""A read-only VFIO user-space client: what the kernel's vfio driver exposes for a device.

Speaks the legacy container/group API of include/uapi/linux/vfio.h through
``fcntl.ioctl``. The ioctl numbers, argument layouts and flag words are the
tables of :mod:`platform_hostdev.vfio.uapi`; whether a group is viable is
:mod:`platform_hostdev.vfio.groups`'s rule.

Order of calls (the kernel refuses GET_DEVICE_FD with -EINVAL before an IOMMU
model is set): open /dev/vfio/vfio, GET_API_VERSION, CHECK_EXTENSION, open
the group node, GROUP_GET_STATUS (viable?), GROUP_SET_CONTAINER, SET_IOMMU,
GROUP_GET_DEVICE_FD, then DEVICE_GET_INFO / GET_REGION_INFO / GET_IRQ_INFO.
File descriptors close in reverse order (device, group, container); closing
the group detaches it from the container.

The group node is /dev/vfio/N, or /dev/vfio/noiommu-N when the iommu group's
``name`` reads "vfio-noiommu" (vfio.enable_unsafe_noiommu_mode=1): such a
group is always reported UNSAFE (no DMA isolation, kernel tainted) and QEMU
cannot use it; opening it needs CAP_SYS_RAWIO.

This module never reads, writes or mmaps region contents: an arbitrary read
of device registers can raise a synchronous external abort in the host
kernel. It only asks the kernel what the regions and interrupts are.

The system calls go through a :class:`Syscalls` object (default
:class:`OsSyscalls`), so tests can substitute a fake ioctl; every path goes
through :class:`~platform_hostdev.host.fs.HostFs`, so /dev and /sys follow its root.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import NOIOMMU_GROUP_NAME, HostFs
from platform_hostdev.vfio.groups import group_blockers
from platform_hostdev.vfio.uapi import (
    IOCTLS,
    IOMMU_TYPES,
    VFIO_API_VERSION,
    VFIO_DRIVERS,
    flag_bit,
    flag_names,
)

__all__ = [
    "VfioTarget", "Syscalls", "OsSyscalls",
    "GroupRef", "DeviceInfo", "RegionInfo", "IrqInfo", "VfioView",
    "Container", "Group", "DeviceFd",
    "VfioError", "NotBoundError", "GroupNotViableError", "VfioPermissionError", "VfioBusyError",
    "find_group", "query",
]


class VfioTarget(Protocol):
    """What the client needs of a device (host.inventory.Device has it)."""

    @property
    def name(self) -> str: ...
    @property
    def bus(self) -> str: ...


class Syscalls(Protocol):
    """The system calls the client makes; substitute a fake in tests."""

    def open(self, path: str, flags: int) -> int: ...

    def close(self, fd: int) -> None: ...

    def ioctl(self, fd: int, request: int, arg: int | bytearray) -> int: ...


class OsSyscalls:
    """The real calls: os.open/os.close and fcntl.ioctl."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        import fcntl

        if isinstance(arg, bytearray):
            # mutate_flag=True: the kernel writes into arg and the return value is
            # the ioctl's int result (GET_DEVICE_FD returns the new fd this way).
            return fcntl.ioctl(fd, request, arg, True)
        return fcntl.ioctl(fd, request, arg)


# ---------------------------------------------------------------- errors

class VfioError(HostdevError):
    """A VFIO call failed; ``errno`` is the kernel's answer, when there was one."""

    code = "vfio-error"

    def __init__(self, what: str, fix: str = "", errno_: int | None = None) -> None:
        super().__init__(what, fix, errno=errno_)
        self.errno = errno_


class NotBoundError(VfioError):
    """The device is not bound to vfio-platform/vfio-amba (or has no iommu group)."""

    code = "not-detached"


class GroupNotViableError(VfioError):
    """Another device of the iommu group is bound to a host driver."""

    code = "group-not-viable"


class VfioPermissionError(VfioError):
    """The caller may not open the container or group node."""

    code = "permission-denied"


class VfioBusyError(VfioError):
    """Another process holds the group or device (a running VM, another inspect)."""

    code = "device-in-use"


# ---------------------------------------------------------------- sysfs side

@dataclass(frozen=True)
class GroupRef:
    """A device's iommu group and the VFIO node that stands for it."""

    number: str
    noiommu: bool
    node: str              # host path: /dev/vfio/N or /dev/vfio/noiommu-N

    def to_json(self) -> dict[str, Any]:
        # "unsafe": a no-IOMMU group has no DMA isolation (kept for JSON readers)
        return {"number": self.number, "node": self.node, "noiommu": self.noiommu,
                "unsafe": self.noiommu}


def _device_dir(device: VfioTarget) -> str:
    return f"/sys/bus/{device.bus}/devices/{device.name}"


def find_group(fs: HostFs, device: VfioTarget) -> GroupRef:
    """The VFIO group of a device bound to its vfio driver; NotBoundError otherwise."""
    base = _device_dir(device)
    wanted = VFIO_DRIVERS.get(device.bus)
    if wanted is None:
        raise NotBoundError(f"device {device.name} is on bus {device.bus!r}, which has no "
                            "vfio platform driver", "only platform and amba devices qualify")
    driver = fs.link_name(base + "/driver")
    if driver != wanted:
        bound = f"bound to {driver}" if driver else "not bound to any driver"
        raise NotBoundError(
            f"device {device.name} is {bound}, not {wanted}: VFIO cannot see it",
            f"run 'platform-hostdev nodedev-detach {device.name}' first")
    number = fs.link_name(base + "/iommu_group")
    if number is None:
        raise NotBoundError(
            f"device {device.name} is bound to {wanted} but has no iommu_group link",
            "the vfio driver did not register it; unbind and bind again "
            "(platform-hostdev nodedev-reattach, then nodedev-detach)")
    name = (fs.read_text(f"/sys/kernel/iommu_groups/{number}/name") or "").strip()
    noiommu = name == NOIOMMU_GROUP_NAME
    node = f"/dev/vfio/noiommu-{number}" if noiommu else f"/dev/vfio/{number}"
    return GroupRef(number, noiommu, node)


# ---------------------------------------------------------------- decoded answers

@dataclass(frozen=True)
class DeviceInfo:
    flags: int
    num_regions: int
    num_irqs: int
    cap_offset: int = 0

    @property
    def flag_names(self) -> list[str]:
        return flag_names("device", self.flags)


@dataclass(frozen=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int
    cap_offset: int = 0

    @property
    def flag_names(self) -> list[str]:
        return flag_names("region", self.flags)

    @property
    def mmap(self) -> bool:
        return bool(self.flags & flag_bit("region", "MMAP"))


@dataclass(frozen=True)
class IrqInfo:
    index: int
    flags: int
    count: int

    @property
    def flag_names(self) -> list[str]:
        return flag_names("irq", self.flags)

    @property
    def automasked(self) -> bool:
        return bool(self.flags & flag_bit("irq", "AUTOMASKED"))


@dataclass(frozen=True)
class VfioView:
    """Everything the kernel's vfio driver says about one device."""

    device: str
    bus: str
    driver: str
    group: GroupRef
    api_version: int
    iommu_type: str
    info: DeviceInfo
    regions: tuple[RegionInfo, ...]
    irqs: tuple[IrqInfo, ...]
    backend: str = "legacy"         # "iommufd": opened through its cdev (vfio.cdev_client)
    cdev: str | None = None         # /dev/vfio/devices/vfioN on the iommufd backend

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device, "bus": self.bus, "driver": self.driver,
            "backend": self.backend, "cdev": self.cdev,
            "group": self.group.to_json(), "api_version": self.api_version,
            "iommu_type": self.iommu_type,
            "flags": self.info.flag_names, "num_regions": self.info.num_regions,
            "num_irqs": self.info.num_irqs,
            "regions": [{"index": r.index, "flags": r.flag_names, "size": hex(r.size),
                         "offset": hex(r.offset)} for r in self.regions],
            "irqs": [{"index": i.index, "flags": i.flag_names, "count": i.count}
                     for i in self.irqs],
        }


# ---------------------------------------------------------------- file descriptors

class _Fd:
    """An open VFIO file descriptor; a context manager that closes it."""

    def __init__(self, syscalls: Syscalls, fd: int, label: str) -> None:
        self.syscalls = syscalls
        self.fd: int | None = fd
        self.label = label

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.syscalls.close(fd)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _ioctl(self, name: str, arg: int | bytearray = 0) -> int:
        if self.fd is None:
            raise ValueError(f"{self.label} is closed")
        try:
            return self.syscalls.ioctl(self.fd, IOCTLS[name].number, arg)
        except OSError as exc:
            raise _ioctl_error(name, self.label, exc) from None

    def _struct(self, name: str, **values: int) -> dict[str, int]:
        buffer = IOCTLS[name].pack(**values)
        self._ioctl(name, buffer)
        return IOCTLS[name].unpack(buffer)


def _open(syscalls: Syscalls, fs: HostFs, host_path: str, group: GroupRef | None) -> int:
    try:
        return syscalls.open(str(fs.path(host_path)), os.O_RDWR)
    except OSError as exc:
        raise _open_error(host_path, group, exc) from None


class Container(_Fd):
    """/dev/vfio/vfio: the IOMMU context groups attach to."""

    PATH = "/dev/vfio/vfio"

    @classmethod
    def open(cls, fs: HostFs, syscalls: Syscalls) -> Container:
        return cls(syscalls, _open(syscalls, fs, cls.PATH, None), cls.PATH)

    def __enter__(self) -> Container:
        return self

    def api_version(self) -> int:
        return self._ioctl("GET_API_VERSION")

    def check_extension(self, extension: int) -> bool:
        return self._ioctl("CHECK_EXTENSION", extension) > 0

    def choose_iommu(self, noiommu: bool) -> str:
        """The IOMMU model to set: NOIOMMU for a no-IOMMU group, else TYPE1v2 or TYPE1."""
        wanted = ("NOIOMMU",) if noiommu else ("TYPE1v2", "TYPE1")
        for name in wanted:
            if self.check_extension(IOMMU_TYPES[name]):
                return name
        if noiommu:
            raise VfioError(
                "the VFIO container does not offer the no-IOMMU model",
                "set vfio.enable_unsafe_noiommu_mode=1 (a vfio built with "
                "CONFIG_VFIO_NOIOMMU) before binding the device")
        raise VfioError("the VFIO container offers neither TYPE1v2 nor TYPE1 IOMMU model",
                        "load vfio_iommu_type1 (modprobe vfio_iommu_type1)")

    def set_iommu(self, model: str) -> None:
        self._ioctl("SET_IOMMU", IOMMU_TYPES[model])


class Group(_Fd):
    """/dev/vfio/N (or noiommu-N): one iommu group."""

    def __init__(self, syscalls: Syscalls, fd: int, ref: GroupRef) -> None:
        super().__init__(syscalls, fd, ref.node)
        self.ref = ref

    @classmethod
    def open(cls, fs: HostFs, syscalls: Syscalls, ref: GroupRef) -> Group:
        return cls(syscalls, _open(syscalls, fs, ref.node, ref), ref)

    def __enter__(self) -> Group:
        return self

    def status(self) -> int:
        return self._struct("GROUP_GET_STATUS")["flags"]

    def viable(self) -> bool:
        return bool(self.status() & flag_bit("group", "VIABLE"))

    def set_container(self, container: Container) -> None:
        if container.fd is None:
            raise ValueError("the container is closed")
        self._ioctl("GROUP_SET_CONTAINER", IOCTLS["GROUP_SET_CONTAINER"].pack(fd=container.fd))

    def device(self, name: str) -> DeviceFd:
        """The device's own fd (GROUP_GET_DEVICE_FD); needs SET_CONTAINER and SET_IOMMU."""
        fd = self._ioctl("GROUP_GET_DEVICE_FD", bytearray(name.encode() + b"\0"))
        return DeviceFd(self.syscalls, fd, name)


class DeviceFd(_Fd):
    """A device's VFIO file descriptor: asks about regions and IRQs, never touches their
    contents."""

    def __enter__(self) -> DeviceFd:
        return self

    def info(self) -> DeviceInfo:
        fields = self._struct("DEVICE_GET_INFO")
        return DeviceInfo(fields["flags"], fields["num_regions"], fields["num_irqs"],
                          fields["cap_offset"])

    def region(self, index: int) -> RegionInfo:
        fields = self._struct("DEVICE_GET_REGION_INFO", index=index)
        return RegionInfo(index, fields["flags"], fields["size"], fields["offset"],
                          fields["cap_offset"])

    def irq(self, index: int) -> IrqInfo:
        fields = self._struct("DEVICE_GET_IRQ_INFO", index=index)
        return IrqInfo(index, fields["flags"], fields["count"])


# ---------------------------------------------------------------- errno -> user error

def _open_error(host_path: str, group: GroupRef | None, exc: OSError) -> VfioError:
    code = exc.errno
    if group is None:  # the container
        if code == errno.ENOENT:
            return VfioError(f"{host_path} does not exist: the vfio module is not loaded",
                             "modprobe vfio (and vfio-platform or vfio-amba)", code)
        if code in (errno.EACCES, errno.EPERM):
            return VfioPermissionError(f"permission denied opening {host_path}",
                                       "run as root", code)
    elif code == errno.ENOENT or code == errno.ENODEV:
        return NotBoundError(
            f"{host_path} does not exist (iommu group {group.number}): the device is no "
            "longer bound to vfio", "run 'platform-hostdev nodedev-detach DEVICE' again", code)
    elif code in (errno.EACCES, errno.EPERM):
        if group.noiommu:
            return VfioPermissionError(
                f"permission denied opening {host_path} (a no-IOMMU group)",
                "run as root: no-IOMMU groups need CAP_SYS_RAWIO", code)
        return VfioPermissionError(f"permission denied opening {host_path}",
                                   f"run as root, or give your user access to {host_path}",
                                   code)
    elif code == errno.EBUSY:
        return VfioBusyError(
            f"{host_path} is busy: another process (a running VM?) holds iommu group "
            f"{group.number}", f"stop that process first (fuser -v {host_path})", code)
    return VfioError(f"cannot open {host_path}: {exc.strerror}", "", code)


def _ioctl_error(name: str, label: str, exc: OSError) -> VfioError:
    code = exc.errno
    what = f"VFIO {name} on {label} failed: {exc.strerror}"
    if code == errno.EBUSY:
        return VfioBusyError(f"{what} (the device or group is in use)",
                             "stop the VM or program using it, then retry", code)
    if code in (errno.EACCES, errno.EPERM):
        return VfioPermissionError(what, "run as root (no-IOMMU groups need CAP_SYS_RAWIO)",
                                   code)
    if code == errno.ENODEV:
        return NotBoundError(f"{what} (the device left vfio meanwhile)",
                             "run 'platform-hostdev nodedev-detach DEVICE' again", code)
    return VfioError(what, "", code)


# ---------------------------------------------------------------- the whole query

def _not_viable(fs: HostFs, device: VfioTarget, ref: GroupRef) -> GroupNotViableError:
    others = [f"{name} ({driver})"
              for name, driver in group_blockers(fs, ref.number, exempt={device.name})]
    listed = ", ".join(others) or "a device bound to a host driver"
    return GroupNotViableError(
        f"iommu group {ref.number} of {device.name} is not viable: {listed} "
        "still has a host driver",
        "detach every device of the group (platform-hostdev nodedev-detach DEVICE for each)")


def query(fs: HostFs, device: VfioTarget, syscalls: Syscalls | None = None) -> VfioView:
    """Open the device through VFIO and read its device, region and IRQ info."""
    syscalls = syscalls or OsSyscalls()
    ref = find_group(fs, device)
    with Container.open(fs, syscalls) as container:
        version = container.api_version()
        if version != VFIO_API_VERSION:
            raise VfioError(f"unknown VFIO API version {version} (expected {VFIO_API_VERSION})",
                            "this client speaks the container/group API of Linux >= 3.6")
        model = container.choose_iommu(ref.noiommu)
        with Group.open(fs, syscalls, ref) as group:
            if not group.viable():
                raise _not_viable(fs, device, ref)
            group.set_container(container)
            container.set_iommu(model)
            with group.device(device.name) as handle:
                info = handle.info()
                regions = tuple(handle.region(i) for i in range(info.num_regions))
                irqs = tuple(handle.irq(i) for i in range(info.num_irqs))
    return VfioView(device.name, device.bus, VFIO_DRIVERS[device.bus], ref, version, model,
                    info, regions, irqs)
