"""The vfio device cdev (/dev/vfio/devices/vfioN) and /dev/iommu, as the kernel shows them.

Linux 6.6+ with CONFIG_VFIO_DEVICE_CDEV (drivers/vfio/Kconfig, which needs
IOMMUFD) gives every device registered with vfio a char device besides its
group: vfio_device_add() (drivers/vfio/vfio.h) adds the ``vfioN`` device of
class ``vfio-dev`` below the physical device, so sysfs shows
``<device>/vfio-dev/vfioN``; with the cdev it is added by cdev_device_add()
and has a ``dev`` attribute (MAJ:MIN of the region drivers/vfio/device_cdev.c
vfio_cdev_init() allocates under the name ``vfio-dev``, listed in
/proc/devices), and devtmpfs names its node ``vfio/devices/vfioN``
(vfio_device_devnode()). Without CONFIG_VFIO_DEVICE_CDEV the device is added
with device_add() alone: ``vfioN`` is there, ``dev`` is not. On 6.12 the same
holds for a no-IOMMU device even with the cdev configured ("cdev does not
support noiommu device", vfio_device_add()), so such a device cannot be bound
to an iommufd at all.

/dev/iommu is the misc device of drivers/iommu/iommufd/main.c
(iommufd_misc_dev, module iommufd). Its module parameter
``allow_unsafe_interrupts`` (drivers/iommu/iommufd/device.c) lets a device bind
although the platform cannot isolate MSIs (iommufd_group_setup_msi());
vfio_iommu_type1 has its own parameter of the same name for the legacy path.

Light on purpose: the hook imports it when a domain uses the iommufd backend.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from platform_hostdev.host.fs import HostFs, is_noiommu

__all__ = ["IOMMU_NODE", "CDEV_DIR", "CDEV_CHRDEV", "IOMMUFD_UNSAFE_INTERRUPTS",
           "UNSAFE_INTERRUPTS_RISK", "UNSAFE_INTERRUPTS_FIX",
           "DeviceCdev", "device_cdev", "cdev_chrdev_registered"]

IOMMU_NODE = "/dev/iommu"
CDEV_DIR = "/dev/vfio/devices"
CDEV_CHRDEV = "vfio-dev"
"""The name vfio_cdev_init() registers its char device region under (/proc/devices)."""
IOMMUFD_UNSAFE_INTERRUPTS = "/sys/module/iommufd/parameters/allow_unsafe_interrupts"
UNSAFE_INTERRUPTS_RISK = ("a DMA write of the device can then raise interrupts outside its "
                          "domain")
UNSAFE_INTERRUPTS_FIX = (
    f"echo Y > {IOMMUFD_UNSAFE_INTERRUPTS} (now), and echo 'options iommufd "
    "allow_unsafe_interrupts=1' > /etc/modprobe.d/iommufd.conf (at boot; "
    f"iommufd.allow_unsafe_interrupts=1 on the kernel command line if built in). Risk: "
    f"{UNSAFE_INTERRUPTS_RISK}; or keep the legacy backend (vfio_iommu_type1 asks the same "
    "of its own allow_unsafe_interrupts)")


class DeviceCdev(NamedTuple):
    """A device's vfio cdev: its name and node when it has one, else why not."""

    name: str | None          # vfioN, when the device is registered with vfio
    node: str | None          # /dev/vfio/devices/vfioN, when the kernel made a cdev
    reason: str               # "" when ``node`` is set: why there is none


def device_cdev(fs: HostFs, device_dir: str, group: str | None = None) -> DeviceCdev:
    """The cdev of the device at sysfs ``device_dir`` (host path); ``group`` its IOMMU group."""
    listing = fs.path(f"{device_dir}/vfio-dev")
    names = sorted(n for n in os.listdir(listing) if n.startswith("vfio")) \
        if listing.is_dir() else []
    if not names:
        return DeviceCdev(None, None, f"{device_dir}/vfio-dev does not exist: the device is "
                          "not bound to a vfio driver")
    name = names[0]
    if fs.read_text(f"{device_dir}/vfio-dev/{name}/dev") is None:
        if is_noiommu(fs, group):
            return DeviceCdev(name, None, (
                f"{name} has no char device: the device is in a no-IOMMU group, and the "
                "kernel gives no-IOMMU devices no vfio cdev (drivers/vfio/vfio.h "
                "vfio_device_add(): 'cdev does not support noiommu device'), so it cannot "
                "be bound to an iommufd"))
        return DeviceCdev(name, None, (
            f"{name} has no char device: the kernel is built without "
            "CONFIG_VFIO_DEVICE_CDEV (drivers/vfio/Kconfig)"))
    node = f"{CDEV_DIR}/{name}"
    if not fs.path(node).exists():
        return DeviceCdev(name, None, f"{node} does not exist although sysfs shows the cdev: "
                          "is devtmpfs mounted on /dev?")
    return DeviceCdev(name, node, "")


def cdev_chrdev_registered(fs: HostFs) -> bool | None:
    """Whether the running kernel registered the vfio cdev region (/proc/devices);
    None when vfio is not loaded (nothing can be told)."""
    if not fs.path("/sys/module/vfio").is_dir():
        return None
    text = fs.read_text("/proc/devices") or ""
    chars = text.split("Block devices:", 1)[0]
    return any(line.split()[1:2] == [CDEV_CHRDEV] for line in chars.splitlines())
