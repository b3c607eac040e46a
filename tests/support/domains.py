"""Domain XML for tests: the user form and its translated (libvirt) form."""
from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from pathlib import Path

from lxml import etree
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import forward, to_string
from platform_hostdev.dt.fdt import RawNode, build_dtb
from platform_hostdev.guestdt.store import STATE_DIR, GuestDtStore, fingerprint, fingerprint_inputs

__all__ = ["user_domain", "libvirt_domain", "synced_domain"]


def user_domain(name: str, devices: Sequence[str], *, managed: bool = True,
                uuid: str | None = None, memory_mib: int = 512, vcpus: int = 1,
                extra_devices: str = "") -> str:
    """An aarch64 virt domain in the user form with one platform hostdev per device name."""
    hostdevs = "".join(
        f"""
    <hostdev mode='subsystem' type='platform' managed='{"yes" if managed else "no"}'>
      <source><device name='{d}'/></source>
    </hostdev>""" for d in devices)
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid or uuidlib.uuid5(uuidlib.NAMESPACE_URL, name)}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>{hostdevs}{extra_devices}
  </devices>
</domain>
"""


def libvirt_domain(name: str, devices: Sequence[str], **kw: object) -> bytes:
    """The translated form libvirt stores and hands to hooks."""
    tree = parse_xml(user_domain(name, devices, **kw), "test domain")  # type: ignore[arg-type]
    return to_string(forward(tree, None).tree).encode()


def synced_domain(root: Path, name: str, devices: Sequence[str], **kw: object) -> bytes:
    """The translated domain as 'platform-hostdev sync' leaves it on a host below ``root``:
    <os><dtb> pointing at the stored guest DTB, whose record holds the fingerprint."""
    tree = parse_xml(libvirt_domain(name, devices, **kw), "test domain")
    dom = tree.getroot()
    uuid = dom.findtext("uuid") or ""
    store = GuestDtStore(root / STATE_DIR.lstrip("/"))
    keys = list(devices)
    store.save(uuid, build_dtb(RawNode("")), fingerprint(dom, keys),
               fingerprint_inputs(dom, keys), [])
    os_el = dom.find("os")
    assert os_el is not None
    etree.SubElement(os_el, "dtb").text = f"{STATE_DIR}/guest-dt/{uuid}.dtb"
    return to_string(tree).encode()
