"""Domain XML for tests: the user form and its translated (libvirt) form."""
from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from pathlib import Path

from lxml import etree
from platform_hostdev.domain.domainxml import parse_domain
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.model import declared_hostdevs
from platform_hostdev.domain.translate import forward, to_string
from platform_hostdev.dt.fdt import RawNode, build_dtb
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.store import (
    STATE_DIR,
    GuestDtStore,
    fingerprint,
    fingerprint_inputs,
    inputs_match,
)

__all__ = ["user_domain", "libvirt_domain", "synced_domain", "with_guest_dt"]


def user_domain(name: str, devices: Sequence[str], *, managed: bool = True,
                uuid: str | None = None, memory_mib: int = 512, vcpus: int = 1,
                extra_devices: str = "", iommufd: Sequence[str] = ()) -> str:
    """An aarch64 virt domain in the user form with one platform hostdev per device name;
    those named in ``iommufd`` carry ``<driver iommufd='yes'/>``."""
    hostdevs = "".join(
        f"""
    <hostdev mode='subsystem' type='platform' managed='{"yes" if managed else "no"}'>
      <source><device name='{d}'/></source>{"<driver iommufd='yes'/>" if d in iommufd else ""}
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


def with_guest_dt(root: Path, xml: bytes) -> bytes:
    """``xml`` as 'platform-hostdev sync' would leave it on the host below ``root``: a
    guest DT record for exactly this XML stored, and ``<os><dtb>`` pointing at it.

    For hook tests of other concerns: the prepare hook's guest-DT check then
    passes as it does for a synced domain. XML the hook cannot read, without
    platform hostdevs, or with an ``<os><dtb>`` of its own is returned as it is
    (the hook judges it as given).
    """
    try:
        dom = parse_domain(xml)
        declared = declared_hostdevs(dom)
    except HostdevError:
        return xml
    uuid = (dom.findtext("uuid") or "").strip()
    if not declared or dom.find("os/dtb") is not None or xml.count(b"</os>") != 1:
        return xml
    keys = [h.key for h in declared]
    store = GuestDtStore(root / STATE_DIR.lstrip("/"))
    try:
        path = store.dtb_path(uuid)
        record = store.load_record(uuid)
        if not (record and path.exists() and inputs_match(record.get("inputs"), dom, keys)):
            store.save(uuid, build_dtb(RawNode("")), fingerprint(dom, keys),
                       fingerprint_inputs(dom, keys), [])
    except HostdevError:  # a malformed UUID: the hook refuses it on its own
        return xml
    return xml.replace(b"</os>", f"<dtb>{STATE_DIR}/guest-dt/{path.name}</dtb></os>".encode())
