"""Where the libvirt qemu hook is installed, and the executable written there.

The hook goes into /etc/libvirt/hooks/qemu.d/ (libvirt >= 6.5 runs every
executable there, see https://libvirt.org/hooks.html), never into
/etc/libvirt/hooks/qemu, which VDSM owns on oVirt hosts. :func:`render_hook`
fills in the interpreter, the directories to import the package from and the
host root; ``platform-hostdev hook install`` (cli) writes the result and
check-host looks for it.
"""
from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

from platform_hostdev.shipped import shipped_dir

__all__ = ["HOOK_DIR", "HOOK_NAME", "HOOK_PATH", "SIGNATURE", "hook_source", "package_paths",
           "render_hook"]

HOOK_DIR = "/etc/libvirt/hooks/qemu.d"
HOOK_NAME = "platform-hostdev"
HOOK_PATH = f"{HOOK_DIR}/{HOOK_NAME}"
SIGNATURE = "libvirt qemu hook for platform-hostdev"
"""A line of the hook's docstring: a file holding it is ours to replace or remove."""


def hook_source() -> str:
    """The hook executable's text, as shipped (the source tree's, when run from one)."""
    return (shipped_dir("platform_hostdev.hookfiles") / "qemu.d" / HOOK_NAME).read_text()


def package_paths() -> list[str]:
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
    """The hook with this interpreter, our import paths and the host root filled in.

    The directories are written as a tuple literal, not joined into one string:
    nothing has to split them again, so a directory name may hold any character.
    """
    text = hook_source()
    lines = text.splitlines(keepends=True)
    lines[0] = f"#!{sys.executable} -S\n"
    text = "".join(lines)
    text = text.replace("PACKAGE_PATH = ()", f"PACKAGE_PATH = {tuple(package_paths())!r}")
    text = text.replace('HOST_ROOT = "/"', f"HOST_ROOT = {os.path.abspath(root)!r}")
    return text
