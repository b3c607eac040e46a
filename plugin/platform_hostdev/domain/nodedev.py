"""libvirt nodedev-style XML for a platform or amba device.

Shaped like ``virsh nodedev-dumpxml`` output for PCI devices (name, path,
parent, driver, one capability), with the capability carrying what a
platform device has instead of a PCI address: its DT path and compatibles,
IOMMU group, and the regions and interrupts VFIO will expose.

The kernel's device links of the device (libvirt has no element for them)
are ``<devlinks>`` in the capability, one element per link, named for what
the other end is to this device::

    <devlinks>
      <supplier name='platform_3f101000_cprman' device='3f101000.cprman' bus='platform'
                driver='bcm2835-clk' status='active'/>
      <consumer name='platform_leds' device='leds' bus='platform' status='available'
                syncStateOnly='yes'/>
      <unbinds name='amba_3f201000_serial' device='3f201000.serial' bus='amba'
               driver='uart-pl011' via='3f101000.cprman'/>
    </devlinks>

``name`` is the other end's nodedev name (as ``<parent>`` names a device),
``device`` and ``bus`` its sysfs name and bus, ``driver`` its driver now
(absent when it has none), ``status`` the link's /sys/class/devlink status,
``syncStateOnly='yes'`` a SYNC_STATE_ONLY link. ``<unbinds>`` lists every
device whose driver the kernel releases when this one is unbound
(transitively; ``via`` the chain before it, space separated).

Names and strings from the device tree and sysfs are written through
:func:`~platform_hostdev.errors.printable`: a control character or a
non-character such as U+FFFE (which XML 1.0 cannot carry) appears as its
escape (``\\x1b``, ``\\ufffe``), so the document is always well-formed.
"""
from __future__ import annotations

from lxml import etree

from platform_hostdev.errors import printable as _x
from platform_hostdev.host.devlinks import LinkView
from platform_hostdev.host.inventory import Device, nodedev_name
from platform_hostdev.vfio.correlate import Correlation

__all__ = ["nodedev_xml"]


def nodedev_xml(device: Device, correlation: Correlation | None,
                links: LinkView | None = None) -> str:
    root = etree.Element("device")
    etree.SubElement(root, "name").text = _x(device.nodedev_name)
    if device.sysfs_path:
        etree.SubElement(root, "path").text = _x(device.sysfs_path)
    etree.SubElement(root, "parent").text = _x(
        nodedev_name("platform", device.parent) if device.parent else "computer")
    if device.driver:
        driver = etree.SubElement(root, "driver")
        etree.SubElement(driver, "name").text = _x(device.driver)
    cap = etree.SubElement(root, "capability", type=device.bus)
    etree.SubElement(cap, "name").text = _x(device.name)
    if device.dt_path:
        dt = etree.SubElement(cap, "devicetree", path=_x(device.dt_path))
        for compatible in device.compatible:
            etree.SubElement(dt, "compatible").text = _x(compatible)
        for alias in device.aliases:
            etree.SubElement(dt, "alias", name=_x(alias))
    if device.driver_override:
        etree.SubElement(cap, "driverOverride").text = _x(device.driver_override)
    if device.iommu_group is not None:
        etree.SubElement(cap, "iommuGroup", number=_x(device.iommu_group))
    if correlation is not None:
        for region in correlation.regions:
            etree.SubElement(cap, "region", index=str(region.index),
                             start=f"0x{region.cpu_address:x}", size=f"0x{region.size:x}",
                             mmap="yes" if region.mmap else "no")
        for irq in correlation.irqs:
            attrs = {"index": str(irq.index), "controller": _x(irq.controller)}
            if irq.kind is not None and irq.number is not None:
                attrs.update(type=irq.kind.lower(), number=str(irq.number))
            if irq.trigger:
                attrs["trigger"] = irq.trigger
            etree.SubElement(cap, "irq", attrs)
        etree.SubElement(cap, "passthrough", verdict=correlation.verdict)
    if links is not None and (links.suppliers or links.consumers):
        element = etree.SubElement(cap, "devlinks")
        for link in [*links.suppliers, *links.consumers]:
            attrs = {"name": _x(nodedev_name(link.bus, link.name)), "device": _x(link.name),
                     "bus": link.bus}
            if link.driver:
                attrs["driver"] = _x(link.driver)
            attrs["status"] = _x(link.status)
            if link.sync_state_only:
                attrs["syncStateOnly"] = "yes"
            etree.SubElement(element, link.role, attrs)
        for dependent in links.dependents:
            etree.SubElement(element, "unbinds", {
                "name": _x(nodedev_name(dependent.bus, dependent.name)),
                "device": _x(dependent.name), "bus": dependent.bus,
                "driver": _x(dependent.driver), "via": _x(" ".join(dependent.chain[:-1]))})
    return etree.tostring(root, pretty_print=True, encoding="unicode")
