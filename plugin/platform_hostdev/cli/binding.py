"""Binding commands: nodedev-detach, nodedev-reattach, recover.

Output follows virsh: "Device ff0e0000.ethernet detached", "Device
9030000.pl061 re-attached". Exit 0 on success, 1 when refused or failed (the
message says what was found, the hint how to fix it; the device is back in
its original state unless the message says otherwise).

The boundaries are the context's :class:`~platform_hostdev.host.boundary.Host`
(pyudev uevents and modprobe on the live host; a test's fake kernel).
"""
from __future__ import annotations

import argparse

import platform_hostdev as api
from platform_hostdev.cli.main import Context

__all__ = ["configure"]


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``name`` (nodedev-detach, nodedev-reattach, recover)."""
    if name in ("nodedev-detach", "nodedev-reattach"):
        p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
    if name == "nodedev-detach":
        p.add_argument("--force", action="store_true",
                       help="skip the host-use (console, mounts, default route), IOMMU and "
                       "reset-handler checks and let the kernel decide; also lets the kernel "
                       "unbind the devices that depend on this one (device links), which "
                       "nodedev-reattach gives back")
    p.add_argument("--timeout", type=float, default=api.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for each bind/unbind (default "
                   f"{api.DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler={"nodedev-detach": cmd_nodedev_detach,
                            "nodedev-reattach": cmd_nodedev_reattach,
                            "recover": cmd_recover}[name])


def cmd_nodedev_detach(args: argparse.Namespace, ctx: Context) -> int:
    device = ctx.inventory().resolve(args.device)
    host = ctx.host
    impact = api.refuse_unsafe_detach(host.fs, device, args.force)
    for use in impact.uses.get(device.name, []):
        ctx.warn(f"warning: --force: {device.name} {use.detail}")
    for dependent in impact.dependents:
        ctx.warn(f"warning: --force: {dependent.name} ({dependent.driver}) loses its driver: "
                 f"{impact.chain(dependent)}")
    for user in impact.dt_users:
        ctx.warn(f"warning: --force: {user.name} ({user.driver}) keeps its driver but loses what "
                 f"it uses through {', '.join(user.props)}: {impact.user_chain(user)}")
    result = api.detach(host, device, force=args.force, timeout=args.timeout,
                        unbind_consumers=args.force)
    if args.json:
        ctx.print_json(result._asdict())
    else:
        ctx.print(f"Device {result.device} detached")
        if result.unbound_consumers:
            ctx.print(f"Lost their driver with it: {', '.join(result.unbound_consumers)} "
                      f"('nodedev-reattach {result.device}' gives them back)")
    return 0


def cmd_nodedev_reattach(args: argparse.Namespace, ctx: Context) -> int:
    device = ctx.inventory().resolve(args.device)
    result = api.reattach(ctx.host, device, timeout=args.timeout)
    if args.json:
        ctx.print_json(result._asdict())
    else:
        ctx.print(f"Device {result.device} re-attached")
        if result.reprobed_consumers:
            ctx.print(f"Given their driver back: {', '.join(result.reprobed_consumers)}")
    return 0


def cmd_recover(args: argparse.Namespace, ctx: Context) -> int:
    """Finish interrupted binding work, then give back devices whose domain is gone
    (:func:`platform_hostdev.recover_host`)."""
    done = api.recover_host(ctx.host, err=ctx.err, timeout=args.timeout)
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
