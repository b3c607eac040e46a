"""libvirt nodedev-style XML for a platform or amba device.

Shaped like ``virsh nodedev-dumpxml`` output for PCI devices (name, path,
parent, driver, one capability), with the capability carrying what a
platform device has instead of a PCI address: its DT path and compatibles,
IOMMU group, and the regions and interrupts VFIO will expose.
"""
from __future__ import annotations

from lxml import etree

from platform_hostdev.host.inventory import Device, nodedev_name
from platform_hostdev.vfio.correlate import Correlation

__all__ = ["nodedev_xml"]


def nodedev_xml(device: Device, correlation: Correlation | None) -> str:
    root = etree.Element("device")
    etree.SubElement(root, "name").text = device.nodedev_name
    if device.sysfs_path:
        etree.SubElement(root, "path").text = device.sysfs_path
    etree.SubElement(root, "parent").text = (
        nodedev_name("platform", device.parent) if device.parent else "computer")
    if device.driver:
        driver = etree.SubElement(root, "driver")
        etree.SubElement(driver, "name").text = device.driver
    cap = etree.SubElement(root, "capability", type=device.bus)
    etree.SubElement(cap, "name").text = device.name
    if device.dt_path:
        dt = etree.SubElement(cap, "devicetree", path=device.dt_path)
        for compatible in device.compatible:
            etree.SubElement(dt, "compatible").text = compatible
        for alias in device.aliases:
            etree.SubElement(dt, "alias", name=alias)
    if device.driver_override:
        etree.SubElement(cap, "driverOverride").text = device.driver_override
    if device.iommu_group is not None:
        etree.SubElement(cap, "iommuGroup", number=device.iommu_group)
    if correlation is not None:
        for region in correlation.regions:
            etree.SubElement(cap, "region", index=str(region.index),
                             start=f"0x{region.cpu_address:x}", size=f"0x{region.size:x}",
                             mmap="yes" if region.mmap else "no")
        for irq in correlation.irqs:
            attrs = {"index": str(irq.index), "controller": irq.controller}
            if irq.kind is not None and irq.number is not None:
                attrs.update(type=irq.kind.lower(), number=str(irq.number))
            if irq.trigger:
                attrs["trigger"] = irq.trigger
            etree.SubElement(cap, "irq", attrs)
        etree.SubElement(cap, "passthrough", verdict=correlation.verdict)
    return etree.tostring(root, pretty_print=True, encoding="unicode")
