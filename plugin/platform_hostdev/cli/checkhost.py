"""``platform-hostdev check-host [DOMAIN|FILE] [--json] [-c URI]``.

In the spirit of virt-host-validate: one ``PASS|WARN|FAIL: <check>: <finding>``
line per check, each WARN/FAIL followed by its fix; ``--json`` prints a list of
``{check, status, finding, fix}``. Exit 0 when no check FAILs, 1 otherwise.
FILE is a domain XML in the user or the translated form; anything that is not
an existing file is a domain name or UUID on the libvirt connection.

Boundaries from ``ctx.extras`` when a test injects them: ``sysfs`` and
``runner`` (argv -> stdout, raising HostdevError: ``modprobe -n`` and the
QEMU probe); otherwise the live host's for root ``/`` and no runner for other
roots. ``ctx.conn`` is the libvirt connection when given.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from lxml import etree

from platform_hostdev.checkhost.conf import load_qemu_conf, qemu_conf_checks, security_checks
from platform_hostdev.checkhost.devices import device_checks, guest_check, requested_hostdevs
from platform_hostdev.checkhost.model import (
    FAIL,
    WARN,
    Check,
    exit_code,
    hook_checks,
    memory_check,
    module_checks,
    qemu_check,
)
from platform_hostdev.cli.main import Context
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import forward
from platform_hostdev.domain.validate import domain_emulator
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import DT_BASE, HostFs
from platform_hostdev.virt.connection import (
    default_uri,
    libvirt_errors,
    lookup_domain,
    open_connection,
)
from platform_hostdev.virt.qemu_caps import Runner, cache_dir, probe, run_process

__all__ = ["register", "run_checks"]


def register(sub: Any) -> None:
    p = sub.add_parser("check-host", help="check this host for platform-device passthrough "
                       "(like virt-host-validate)")
    p.add_argument("target", nargs="?", metavar="DOMAIN|FILE",
                   help="also check a domain (name or UUID) or a domain XML file")
    p.add_argument("-c", "--connect", metavar="URI", default=None,
                   help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")
    p.add_argument("--json", action="store_true", help="a list of {check, status, finding, fix}")
    p.set_defaults(handler=cmd_check_host)


def _domain_xml(args: argparse.Namespace, ctx: Context) -> etree._ElementTree:
    if os.path.isfile(args.target):
        try:
            data = Path(args.target).read_bytes()
        except OSError as exc:
            raise HostdevError(f"cannot read {args.target}: {exc.strerror}",
                               "check the file name") from None
        return parse_xml(data, args.target)
    if ctx.conn is None:
        ctx.conn = open_connection(args.connect or default_uri(ctx.env))
    dom = lookup_domain(ctx.conn, args.target)
    with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
        xml = dom.XMLDesc(0)
    return parse_xml(xml, f"the XML of domain {args.target}")


def run_checks(fs: HostFs, runner: Runner | None, tree: etree._ElementTree | None,
               ctx: Context) -> list[Check]:
    """Every check, in the order printed; ``tree`` is the domain XML when one was given."""
    checks = module_checks(fs, runner)
    groups: list[str] = []
    emulator = None
    if tree is not None:
        hostdevs, parsed = requested_hostdevs(tree)
        checks += parsed
        root = tree.getroot()
        checks.append(guest_check(root))
        if not fs.path("/" + DT_BASE).is_dir():
            checks.append(Check("device tree", FAIL, f"/{DT_BASE} is missing: this host was "
                                "not booted with a device tree, so it has no platform devices "
                                "to pass through", "run check-host on the DT-booted arm64 host"))
        elif hostdevs:
            inventory = ctx.inventory()
            found, groups = device_checks(fs, inventory, hostdevs)
            checks += found
            try:
                root = forward(tree, inventory).tree.getroot()
            except HostdevError:
                pass  # already reported by the checks above; judge the XML as given
        if hostdevs:
            checks.append(memory_check(root))
        try:
            emulator = domain_emulator(root, ctx.conn)
        except HostdevError as exc:
            checks.append(Check("QEMU vfio-platform", FAIL, exc.what, exc.fix))
    emulator = emulator or shutil.which("qemu-system-aarch64")
    if runner is None:
        checks.append(Check("QEMU vfio-platform", WARN, f"{emulator or 'the emulator'} was not "
                            "probed (no process runner for a host below --root)",
                            "run check-host on the host itself"))
    else:
        cache = cache_dir(ctx.env, os.geteuid() == 0)
        checks.append(qemu_check(emulator, lambda e: probe(e, runner, cache)))
    conf = load_qemu_conf(fs)
    checks += qemu_conf_checks(fs, conf, groups, tree is not None)
    checks += security_checks(fs, conf)
    checks += hook_checks(fs)
    return checks


def cmd_check_host(args: argparse.Namespace, ctx: Context) -> int:
    fs = ctx.extras.get("sysfs") or HostFs(ctx.root)
    live = os.path.realpath(fs.root) == "/"
    runner: Runner | None = ctx.extras.get("runner") or (run_process if live else None)
    tree = _domain_xml(args, ctx) if args.target else None
    checks = run_checks(fs, runner, tree, ctx)
    if args.json:
        ctx.print_json([c.to_json() for c in checks])
    else:
        for check in checks:
            for line in check.lines():
                ctx.print(line)
    return exit_code(checks)

