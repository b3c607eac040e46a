"""``platform-hostdev inspect DEVICE [--json]``: the live VFIO view beside the device tree.

Opens the device through VFIO (container, group, device fd; never its
registers; ``--backend iommufd``: /dev/iommu and the device's cdev, bound and
attached as QEMU's iommufd backend does, or why the kernel does not allow it),
reads its device, region and IRQ info, and sets it beside
:func:`~platform_hostdev.vfio.correlate.correlate`'s expectation.

Exit codes:

* 0: VFIO agrees with the device tree (warnings such as no-IOMMU may be printed);
* 3: VFIO and the device tree disagree (each disagreement is listed);
* 1: an error: the device is unknown, not bound to vfio (run
  ``platform-hostdev nodedev-detach DEVICE``), its group is not viable or
  busy, permission denied, or ``--dtb`` was given (inspect needs a live host);
* 2: bad usage.

The system calls are taken from ``Context.vfio_syscalls`` when given
(tests), else the real ones.
"""
from __future__ import annotations

import argparse

import platform_hostdev as api
from platform_hostdev.cli.main import Context
from platform_hostdev.cli.table import render_table
from platform_hostdev.vfio.cdev_client import query_cdev
from platform_hostdev.vfio.client import query
from platform_hostdev.vfio.inspection import Inspection, inspect
from platform_hostdev.vfio.uapi import flag_names

__all__ = ["configure", "cmd_inspect", "render_inspection", "EXIT_AGREE", "EXIT_DISAGREE"]

EXIT_AGREE = 0
EXIT_DISAGREE = 3


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of inspect."""
    p.description = ("Show the live VFIO view of a device bound to vfio-platform or vfio-amba "
                     "beside its device-tree correlation, and flag every disagreement.")
    p.epilog = "exit status: 0 agree, 3 disagree, 1 error, 2 usage"
    p.add_argument("device", metavar="DEVICE", help="DT path, sysfs name or DT alias")
    p.add_argument("--backend", choices=("legacy", "iommufd"), default="legacy",
                   help="open the device through its group (legacy, the default) or through "
                        "its vfio cdev bound to /dev/iommu (iommufd)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    if ctx.dtb is not None:
        raise api.HostdevError("inspect reads the live kernel's VFIO view; a DTB has none",
                               "drop --dtb, or use 'platform-hostdev show' for the DT side "
                               "only", code="host-state")
    inventory = ctx.inventory()
    device = inventory.resolve(args.device)
    correlation = api.correlate(inventory.tree, device, inventory.page_size())
    if args.backend == "iommufd":
        view = query_cdev(ctx.host.fs, device, ctx.vfio_syscalls)
    else:
        view = query(ctx.host.fs, device, ctx.vfio_syscalls)
    result = inspect(correlation, view)
    if args.json:
        ctx.print_json(result.to_json())
    else:
        ctx.print(render_inspection(result))
    return EXIT_AGREE if result.agree else EXIT_DISAGREE


def _flags(kind: str, value: int | None) -> str:
    if value is None:
        return "? (trigger unknown)"
    return "|".join(flag_names(kind, value)) or "-"


def render_inspection(result: Inspection) -> str:
    """The side-by-side text report."""
    c, v = result.correlation, result.view
    group = v.group.node + ("  (no-IOMMU: UNSAFE)" if v.group.noiommu else "")
    via = (f"VFIO cdev:    {v.cdev} bound to /dev/iommu (iommufd), group {v.group.number}"
           if v.backend == "iommufd" else f"VFIO group:   {group}, IOMMU model {v.iommu_type}")
    lines = [
        f"Device:       {v.device} ({v.bus}), driver {v.driver}",
        f"DT path:      {c.dt_path}",
        via,
        f"Device flags: {_flags('device', v.info.flags)}",
        "",
        "Regions:",
    ]
    rows = []
    for i in range(max(len(c.regions), len(v.regions))):
        dt = c.regions[i] if i < len(c.regions) else None
        live = v.regions[i] if i < len(v.regions) else None
        rows.append([
            str(i),
            f"{dt.prop}[{dt.entry}]" if dt else "-",
            f"0x{dt.cpu_address:x}" if dt else "-",
            f"0x{dt.size:x}" if dt else "-",
            _flags("region", dt.expected_flags) if dt else "-",
            f"0x{live.size:x}" if live else "-",
            _flags("region", live.flags) if live else "-",
            ", ".join(result.kinds_at("region", i)) or "ok",
        ])
    lines.append(render_table(["INDEX", "SOURCE", "CPU ADDRESS", "SIZE", "EXPECTED FLAGS",
                               "VFIO SIZE", "VFIO FLAGS", "STATUS"], rows, indent=2)
                 if rows else "  (none)")
    lines += ["", "IRQs:"]
    rows = []
    for i in range(max(len(c.irqs), len(v.irqs))):
        dirq = c.irqs[i] if i < len(c.irqs) else None
        lirq = v.irqs[i] if i < len(v.irqs) else None
        rows.append([
            str(i),
            f"{dirq.prop}[{dirq.entry}]" if dirq else "-",
            (f"{dirq.kind} {dirq.number}" if dirq.kind else dirq.controller) if dirq else "-",
            (dirq.trigger or "?") if dirq else "-",
            _flags("irq", dirq.expected_flags) if dirq else "-",
            _flags("irq", lirq.flags) if lirq else "-",
            str(lirq.count) if lirq else "-",
            ", ".join(result.kinds_at("irq", i)) or "ok",
        ])
    lines.append(render_table(["INDEX", "SOURCE", "LINE", "TRIGGER", "EXPECTED FLAGS",
                               "VFIO FLAGS", "COUNT", "STATUS"], rows, indent=2)
                 if rows else "  (none)")
    lines.append("")
    lines += [f"warning: {w.message}" for w in result.warnings]
    if result.agree:
        lines.append("VFIO agrees with the device tree.")
    else:
        lines.append(f"VFIO disagrees with the device tree ({len(result.disagreements)}):")
        lines += [f"  - {d.kind}: {d.message}" for d in result.disagreements]
    return "\n".join(lines)
