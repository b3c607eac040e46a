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
from platform_hostdev.binding.reservations import RESERVED_FILE
from platform_hostdev.cli.main import Context
from platform_hostdev.errors import HostdevError, printable

__all__ = ["configure"]


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``name`` (nodedev-detach, nodedev-reattach, recover)."""
    if name in ("nodedev-detach", "nodedev-reattach"):
        p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
    if name in ("nodedev-detach", "nodedev-reattach"):
        p.add_argument("--persistent", action="store_true",
                       help=f"also reserve the device for vfio at every boot, by DT path, in "
                       f"{RESERVED_FILE}" if name == "nodedev-detach" else
                       f"also forget the device's boot-time reservation in {RESERVED_FILE}")
    if name == "nodedev-detach":
        p.add_argument("--force", action="store_true",
                       help="skip the host-use (console, mounts, default route), IOMMU and "
                       "reset-handler checks and let the kernel decide; also lets the kernel "
                       "unbind the devices that depend on this one (device links), which "
                       "nodedev-reattach gives back")
    if name == "reserve-apply":
        p.add_argument("--udev", action="store_true",
                       help="the udev rule's call: apply the reservation to the one device of "
                       "the add event in the environment (DEVPATH, SUBSYSTEM, OF_FULLNAME) and "
                       "print udev properties")
    p.add_argument("--timeout", type=float, default=api.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for each bind/unbind (default "
                   f"{api.DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler={"nodedev-detach": cmd_nodedev_detach,
                            "nodedev-reattach": cmd_nodedev_reattach,
                            "recover": cmd_recover,
                            "reserve-apply": cmd_reserve_apply}[name])


def cmd_nodedev_detach(args: argparse.Namespace, ctx: Context) -> int:
    device = ctx.inventory().resolve(args.device)
    if args.persistent:
        return _detach_persistent(args, ctx, device)
    host = ctx.host
    impact = api.refuse_unsafe_detach(host.fs, device, args.force)
    _warn_forced(ctx, device.name, impact)
    result = api.detach(host, device, force=args.force, timeout=args.timeout,
                        unbind_consumers=args.force)
    _print_detached(args, ctx, result)
    return 0


def _warn_forced(ctx: Context, name: str, impact: api.UnbindImpact) -> None:
    for use in impact.uses.get(name, []):
        ctx.warn(f"warning: --force: {name} {use.detail}")
    for dependent in impact.dependents:
        ctx.warn(f"warning: --force: {dependent.name} ({dependent.driver}) loses its driver: "
                 f"{impact.chain(dependent)}")
    for user in impact.dt_users:
        ctx.warn(f"warning: --force: {user.name} ({user.driver}) keeps its driver but loses what "
                 f"it uses through {', '.join(user.props)}: {impact.user_chain(user)}")


def _print_detached(args: argparse.Namespace, ctx: Context, result: api.DetachResult | None,
                    reserved: str | None = None, note: str | None = None) -> None:
    if args.json:
        data: dict[str, object] = result._asdict() if result is not None else {"device": None}
        if reserved is not None:
            data["reserved"] = reserved
            data["note"] = note
        ctx.print_json(data)
        return
    if result is not None:
        ctx.print(f"Device {result.device} detached")
        if result.unbound_consumers:
            ctx.print(f"Lost their driver with it: {', '.join(result.unbound_consumers)} "
                      f"('nodedev-reattach {result.device}' gives them back)")
    if reserved is not None:
        ctx.print(f"Device {reserved} reserved for vfio at boot ({RESERVED_FILE})")
    if note:
        ctx.print(note)


def _detach_persistent(args: argparse.Namespace, ctx: Context, device: api.Device) -> int:
    """Check as a detach does, move the device now if its driver lets go, then record it."""
    from platform_hostdev.binding.operations import AlreadyDetachedError
    from platform_hostdev.binding.reservations import Reservations
    from platform_hostdev.host.devlinks import (
        UnbindForbiddenError,
        driver_origin,
        keep_driver_off,
    )

    host = ctx.host
    if device.dt_path is None:
        raise HostdevError(f"{device.name} has no device-tree node (no of_node link), so it "
                           "cannot be reserved: a reservation names the device by DT path",
                           "reserve a DT device; 'platform-hostdev nodedev-list' shows their "
                           "DT paths", code="invalid-device-spec", device=device.name)
    impact = api.refuse_unsafe_reservation(host.fs, device, args.force)
    reservations = Reservations(host.fs)
    reservations.paths()  # a corrupt file is refused before the device moves
    note = None
    result = None
    try:
        api.refuse_unsafe_detach(host.fs, device, args.force)
        _warn_forced(ctx, device.name, impact)
        result = api.detach(host, device, force=args.force, timeout=args.timeout,
                            unbind_consumers=args.force)
    except AlreadyDetachedError:
        note = f"{device.name} is already bound to its vfio driver"
    except UnbindForbiddenError as exc:
        # the driver cannot let go now; from the next boot the reservation keeps it off
        bus = next((d.bus for d in impact.dependents if d.name == exc.device), device.bus)
        origin = driver_origin(host.fs, bus, exc.driver)
        note = (f"{exc.driver} forbids unbinding, so {exc.device} stays with it until the "
                "next boot")
        if origin.module is None:
            note += (f"; {exc.driver} is built into the kernel and probes the device before "
                     f"udev runs, so the reservation cannot keep it off: "
                     f"{keep_driver_off(host.fs, bus, exc.driver)}")
        else:
            note += f"; the reservation sets its driver_override before {origin.module} loads"
    try:
        with reservations.locked():
            reservations.add(device.dt_path)
    except (HostdevError, OSError) as exc:
        moved = f"{device.name} is now bound to vfio, but " if result is not None else ""
        raise HostdevError(f"{moved}recording the reservation in {RESERVED_FILE} failed: "
                           f"{exc}", f"fix {RESERVED_FILE} and run the command again"
                           + (f", or 'platform-hostdev nodedev-reattach {device.name}'"
                              if result is not None else ""),
                           code=getattr(exc, "code", "host-state"), device=device.name,
                           path=RESERVED_FILE) from None
    _print_detached(args, ctx, result, reserved=device.dt_path, note=note)
    return 0


def cmd_nodedev_reattach(args: argparse.Namespace, ctx: Context) -> int:
    if args.persistent:
        return _reattach_persistent(args, ctx)
    device = ctx.inventory().resolve(args.device)
    result = api.reattach(ctx.host, device, timeout=args.timeout)
    _print_reattached(args, ctx, result)
    return 0


def _print_reattached(args: argparse.Namespace, ctx: Context, result: api.ReattachResult | None,
                      forgotten: str | None = None, note: str | None = None) -> None:
    if args.json:
        data: dict[str, object] = result._asdict() if result is not None else {"device": None}
        if args.persistent:
            data["forgotten"] = forgotten
            data["note"] = note
        ctx.print_json(data)
        return
    if result is not None:
        ctx.print(f"Device {result.device} re-attached")
        if result.reprobed_consumers:
            ctx.print(f"Given their driver back: {', '.join(result.reprobed_consumers)}")
    if forgotten is not None:
        ctx.print(f"Device {forgotten} no longer reserved for vfio at boot")
    if note:
        ctx.print(note)


def _reattach_persistent(args: argparse.Namespace, ctx: Context) -> int:
    """Give the device back now if it is on vfio, then forget its reservation. A reserved
    DT path no device has any more is forgotten all the same."""
    from platform_hostdev.binding.operations import NotDetachedError
    from platform_hostdev.binding.reservations import Reservations

    reservations = Reservations(ctx.host.fs)
    reserved = reservations.paths()
    try:
        device: api.Device | None = ctx.inventory().resolve(args.device)
    except HostdevError as exc:
        if exc.code != "device-not-found" or args.device not in reserved:
            raise
        device = None
    dt_path = device.dt_path if device is not None else args.device
    if dt_path not in reserved:
        raise HostdevError(f"{device.name if device else args.device} is not reserved "
                           f"({dt_path or 'no DT path'} is not in {RESERVED_FILE})",
                           "nothing to forget; without --persistent, nodedev-reattach "
                           "gives a detached device back", code="not-detached",
                           device=device.name if device else None, path=RESERVED_FILE)
    result = None
    note = None
    if device is None:
        note = f"no device has DT path {dt_path} on this boot"
    else:
        try:
            result = api.reattach(ctx.host, device, timeout=args.timeout)
        except NotDetachedError:
            note = f"{device.name} is not bound to vfio: left as it is"
    assert dt_path is not None
    with reservations.locked():
        reservations.remove(dt_path)
    _print_reattached(args, ctx, result, forgotten=dt_path, note=note)
    return 0


def cmd_recover(args: argparse.Namespace, ctx: Context) -> int:
    """Finish interrupted binding work, then give back devices whose domain is gone
    (:func:`platform_hostdev.recover_host`)."""
    from platform_hostdev.binding.journal import Journal
    from platform_hostdev.binding.ownership import Owners

    done = api.recover_host(ctx.host, err=ctx.err, timeout=args.timeout)
    actions, released = done.journal, done.released
    failed = any(a.action == "failed" for a in actions) or bool(done.failed)
    # damaged records (set aside now or earlier): their devices stay refused until the
    # user has checked them and removed the copy (host.statefiles.RecordStore.damaged)
    stores = (Journal(ctx.host.fs, err=ctx.err), Owners(ctx.host.fs, err=ctx.err))
    damaged = [(store, d) for store in stores for d in store.damaged()]
    if args.json:
        ctx.print_json({"journal": [a._asdict() for a in actions], "released": released,
                        "kept": done.kept, "failed": done.failed,
                        "damaged": [{"store": store.what, **d._asdict()}
                                    for store, d in damaged]})
    elif not (actions or released or done.kept or done.failed or damaged):
        ctx.print("Nothing to recover")
    else:
        for action in actions:
            ctx.print(f"{action.device}: {action.action}: {action.detail}")
        for line in [*released, *done.kept]:
            ctx.print(line)
        for store, d in damaged:
            ctx.print(f"{d.device}: damaged: {store.describe(d)}; the device is refused "
                      f"until it is removed (hint: {d.fix})")
        for line in done.failed:
            print(printable(f"error: could not give back {line}"), file=ctx.err)
        if done.failed:
            print("hint: fix the cause named above, then run 'platform-hostdev recover' "
                  "again (the records of what is left are kept)", file=ctx.err)
    return 1 if failed or damaged else 0


def cmd_reserve_apply(args: argparse.Namespace, ctx: Context) -> int:
    """Apply the boot-time reservations: ``--udev`` for the one device of a udev event
    (KEY=value lines for IMPORT{program}), else every reserved device (the unit)."""
    from platform_hostdev.binding.boot import apply_reservations, udev_main

    host = ctx.host
    if args.udev:  # main() takes the exact udev call before the parser; this is the rest
        return udev_main(host, ctx.env, ctx.out, ctx.err)
    done = apply_reservations(host, timeout=args.timeout)
    if args.json:
        ctx.print_json([d._asdict() for d in done])
    elif not done:
        ctx.print(f"No device is reserved ({RESERVED_FILE})")
    for d in done if not args.json else ():
        where = f"{d.device} ({d.dt_path})" if d.device else d.dt_path
        line = {"bound": f"{where}: bound to {d.driver}",
                "moved": f"{where}: moved to {d.driver} {d.detail}",
                "already": f"{where}: already on {d.driver}",
                "absent": f"{where}: not present ({d.detail})",
                "failed": f"{where}: failed: {d.detail}"}[d.action]
        print(line, file=ctx.err if d.failed else ctx.out)
    return 1 if any(d.failed for d in done) else 0
