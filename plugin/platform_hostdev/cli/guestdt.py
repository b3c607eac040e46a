"""``platform-hostdev sync DOMAIN``: (re)generate the guest device tree of a domain.

The work is :func:`platform_hostdev.sync`; this module prints the chain
(host DT -> VFIO -> guest address/SPI -> guest DT) it built.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import platform_hostdev as api
from platform_hostdev.cli.connect import add_connect_option, connection
from platform_hostdev.cli.main import Context
from platform_hostdev.cli.table import render_table

if TYPE_CHECKING:
    from platform_hostdev.guestdt.builder import GuestDevice

__all__ = ["configure", "render_chain"]


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of sync."""
    p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
    add_connect_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_sync)


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
    from platform_hostdev.virt.connection import lookup_domain

    conn = connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    result = api.sync(conn, dom, ctx.host, ctx.inventory())
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
