"""The read-only VFIO client through the device cdev and iommufd (Linux 6.6+).

As QEMU's iommufd backend does (hw/vfio/iommufd.c iommufd_cdev_attach()):
open /dev/iommu, open the device's cdev /dev/vfio/devices/vfioN (found from
its sysfs ``vfio-dev/``, :mod:`platform_hostdev.vfio.cdev`),
VFIO_DEVICE_BIND_IOMMUFD (drivers/vfio/device_cdev.c
vfio_df_ioctl_bind_iommufd(): the bind opens the device; until then every
other device ioctl is refused), IOMMU_IOAS_ALLOC on /dev/iommu and
VFIO_DEVICE_ATTACH_IOMMUFD_PT of the device to that IOAS (the DMA context the
guest's memory would be mapped into), then the same DEVICE_GET_INFO /
GET_REGION_INFO / GET_IRQ_INFO queries as the group path. Closing the device
fd detaches and unbinds it; closing /dev/iommu frees the IOAS. Regions are
never read, written or mapped.

When the kernel gives the device no cdev, :func:`query_cdev` says why from
the kernel's own answers: sysfs (``vfio-dev/vfioN`` without ``dev``),
open() of the node, /proc/devices, and VFIO_DEVICE_BIND_IOMMUFD asked of the
device fd its group gives (ENOTTY from a vfio built without
CONFIG_VFIO_DEVICE_CDEV, whose vfio_df_ioctl_bind_iommufd() is the stub in
drivers/vfio/vfio.h; EINVAL from one with it: "BIND_IOMMUFD only allowed for
cdev fds").
"""
from __future__ import annotations

import errno
import os

from platform_hostdev.host.fs import HostFs
from platform_hostdev.vfio.cdev import (
    IOMMU_NODE,
    UNSAFE_INTERRUPTS_FIX,
    cdev_chrdev_registered,
    device_cdev,
)
from platform_hostdev.vfio.client import (
    Container,
    DeviceFd,
    Group,
    GroupRef,
    OsSyscalls,
    Syscalls,
    VfioError,
    VfioTarget,
    VfioView,
    _Fd,
    _open,
    find_group,
)
from platform_hostdev.vfio.uapi import IOCTLS, VFIO_API_VERSION, VFIO_DRIVERS

__all__ = ["CdevUnavailableError", "Iommufd", "CdevDevice", "query_cdev", "bind_answer"]


class CdevUnavailableError(VfioError):
    """The device cannot be opened through its vfio cdev and iommufd."""

    code = "no-cdev"


class Iommufd(_Fd):
    """/dev/iommu: an iommufd context."""

    @classmethod
    def open(cls, fs: HostFs, syscalls: Syscalls) -> Iommufd:
        try:
            fd = syscalls.open(str(fs.path(IOMMU_NODE)), os.O_RDWR)
        except OSError as exc:
            raise CdevUnavailableError(
                f"cannot open {IOMMU_NODE}: {exc.strerror}" + (
                    " (the iommufd module is not loaded, or the kernel has no CONFIG_IOMMUFD)"
                    if exc.errno == errno.ENOENT else ""),
                "modprobe iommufd, or run as root" if exc.errno != errno.ENOENT else
                "use a kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV", exc.errno) \
                from None
        return cls(syscalls, fd, IOMMU_NODE)

    def __enter__(self) -> Iommufd:
        return self

    def ioas_alloc(self) -> int:
        return self._struct("IOMMU_IOAS_ALLOC")["out_ioas_id"]


class CdevDevice(DeviceFd):
    """A device opened through its cdev: bind it to an iommufd before anything else."""

    def __enter__(self) -> CdevDevice:
        return self

    def bind(self, iommufd: Iommufd) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD; EPERM is iommufd_device_bind()'s interrupt isolation
        refusal (drivers/iommu/iommufd/device.c): said so, with the fix."""
        assert iommufd.fd is not None
        try:
            return self._struct("DEVICE_BIND_IOMMUFD", iommufd=iommufd.fd)["out_devid"]
        except VfioError as exc:
            if exc.errno != errno.EPERM:
                raise
            raise CdevUnavailableError(
                f"VFIO_DEVICE_BIND_IOMMUFD on {self.label} failed: EPERM: the platform "
                "cannot isolate the device's interrupts and iommufd's allow_unsafe_interrupts "
                "is off (drivers/iommu/iommufd/device.c iommufd_device_bind())",
                UNSAFE_INTERRUPTS_FIX, exc.errno) from None

    def attach(self, pt_id: int) -> int:
        return self._struct("DEVICE_ATTACH_IOMMUFD_PT", pt_id=pt_id)["pt_id"]


def _errno_name(code: int | None) -> str:
    if code is None:
        return "no answer"
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def bind_answer(fs: HostFs, ref: GroupRef, name: str, syscalls: Syscalls) -> str:
    """What the kernel answers to VFIO_DEVICE_BIND_IOMMUFD on the device fd its group gives
    (the group path as :func:`~platform_hostdev.vfio.client.query` opens it)."""
    try:
        with Container.open(fs, syscalls) as container:
            model = container.choose_iommu(ref.noiommu)
            with Group.open(fs, syscalls, ref) as group:
                group.set_container(container)
                container.set_iommu(model)
                with group.device(name) as handle:
                    buffer = IOCTLS["DEVICE_BIND_IOMMUFD"].pack(iommufd=container.fd or 0)
                    assert handle.fd is not None
                    try:
                        syscalls.ioctl(handle.fd, IOCTLS["DEVICE_BIND_IOMMUFD"].number, buffer)
                    except OSError as exc:
                        return _errno_name(exc.errno)
                    return "success"
    except VfioError as exc:
        return f"not asked: {exc.what}"


def _unavailable(fs: HostFs, device: VfioTarget, ref: GroupRef, syscalls: Syscalls) -> \
        CdevUnavailableError:
    base = f"/sys/bus/{device.bus}/devices/{device.name}"
    cdev = device_cdev(fs, base, ref.number)
    answers = []
    if cdev.name is not None:
        node = f"/dev/vfio/devices/{cdev.name}"
        answers.append(f"{base}/vfio-dev/{cdev.name} has no dev attribute")
        try:
            syscalls.close(syscalls.open(str(fs.path(node)), os.O_RDWR))
            answers.append(f"open({node}) succeeded")
        except OSError as exc:
            answers.append(f"open({node}): {_errno_name(exc.errno)}")
    registered = cdev_chrdev_registered(fs)
    if registered is not None:
        answers.append("/proc/devices " + ("lists" if registered else "has no") + " vfio-dev")
    answers.append(f"{IOMMU_NODE} " + ("exists" if fs.path(IOMMU_NODE).exists()
                                        else "does not exist"))
    answers.append("VFIO_DEVICE_BIND_IOMMUFD on the device fd of group "
                   f"{ref.number}: {bind_answer(fs, ref, device.name, syscalls)}")
    reason = cdev.reason
    if registered is False and "no-IOMMU" in reason:
        reason += ("; and this kernel has no vfio cdev at all (no vfio-dev in /proc/devices: "
                   "vfio built without CONFIG_VFIO_DEVICE_CDEV)")
    return CdevUnavailableError(
        f"{device.name} cannot be opened through a vfio cdev: {reason}. The kernel's "
        f"answers: {'; '.join(answers)}",
        "inspect it through its group (drop --backend iommufd); the iommufd backend needs a "
        "device behind an IOMMU and a kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV")


def query_cdev(fs: HostFs, device: VfioTarget, syscalls: Syscalls | None = None) -> VfioView:
    """Open the device through its cdev and iommufd and read its device, region, IRQ info."""
    syscalls = syscalls or OsSyscalls()
    ref = find_group(fs, device)
    base = f"/sys/bus/{device.bus}/devices/{device.name}"
    cdev = device_cdev(fs, base, ref.number)
    if cdev.node is None:
        raise _unavailable(fs, device, ref, syscalls)
    with Iommufd.open(fs, syscalls) as iommufd:
        with CdevDevice(syscalls, _open(syscalls, fs, cdev.node, ref), cdev.node) as handle:
            handle.bind(iommufd)
            handle.attach(iommufd.ioas_alloc())
            info = handle.info()
            regions = tuple(handle.region(i) for i in range(info.num_regions))
            irqs = tuple(handle.irq(i) for i in range(info.num_irqs))
    return VfioView(device.name, device.bus, VFIO_DRIVERS[device.bus], ref, VFIO_API_VERSION,
                    "iommufd", info, regions, irqs, backend="iommufd", cdev=cdev.node)
