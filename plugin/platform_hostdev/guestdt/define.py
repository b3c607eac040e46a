"""Defining a domain with platform hostdevs, and (re)generating its guest device tree.

The library under ``define``, ``attach-device``, ``detach-device``, ``edit``
and ``sync``: each function returns what it did and prints nothing.

1. :func:`prepare_domain`: translate the user form (``domain.translate.forward``,
   devices checked on ``inventory`` when one is given) and check the emulator
   for vfio-platform through the host's QEMU probe; the warnings are returned.
2. :func:`define_domain`: define the libvirt form (libvirt validates it), then
   generate its guest DT (:func:`platform_hostdev.guestdt.sync.sync_domain`)
   and define the domain again with ``<os><dtb>`` pointing at it.
3. :func:`sync`: regenerate the guest DT of a domain already defined.

Devices can only be checked, and a guest DT only generated, when an
inventory of the host (or of its DTB) is given; the caller decides when the
host can know them (``platform_hostdev.domain.validate``'s host check rule).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from lxml import etree

from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import Translation, forward, to_string
from platform_hostdev.domain.validate import check_emulator, domain_emulator
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.store import guest_dt_store
from platform_hostdev.guestdt.sync import SyncResult, sync_domain
from platform_hostdev.host.boundary import Host
from platform_hostdev.host.inventory import Inventory
from platform_hostdev.host.processes import DumpdtbRunner
from platform_hostdev.virt.connection import (
    XML_INACTIVE,
    XML_SECURE,
    define_xml,
    libvirt_errors,
)
from platform_hostdev.virt.qemu_caps import probe, probe_properties

__all__ = ["Prepared", "DefineResult", "prepare_domain", "define_domain", "sync"]


class Prepared(NamedTuple):
    """A translated domain, ready to define, and the warnings found on the way."""

    translation: Translation
    warnings: list[str]


class DefineResult(NamedTuple):
    """A defined domain: the libvirt domain, its name, its guest DTB (or why none)."""

    domain: Any
    name: str
    guest_dt: str | None
    """The generated guest DTB, when one was generated."""
    note: str | None
    """Why no guest DT was generated although the domain needs one, or None."""


def prepare_domain(tree: etree._ElementTree, inventory: Inventory | None, host: Host, *,
                   conn: Any = None, cache: Path | None = None) -> Prepared:
    """Translate a domain in the user form and check its emulator (the module docstring).

    ``conn`` names libvirt's default emulator when the XML has no <emulator>;
    ``cache`` keeps QEMU probe results (``virt.qemu_caps.cache_dir``).
    """
    translation = forward(tree, inventory)
    warnings = list(translation.warnings)
    if translation.hostdevs:
        emulator = domain_emulator(translation.tree.getroot(), conn)
        runner = host.qemu_probe
        if emulator is not None and not os.path.exists(emulator):
            warnings.append(f"the emulator {emulator} is not on this machine; it was not "
                            "checked for vfio-platform")
        elif runner is None:
            named = f"the emulator {emulator}" if emulator else "the emulator"
            warnings.append(f"{named} was not checked for vfio-platform (this host has no "
                            "QEMU probe)")
        else:
            models = [r.model for r in translation.hostdevs if r.hostdev.iommufd]
            warnings += check_emulator(emulator, lambda e: probe(e, runner, cache),
                                       lambda e, m: probe_properties(e, m, runner, cache),
                                       models)
    return Prepared(translation, warnings)


def define_domain(conn: Any, translation: Translation, host: Host,
                  inventory: Inventory | None) -> DefineResult:
    """Define ``translation`` on ``conn``; then generate and wire in its guest DT.

    Without an inventory no guest DT is generated: ``note`` says so. A guest DT
    that cannot be generated raises HostdevError after the definition (the
    message says the domain was defined).
    """
    dom = define_xml(conn, translation.xml(), "libvirt refused the domain",
                     "fix the domain XML as libvirt's message says; nothing was changed")
    name = dom.name()
    if not translation.hostdevs:
        return DefineResult(dom, name, None, None)
    if inventory is None:
        return DefineResult(dom, name, None, (
            "no guest device tree was generated (the devices were not checked on this "
            f"host); run 'platform-hostdev sync {name}' on the host before starting the "
            "domain"))
    with libvirt_errors("cannot read the defined domain", "check the connection"):
        xml = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
    try:
        result = sync_domain(conn, parse_xml(xml, "the defined domain"), inventory,
                             guest_dt_store(host), _dumpdtb(host))
    except HostdevError as exc:
        raise HostdevError(f"domain {name} was defined, but its guest device tree cannot be "
                           f"generated: {exc.what}", exc.fix, code=exc.code, domain=name,
                           **exc.data) from None
    define_xml(conn, to_string(result.tree), "libvirt refused the domain with its guest DTB",
               f"run 'platform-hostdev sync {name}' to retry")
    return DefineResult(dom, name, result.dtb_path, None)


def sync(conn: Any, dom: Any, host: Host, inventory: Inventory) -> SyncResult:
    """Regenerate the guest DT of the defined domain ``dom`` and define it again."""
    with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
        xml = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
    tree = parse_xml(xml, "the domain XML from libvirt")
    result = sync_domain(conn, tree, inventory, guest_dt_store(host), _dumpdtb(host))
    # validated, as every definition (define_xml): the checks of define's own sync
    define_xml(conn, to_string(result.tree), "libvirt refused the domain with its guest DTB",
               "see the message; 'platform-hostdev dumpxml --raw' shows the XML")
    return result


def _dumpdtb(host: Host) -> DumpdtbRunner:
    if host.dumpdtb is None:
        raise HostdevError("this host has no way to run QEMU for its machine device tree",
                           "run the command on the libvirt host", code="emulator-failed")
    return host.dumpdtb
