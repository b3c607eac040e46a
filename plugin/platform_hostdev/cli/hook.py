"""``platform-hostdev hook install|uninstall``: the libvirt qemu hook.

The hook goes into /etc/libvirt/hooks/qemu.d/ (libvirt >= 6.5 runs every
executable there), never into /etc/libvirt/hooks/qemu, which VDSM owns on
oVirt hosts. libvirt reads the hook directory when the daemon starts (and on
SIGHUP), so a new hook needs a daemon restart: the command says so.
"""
from __future__ import annotations

import argparse
import os
import site
import sys
import sysconfig
from importlib import resources
from pathlib import Path

from platform_hostdev.cli.main import Context
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.statefiles import atomic_write

__all__ = ["configure", "hook_source", "render_hook", "HOOK_DIR", "HOOK_NAME"]

HOOK_DIR = "/etc/libvirt/hooks/qemu.d"
HOOK_NAME = "platform-hostdev"
MARKER = "libvirt qemu hook for platform-hostdev"


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


def hook_source() -> str:
    """The packaged hook executable's text (or the source tree's, when run from it)."""
    try:
        files = resources.files("platform_hostdev.hookfiles")
        return (files / "qemu.d" / HOOK_NAME).read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[3] / "hooks" / "qemu.d" / HOOK_NAME).read_text()


def _package_paths() -> list[str]:
    """Directories the hook must add (site-style) to import us and our dependencies."""
    # site.getsitepackages(): on Debian's python3 sysconfig names only /usr/local/lib/...,
    # while apt's python3-lxml and python3-pyudev live in /usr/lib/python3/dist-packages
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"]]
    here = str(Path(__file__).resolve().parents[2])  # the directory holding platform_hostdev
    if here not in paths:
        paths.append(here)
    return list(dict.fromkeys(paths))


def render_hook(root: str) -> str:
    """The hook with this interpreter, our import paths and the host root filled in."""
    text = hook_source()
    lines = text.splitlines(keepends=True)
    lines[0] = f"#!{sys.executable} -S\n"
    text = "".join(lines)
    paths = os.pathsep.join(_package_paths())
    text = text.replace('PACKAGE_PATH = ""', f"PACKAGE_PATH = {paths!r}")
    text = text.replace('HOST_ROOT = "/"', f"HOST_ROOT = {os.path.abspath(root)!r}")
    return text


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
        if MARKER not in current and not args.force:
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
    if MARKER not in target.read_text(errors="replace"):
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
