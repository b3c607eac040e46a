"""Discovery commands: nodedev-list, nodedev-dumpxml, show.

Interactive: only what a command uses is imported (the inventory for all
three; the correlation, the VFIO flag names and the guest DT store for show).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import platform_hostdev as api
from platform_hostdev.cli.main import Context
from platform_hostdev.cli.table import render_table
from platform_hostdev.errors import printable
from platform_hostdev.host.fs import BUSES

if TYPE_CHECKING:
    from platform_hostdev.host.devlinks import LinkView
    from platform_hostdev.host.inventory import Device
    from platform_hostdev.vfio.correlate import Correlation, Link

__all__ = ["configure", "device_json", "render_correlation"]


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of a discovery command."""
    if name == "nodedev-list":
        p.add_argument("--bus", choices=BUSES, help="only devices on this bus")
        p.add_argument("--compatible", metavar="GLOB",
                       help="only devices with a compatible matching GLOB (e.g. 'arm,pl0*')")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=cmd_nodedev_list)
    elif name == "nodedev-dumpxml":
        p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
        p.add_argument("--json", action="store_true", help="JSON instead of XML")
        p.set_defaults(handler=cmd_nodedev_dumpxml)
    elif name == "show":
        p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=cmd_show)


def device_json(device: Device, reserved: bool = False) -> dict[str, Any]:
    """A device as --json prints it; ``reserved``: its DT path is reserved for vfio at boot."""
    return {
        "name": device.name,
        "bus": device.bus,
        "dt_path": device.dt_path,
        "compatible": list(device.compatible),
        "driver": device.driver,
        "driver_override": device.driver_override,
        "iommu_group": device.iommu_group,
        "aliases": list(device.aliases),
        "sysfs_path": device.sysfs_path,
        "nodedev": device.nodedev_name,
        "reserved": reserved,
    }


def _reserved(ctx: Context) -> frozenset[str]:
    """The DT paths reserved for vfio at boot on the host (none for a --dtb)."""
    if ctx.dtb is not None:
        return frozenset()
    from platform_hostdev.binding.reservations import Reservations

    return frozenset(Reservations(ctx.host.fs).paths())


def cmd_nodedev_list(args: argparse.Namespace, ctx: Context) -> int:
    import fnmatch

    devices = [d for d in ctx.inventory().devices
               if (args.bus is None or d.bus == args.bus)
               and (args.compatible is None
                    or any(fnmatch.fnmatchcase(c, args.compatible) for c in d.compatible))]
    reserved = _reserved(ctx)
    if args.json:
        ctx.print_json([device_json(d, d.dt_path in reserved) for d in devices])
        return 0
    rows = [[d.name, d.bus, d.dt_path or "-", d.compatible[0] if d.compatible else "-",
             d.driver or "-", d.iommu_group if d.iommu_group is not None else "-",
             "yes" if d.dt_path in reserved else "-"]
            for d in devices]
    ctx.print(render_table(["NAME", "BUS", "DT PATH", "COMPATIBLE", "DRIVER", "IOMMU",
                            "RESERVED"], rows))
    return 0


def _links(ctx: Context, device: Device) -> LinkView | None:
    """The device's links on a live (or fake) host; None for a DTB (it has no kernel)."""
    if ctx.dtb is not None:
        return None
    from platform_hostdev.host.devlinks import link_view

    return link_view(ctx.host.fs, device.bus, device.name)


def cmd_nodedev_dumpxml(args: argparse.Namespace, ctx: Context) -> int:
    from platform_hostdev.domain.nodedev import nodedev_xml

    inventory = ctx.inventory()
    device = inventory.resolve(args.device)
    correlation = api.correlate(inventory.tree, device, inventory.page_size()) \
        if device.dt_path else None
    links = _links(ctx, device)
    if args.json:
        data = device_json(device, device.dt_path in _reserved(ctx))
        data["correlation"] = correlation.to_json() if correlation else None
        data["device_links"] = links.to_json() if links is not None else None
        ctx.print_json(data)
    else:
        ctx.out.write(nodedev_xml(device, correlation, links))
    return 0


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    inventory = ctx.inventory()
    device = inventory.resolve(args.device)
    correlation = api.correlate(inventory.tree, device, inventory.page_size())
    placements: list[tuple[str, dict[str, Any]]] = []
    if ctx.dtb is None:
        from platform_hostdev.guestdt.store import guest_dt_store

        placements = guest_dt_store(ctx.host).placements_of(device.name)
    links = _links(ctx, device)
    if args.json:
        data = correlation.to_json()
        data["device_links"] = links.to_json() if links is not None else None
        if placements:
            data["guest"] = [{"domain_uuid": uuid, **chain} for uuid, chain in placements]
        ctx.print_json(data)
    else:
        ctx.print(render_correlation(correlation))
        if links is not None:
            ctx.print(render_links(links))
        if placements:
            from platform_hostdev.cli.guestdt import render_chain
        for uuid, chain in placements:
            ctx.print(f"\nIn the guest of domain {uuid} (host DT -> VFIO -> guest):")
            ctx.print(render_chain([chain]))
    return 0


def render_correlation(c: Correlation) -> str:
    """The text report of ``show``."""
    lines = [  # names and strings from the DT and sysfs: one line each, escaped
        f"Device:      {printable(c.device)} ({c.bus})",
        f"DT path:     {printable(c.dt_path)}",
        f"Compatible:  {printable(', '.join(c.compatible)) or '-'}",
        f"Driver:      {printable(c.driver or '-')}",
        f"IOMMU group: {c.iommu_group if c.iommu_group is not None else '-'}",
        f"Page size:   {_page(c.page_size)} ({c.page_size_source})",
        "",
        "VFIO regions:",
    ]
    if c.regions:
        lines.append(render_table(
            ["REGION", "DT SOURCE", "CPU ADDRESS", "SIZE", "MMAP"],
            [[str(r.index), f"{r.prop}[{r.entry}]", f"0x{r.cpu_address:x}", f"0x{r.size:x}",
              "yes" if r.mmap else f"no (not {_page(c.page_size)} aligned)"]
             for r in c.regions], indent=2))
    else:
        lines.append("  (none)")
    lines += ["", "VFIO IRQs:"]
    if c.irqs:
        lines.append(render_table(
            ["IRQ", "DT SOURCE", "CONTROLLER", "LINE", "TRIGGER", "EXPECTED VFIO FLAGS"],
            [[str(i.index), f"{i.prop}[{i.entry}]", i.controller,
              i.line or " ".join(hex(v) for v in i.specifier),
              i.trigger or "?", _irq_flag_names(i.expected_flags)] for i in c.irqs], indent=2))
    else:
        lines.append("  (none)")
    external = [lk for lk in c.links if not lk.internal]
    internal = [lk for lk in c.links if lk.internal]
    if external:
        lines += ["", "Links to other nodes:"]
        lines.append(render_table(["PROPERTY", "TARGET", "ARGS"],
                                  [[_link_prop(lk, c), lk.target,
                                    " ".join(hex(a) for a in lk.args) or "-"]
                                   for lk in external], indent=2))
    if internal:
        lines += ["", "Links within its own subtree (the guest node carries them):"]
        lines.append(render_table(["PROPERTY", "TARGET"],
                                  [[_link_prop(lk, c), lk.target] for lk in internal], indent=2))
    outside = [ch for ch in c.children if not ch.internal]
    inside = [ch for ch in c.children if ch.internal]
    if outside:
        lines += ["", "Child nodes with resources (not exposed by VFIO):"]
        lines += [f"  {printable(ch.path)}" for ch in outside]
    if inside:
        lines += ["", "Child nodes with bus-local reg (the guest node carries them):"]
        lines += [f"  {printable(ch.path)}" for ch in inside]
    for note in c.notes:
        lines.append(f"note: {printable(note)}")
    lines += ["", f"Verdict: {c.verdict}"]
    lines += [f"  - {printable(reason)}" for reason in c.reasons]
    return "\n".join(lines)


def _page(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} bytes"


def _link_prop(link: Link, c: Correlation) -> str:
    if link.source and link.source != c.dt_path:
        return f"{link.source[len(c.dt_path) + 1:]}: {link.prop}"
    return str(link.prop)


def render_links(view: LinkView) -> str:
    """The device links section of ``show``: both ends with their drivers, and the chains
    an unbind of the device takes with it."""
    from platform_hostdev.host.devlinks import render_dependent

    rows = [[lk.role, lk.name, lk.bus, lk.driver or "-", lk.status,
             "sync-state-only" if lk.sync_state_only else "-"]
            for lk in [*view.suppliers, *view.consumers]]
    if not rows:
        return "\nDevice links: none"
    lines = ["", "Device links (/sys/class/devlink):",
             render_table(["ROLE", "DEVICE", "BUS", "DRIVER", "STATUS", "FLAGS"], rows, indent=2)]
    if view.dependents:
        lines.append("Unbinding it makes the kernel unbind:")
        lines += [f"  {printable(render_dependent(d))}" +
                  ("" if d.can_unbind else " (its driver forbids unbinding)")
                  for d in view.dependents]
    return "\n".join(lines)


def _irq_flag_names(flags: int | None) -> str:
    if flags is None:
        return "? (trigger unknown)"
    from platform_hostdev.vfio.uapi import flag_names

    return "|".join(flag_names("irq", flags))
