"""``platform-hostdev hook install|uninstall``: the libvirt qemu hook.

Where the hook goes and what is written there is :mod:`platform_hostdev.hook.install`.
libvirt reads the hook directory when the daemon starts (and on SIGHUP), so a
new hook needs a daemon restart: the command says so.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from platform_hostdev.cli.main import Context
from platform_hostdev.errors import HostdevError
from platform_hostdev.hook.install import HOOK_DIR, HOOK_NAME, SIGNATURE, render_hook
from platform_hostdev.host.statefiles import atomic_write

__all__ = ["configure"]


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The actions of ``hook`` (install, uninstall) and their handlers."""
    hook_sub = p.add_subparsers(dest="hook_command", metavar="ACTION")
    hook_sub.required = True
    i = hook_sub.add_parser("install", help=f"install the hook into {HOOK_DIR}",
                            formatter_class=p.formatter_class)
    i.add_argument("--force", action="store_true",
                   help="replace a different file of the same name")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(handler=cmd_install)
    u = hook_sub.add_parser("uninstall", help="remove the hook",
                            formatter_class=p.formatter_class)
    u.add_argument("--json", action="store_true", help="machine-readable output")
    u.set_defaults(handler=cmd_uninstall)


def cmd_install(args: argparse.Namespace, ctx: Context) -> int:
    fs = ctx.host.fs
    main_hook = fs.path("/etc/libvirt/hooks/qemu")
    target = fs.path(f"{HOOK_DIR}/{HOOK_NAME}")
    wanted = render_hook(ctx.root)
    existed = target.exists()
    if existed:
        current = target.read_text(errors="replace")
        if current == wanted:
            _report(ctx, args, "unchanged", target, restart=False)
            return 0
        if SIGNATURE not in current and not args.force:
            raise HostdevError(f"{HOOK_DIR}/{HOOK_NAME} exists and is not ours",
                               "move it away, or pass --force to replace it", code="hook-conflict")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    atomic_write(target, wanted.encode(), 0o755)
    _report(ctx, args, "updated" if existed else "installed", target, restart=not existed,
            main_hook=main_hook.exists())
    return 0


def cmd_uninstall(args: argparse.Namespace, ctx: Context) -> int:
    target = ctx.host.fs.path(f"{HOOK_DIR}/{HOOK_NAME}")
    if not target.exists():
        _report(ctx, args, "absent", target, restart=False)
        return 0
    if SIGNATURE not in target.read_text(errors="replace"):
        raise HostdevError(f"{HOOK_DIR}/{HOOK_NAME} is not ours; left in place",
                           "remove it by hand if you mean to", code="hook-conflict")
    target.unlink()
    _report(ctx, args, "removed", target, restart=True)
    return 0


def _report(ctx: Context, args: argparse.Namespace, action: str, target: Path, *,
            restart: bool, main_hook: bool = False) -> None:
    if args.json:
        ctx.print_json({"action": action, "path": str(target), "restart_needed": restart})
        return
    ctx.print(f"Hook {action}: {target}")
    if main_hook:
        ctx.print("Note: /etc/libvirt/hooks/qemu exists (VDSM's on oVirt hosts); it is left "
                  "untouched and runs before ours.")
    if restart:
        ctx.print("libvirtd reads its hooks when it starts: restart it (systemctl restart "
                  "libvirtd, or virtqemud) or send it SIGHUP.")
