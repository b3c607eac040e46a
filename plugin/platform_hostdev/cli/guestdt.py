"""``platform-hostdev sync DOMAIN``: (re)generate the guest device tree of a domain."""
from __future__ import annotations

import argparse
from typing import Any

from platform_hostdev.cli.main import Context
from platform_hostdev.cli.table import render_table
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import to_string
from platform_hostdev.guestdt.builder import GuestDevice
from platform_hostdev.guestdt.store import STATE_DIR, GuestDtStore
from platform_hostdev.host.fs import HostFs
from platform_hostdev.virt.connection import (
    XML_INACTIVE,
    XML_SECURE,
    default_uri,
    define_domain,
    libvirt_errors,
    lookup_domain,
    open_connection,
)

__all__ = ["register", "render_chain", "store_for"]


def register(sub: Any) -> None:
    p = sub.add_parser("sync", help="generate the guest device tree of a domain with platform "
                                    "hostdevs (run after changing memory, CPUs, machine or "
                                    "devices)")
    p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt connection URI")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_sync)


def store_for(ctx: Context) -> GuestDtStore:
    return GuestDtStore(HostFs(ctx.root).path(STATE_DIR))


def render_chain(devices: list[GuestDevice] | list[dict[str, Any]]) -> str:
    """host DT path -> VFIO region/IRQ -> guest address/SPI -> guest DT path, per device."""
    rows = []
    for dev in devices:
        d = dev if isinstance(dev, dict) else dev.__dict__
        for r in d["regions"]:
            r = r if isinstance(r, dict) else r.__dict__
            rows.append([d["name"], d["host_path"], f"region {r['vfio_index']}",
                         f"0x{r['host_address']:x}+0x{r['size']:x}",
                         f"0x{r['guest_address']:x}", d["guest_path"]])
        for i in d["irqs"]:
            i = i if isinstance(i, dict) else i.__dict__
            rows.append([d["name"], d["host_path"], f"irq {i['vfio_index']}", i["host_line"],
                         f"SPI {i['guest_spi']} {i['trigger']}", d["guest_path"]])
    return render_table(["DEVICE", "HOST DT PATH", "VFIO", "HOST", "GUEST", "GUEST DT PATH"],
                        rows)


def cmd_sync(args: argparse.Namespace, ctx: Context) -> int:
    from platform_hostdev.guestdt.sync import sync_domain

    conn = ctx.conn or open_connection(args.connect or default_uri(ctx.env))
    dom = lookup_domain(conn, args.domain)
    with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
        xml = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
    tree = parse_xml(xml, "the domain XML from libvirt")
    result = sync_domain(conn, tree, ctx.inventory(), store_for(ctx))
    # validated, as every definition (define_domain): the same checks as define's own sync
    define_domain(conn, to_string(result.tree), "libvirt refused the domain with its guest DTB",
                  "see the message; 'platform-hostdev dumpxml --raw' shows the XML")
    if args.json:
        ctx.print_json({"domain": dom.name(), "dtb": result.dtb_path,
                        "fingerprint": result.fingerprint,
                        "devices": [d.__dict__ | {"regions": [r.__dict__ for r in d.regions],
                                                  "irqs": [i.__dict__ for i in d.irqs]}
                                    for d in result.devices]})
        return 0
    if result.dtb_path is None:
        ctx.print(f"Domain '{dom.name()}' needs no generated device tree (QEMU builds its "
                  "platform device nodes itself)")
        return 0
    ctx.print(f"Domain '{dom.name()}' boots with the generated device tree {result.dtb_path}")
    ctx.print(render_chain(result.devices))
    for dev in result.devices:
        for note in dev.notes:
            ctx.print(f"note: {dev.name}: {note}")
    return 0
