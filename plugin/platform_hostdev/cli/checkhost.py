"""``platform-hostdev check-host [DOMAIN|FILE] [--json] [-c URI]``.

In the spirit of virt-host-validate: one ``PASS|WARN|FAIL: <check>: <finding>``
line per check, each WARN/FAIL followed by its fix; ``--json`` prints a list of
``{check, status, finding, fix}``. Exit 0 when no check FAILs, 1 otherwise.
FILE is a domain XML in the user or the translated form; anything that is not
an existing file is a domain name or UUID on the libvirt connection.

The checks are :func:`platform_hostdev.check_host` on the context's host
(modprobe and the QEMU probe through it); ``ctx.conn`` is the libvirt
connection when given.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

import platform_hostdev as api
from platform_hostdev.cli.connect import add_connect_option, connection
from platform_hostdev.cli.main import Context

if TYPE_CHECKING:
    from lxml import etree

__all__ = ["configure"]


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of check-host."""
    p.add_argument("target", nargs="?", metavar="DOMAIN|FILE",
                   help="also check a domain (name or UUID) or a domain XML file")
    add_connect_option(p)
    p.add_argument("--json", action="store_true", help="a list of {check, status, finding, fix}")
    p.set_defaults(handler=cmd_check_host)


def _domain_xml(args: argparse.Namespace, ctx: Context) -> etree._ElementTree:
    from platform_hostdev.virt.connection import libvirt_errors, lookup_domain

    if os.path.isfile(args.target):
        try:
            data = Path(args.target).read_bytes()
        except OSError as exc:
            raise api.HostdevError(f"cannot read {args.target}: {exc.strerror}",
                                   "check the file name", code="file-unreadable",
                                   path=args.target) from None
        return api.parse_xml(data, args.target)
    dom = lookup_domain(connection(args, ctx), args.target)
    with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
        xml = dom.XMLDesc(0)
    return api.parse_xml(xml, f"the XML of domain {args.target}")


def cmd_check_host(args: argparse.Namespace, ctx: Context) -> int:
    from platform_hostdev.checkhost.model import exit_code
    from platform_hostdev.virt.qemu_caps import cache_dir

    tree = _domain_xml(args, ctx) if args.target else None
    checks = api.check_host(ctx.host, tree, conn=ctx.conn,
                            cache=cache_dir(ctx.env, os.geteuid() == 0),
                            inventory=ctx.inventory)
    if args.json:
        ctx.print_json([c.to_json() for c in checks])
    else:
        for check in checks:
            for line in check.lines():
                ctx.print(line)
    return exit_code(checks)
