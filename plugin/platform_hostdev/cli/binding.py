"""Binding commands: nodedev-detach, nodedev-reattach, recover.

Output follows virsh: "Device ff0e0000.ethernet detached", "Device
9030000.pl061 re-attached". Exit 0 on success, 1 when refused or failed (the
message says what was found, the hint how to fix it; the device is back in
its original state unless the message says otherwise).

Boundaries come from ``ctx.extras`` when a test injects them: ``sysfs`` (a
:class:`~platform_hostdev.host.fs.HostFs`, e.g. a fake kernel), ``waiter``,
``runner``; otherwise the live host's (pyudev uevents, modprobe) for root
``/`` and no process runner for other roots.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import (
    DEFAULT_TIMEOUT,
    Runner,
    detach,
    reattach,
    subprocess_runner,
)
from platform_hostdev.cli.main import Context
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.protection import refuse_if_host_uses
from platform_hostdev.host.uevents import Waiter, default_waiter

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("nodedev-detach", help="bind a device to vfio-platform / vfio-amba")
    p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
    p.add_argument("--force", action="store_true",
                   help="skip the host-use (console, mounts, default route), IOMMU and "
                   "reset-handler checks and let the kernel decide")
    _common(p)
    p.set_defaults(handler=cmd_nodedev_detach)

    p = sub.add_parser("nodedev-reattach", help="give a detached device back to its driver")
    p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
    _common(p)
    p.set_defaults(handler=cmd_nodedev_reattach)

    p = sub.add_parser("recover", help="restore devices an interrupted detach/reattach left")
    _common(p)
    p.set_defaults(handler=cmd_recover)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for each bind/unbind (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _boundaries(ctx: Context) -> tuple[HostFs, Journal, Waiter, Runner | None]:
    fs = ctx.extras.get("sysfs") or HostFs(ctx.root)
    waiter = ctx.extras.get("waiter") or default_waiter(fs)
    live = os.path.realpath(fs.root) == "/"
    runner = ctx.extras.get("runner") or (subprocess_runner if live else None)
    return fs, Journal(fs), waiter, runner


def cmd_nodedev_detach(args: argparse.Namespace, ctx: Context) -> int:
    device = ctx.inventory().resolve(args.device)
    fs, journal, waiter, runner = _boundaries(ctx)
    for use in refuse_if_host_uses(fs, device, args.force):
        print(f"warning: --force: {device.name} {use.detail}", file=ctx.err)
    result = detach(fs, device, journal, waiter, runner, force=args.force,
                    timeout=args.timeout)
    if args.json:
        ctx.print_json(result._asdict())
    else:
        ctx.print(f"Device {result.device} detached")
    return 0


def cmd_nodedev_reattach(args: argparse.Namespace, ctx: Context) -> int:
    device = ctx.inventory().resolve(args.device)
    fs, journal, waiter, _ = _boundaries(ctx)
    result = reattach(fs, device, journal, waiter, timeout=args.timeout)
    if args.json:
        ctx.print_json(result._asdict())
    else:
        ctx.print(f"Device {result.device} re-attached")
    return 0


def cmd_recover(args: argparse.Namespace, ctx: Context) -> int:
    """Finish interrupted binding work, then give back devices whose domain is gone.

    The second part is the hook's own sweep (hook.release_stale): a device stays
    with its domain while libvirt's pid file names a live QEMU, or while the
    domain is within its start grace period.
    """
    from platform_hostdev.binding.ownership import Owners
    from platform_hostdev.hook.qemu import HookEnv, release_stale

    fs, journal, waiter, runner = _boundaries(ctx)
    owners = Owners(fs)
    with owners.locked():
        done = release_stale(HookEnv(fs, waiter, runner, err=ctx.err), owners, journal,
                             timeout=args.timeout)
    actions, released = done.journal, done.released
    failed = any(a.action == "failed" for a in actions)
    if args.json:
        ctx.print_json({"journal": [a._asdict() for a in actions], "released": released})
    elif not actions and not released:
        ctx.print("Nothing to recover")
    else:
        for action in actions:
            ctx.print(f"{action.device}: {action.action}: {action.detail}")
        for line in released:
            ctx.print(line)
    return 1 if failed else 0
