"""IOMMU groups as sysfs shows them, and the one rule for when the kernel calls a group viable.

QEMU (and our client) can use a device only through its whole IOMMU group:
GROUP_SET_CONTAINER fails, and QEMU exits with "group N is not viable", while
another member of the group is held by a host driver that does DMA through the
kernel's own IOMMU domain. The hook (before a start), check-host (before the
user tries) and the VFIO client (explaining a not-viable GROUP_GET_STATUS)
all judge a group through :func:`group_blockers`. Light on purpose: the hook
imports it on every start of a domain with platform hostdevs.
"""
from __future__ import annotations

import os
from collections.abc import Collection

from platform_hostdev.host.fs import HostFs

__all__ = ["VIABLE_DRIVERS", "blocks_viability", "group_members", "group_blockers"]

# drivers/vfio/group.c vfio_group_ioctl_get_status(): a group is VIABLE unless
# iommu_group_dma_owner_claimed() (drivers/iommu/iommu.c). Probing a driver claims
# DMA ownership of its device's group (platform_dma_configure(), amba_dma_configure(),
# pci_dma_configure() -> iommu_device_use_default_domain()) unless the driver sets
# driver_managed_dma, as the vfio drivers do (vfio-pci, vfio-platform, vfio-amba,
# vfio-fsl-mc, vfio-cdx) and pci-stub and pcieport (drivers/pci/pci-stub.c,
# drivers/pci/pcie/portdrv.c). So a member bound to vfio-pci does not spoil the
# group of a platform device, nor does a member bound to no driver. Kernels before
# 5.19 said the same in drivers/vfio/vfio.c vfio_dev_viable(): driver-less, bound to
# a vfio driver, or on vfio_dev_driver_allowed()'s list (pci-stub).
VIABLE_DRIVERS = frozenset({"vfio-platform", "vfio-amba", "vfio-pci", "vfio-fsl-mc",
                            "vfio-cdx", "pci-stub", "pcieport"})


def blocks_viability(driver: str | None) -> bool:
    """Whether a group member bound to ``driver`` (None: unbound) makes the group not viable."""
    return driver is not None and driver not in VIABLE_DRIVERS


def group_members(fs: HostFs, number: str) -> list[tuple[str, str | None]]:
    """(device name, bound driver or None) for every device of iommu group ``number``."""
    directory = f"/sys/kernel/iommu_groups/{number}/devices"
    try:
        names = sorted(os.listdir(fs.path(directory)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [(name, fs.link_name(f"{directory}/{name}/driver")) for name in names]


def group_blockers(fs: HostFs, number: str,
                   exempt: Collection[str] = ()) -> list[tuple[str, str]]:
    """(device, driver) of each member of group ``number`` that keeps it from being viable.

    ``exempt`` names members that are about to move to vfio themselves (the
    other devices of the same domain, or the device asked about).
    """
    return [(name, driver) for name, driver in group_members(fs, number)
            if name not in exempt and driver is not None and blocks_viability(driver)]
