"""Generate a domain's guest DTB through libvirt and wire it in with ``<os><dtb>``.

sync = (1) the domain's platform hostdevs in command-line order, resolved and
correlated on the host; (2) libvirt's own QEMU command line for the domain
(``domainXMLToNative``) reduced to what shapes the DT, run with ``dumpdtb``;
(3) our nodes added (guestdt); (4) the DTB and its fingerprint stored under
/var/lib/platform-hostdev/guest-dt/<uuid>.dtb and ``<os><dtb>`` pointed at it.
A domain whose devices QEMU builds nodes for itself (xgmac, xgbe) needs no DTB;
ours is then removed again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from platform_hostdev.domain.model import declared_hostdevs
from platform_hostdev.domain.rules import refuse_acpi
from platform_hostdev.domain.translate import to_string
from platform_hostdev.dt.fdt import build_dtb, parse_dtb
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.builder import GuestDevice, build_guest_tree
from platform_hostdev.guestdt.platform_bus import BusDevice
from platform_hostdev.guestdt.store import GuestDtStore, fingerprint, fingerprint_inputs
from platform_hostdev.host.inventory import Inventory
from platform_hostdev.host.processes import DumpdtbRunner, run_dumpdtb
from platform_hostdev.vfio.correlate import Correlation, correlate
from platform_hostdev.virt.connection import libvirt_errors
from platform_hostdev.virt.dumpdtb import dt_relevant_args, dump_dtb, split_native
from platform_hostdev.virt.qemu_nodes import needs_guest_dtb

__all__ = ["SyncResult", "other_bus_devices", "sync_domain", "TPM_TIS_SIZE"]

TPM_TIS_SIZE = 0x5000  # hw/tpm/tpm_tis_sysbus.c: TPM_TIS_ADDR_SIZE


@dataclass
class SyncResult:
    """A domain's XML with ``<os><dtb>`` set (or removed), its guest DTB and what it holds."""

    tree: etree._ElementTree          # the domain XML with <os><dtb> set or removed
    dtb_path: str | None
    devices: list[GuestDevice] = field(default_factory=list)
    fingerprint: str | None = None


def other_bus_devices(root: etree._Element) -> list[BusDevice]:
    """Dynamic sysbus devices libvirt puts before ours on QEMU's command line."""
    devices = []
    for tpm in root.findall("devices/tpm"):
        if tpm.get("model") in ("tpm-tis", None):
            devices.append(BusDevice("tpm-tis-device", (TPM_TIS_SIZE,), 1))
        else:
            raise HostdevError(f"TPM model {tpm.get('model')!r} is not modelled on the platform "
                               "bus", "use model='tpm-tis' or remove the TPM",
                               code="guest-dt-failed")
    return devices


def _set_dtb(root: etree._Element, path: str | None, ours: str) -> None:
    os_el = root.find("os")
    if os_el is None:
        raise HostdevError("the domain XML has no <os>", "libvirt always writes one",
                           code="xml-invalid")
    dtb = os_el.find("dtb")
    if path is None:
        if dtb is not None and (dtb.text or "").strip() == ours:
            os_el.remove(dtb)
        return
    if dtb is None:
        dtb = etree.SubElement(os_el, "dtb")
        dtb.tail = os_el[-2].tail if len(os_el) > 1 else None
    elif (dtb.text or "").strip() not in ("", ours):
        raise HostdevError(f"the domain already boots with its own DTB {dtb.text}",
                           "remove <os><dtb>: platform-hostdev generates the guest device tree",
                           code="guest-dt-failed")
    dtb.text = path


def sync_domain(conn: Any, tree: etree._ElementTree, inventory: Inventory,
                store: GuestDtStore, dumpdtb: DumpdtbRunner = run_dumpdtb) -> SyncResult:
    """(Re)generate the guest DTB of a translated domain; returns the updated XML.

    The DTB is stored in ``store``; the XML is not defined (the caller does it).
    ``dumpdtb`` runs QEMU (the host's dumpdtb runner).
    """
    root = tree.getroot()
    refuse_acpi(root)
    uuid = (root.findtext("uuid") or "").strip()
    # the prepare hook's reader (on its own tree): the fingerprint's device keys are the same
    hostdevs = declared_hostdevs(root)
    correlations: list[Correlation] = []
    for h in hostdevs:
        spec = h.name or h.dt_path
        assert spec is not None  # the schema requires one
        correlations.append(correlate(inventory.tree, inventory.resolve(spec),
                                      inventory.page_size()))
    ours = str(store.dtb_path(uuid)) if uuid else ""
    if not correlations or not needs_guest_dtb([c.compatible for c in correlations]):
        _set_dtb(root, None, ours)
        if uuid:
            store.remove(uuid)
        return SyncResult(tree, None)
    if not uuid:
        raise HostdevError("the domain has no <uuid> yet", "define it first, then sync",
                           code="xml-invalid")
    _set_dtb(root, None, ours)  # libvirt's -dtb must not feed the dump
    with libvirt_errors("libvirt could not build the domain's QEMU command line",
                        "check the domain with 'virsh domxml-to-native qemu-argv'"):
        native = conn.domainXMLToNative("qemu-argv", to_string(tree), 0)
    emulator, args = split_native(native)
    blob = dump_dtb(emulator, dt_relevant_args(args), dumpdtb)
    base = parse_dtb(blob, "QEMU's dumpdtb")
    guest = build_guest_tree(base, inventory.tree, correlations, other_bus_devices(root))
    keys = [h.key for h in hostdevs]
    print_ = fingerprint(root, keys)
    path = store.save(uuid, build_dtb(guest.root), print_, fingerprint_inputs(root, keys),
                      guest.devices)
    _set_dtb(root, str(path), ours)
    return SyncResult(tree, str(path), guest.devices, print_)
