"""QEMU's own guest DT for a domain's exact machine: ``-machine dumpdtb=``.

The command line comes from libvirt (``virsh domxml-to-native qemu-argv``,
i.e. ``conn.domainXMLToNative``); only the options that shape the device tree
are kept: machine, accelerator, CPU, SMP, memory and its backends, NUMA.
Devices are dropped: PCI devices add no DT nodes, and our own vfio-platform
devices cannot be instantiated here (that is the point of generating the DT).
``-dtb``/``-kernel``/``-initrd``/``-append`` are dropped too: QEMU refreshes
/chosen and /memory in a user DTB at load time (hw/arm/boot.c).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.processes import DumpdtbRunner, run_dumpdtb

__all__ = ["split_native", "dt_relevant_args", "dump_dtb"]

_KEEP = frozenset({"-machine", "-M", "-cpu", "-smp", "-m", "-accel", "-numa"})
_FLAGS_KEEP = frozenset({"-enable-kvm"})
# Options libvirt emits that take no argument (everything else takes one).
_NO_ARG = frozenset({
    "-no-user-config", "-nodefaults", "-S", "-no-shutdown", "-no-reboot", "-no-hpet",
    "-enable-kvm", "-nographic", "-daemonize", "-no-acpi", "-snapshot", "-enable-fips",
    "-no-fd-bootchk", "-full-screen", "-usb", "-no-frame", "-alt-grab", "-ctrl-grab",
    "-nodefconfig", "-no-kvm", "-preconfig",
})


def split_native(native: str) -> tuple[str, list[str]]:
    """Split libvirt's qemu-argv text into (emulator, arguments), dropping VAR=value prefixes."""
    words = shlex.split(native)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)
    if not words:
        raise HostdevError("libvirt's native command line is empty",
                           "check 'virsh domxml-to-native qemu-argv' for the domain",
                           code="libvirt-error")
    return words[0], words[1:]


def _memory_backend(value: str) -> str | None:
    """A memory backend object reduced to RAM of the same id and size, or None."""
    if value.startswith("{"):
        try:
            obj = json.loads(value)
        except json.JSONDecodeError:
            return None
        if not str(obj.get("qom-type", "")).startswith("memory-backend"):
            return None
        return json.dumps({"qom-type": "memory-backend-ram", "id": obj.get("id"),
                           "size": obj.get("size")})
    parts = value.split(",")
    if not parts[0].startswith("memory-backend"):
        return None
    kept = [p for p in parts[1:] if p.startswith(("id=", "size="))]
    return ",".join(["memory-backend-ram", *kept])


def dt_relevant_args(args: Sequence[str]) -> list[str]:
    """The options of a QEMU command line that shape the guest device tree."""
    kept: list[str] = []
    i = 0
    while i < len(args):
        opt = args[i]
        if not opt.startswith("-"):
            i += 1
            continue
        norm = "-" + opt.lstrip("-")
        if norm in _NO_ARG:
            if norm in _FLAGS_KEEP:
                kept.append(norm)
            i += 1
            continue
        value = args[i + 1] if i + 1 < len(args) else ""
        if norm in _KEEP:
            kept += [norm, value]
        elif norm == "-object":
            backend = _memory_backend(value)
            if backend is not None:
                kept += ["-object", backend]
        i += 2
    return kept


def dump_dtb(emulator: str, args: Sequence[str], runner: DumpdtbRunner = run_dumpdtb,
             timeout: float = 120) -> bytes:
    """Run ``emulator`` with ``args`` and ``-machine dumpdtb=`` (through ``runner``, the
    host's dumpdtb runner) and return the DTB."""
    with tempfile.TemporaryDirectory(prefix="phd-dumpdtb-") as tmp:
        out = Path(tmp) / "machine.dtb"
        argv = [emulator, *args, "-machine", f"dumpdtb={out}", "-display", "none",
                "-nodefaults"]
        try:
            done = runner(argv, timeout)
        except FileNotFoundError:
            raise HostdevError(f"QEMU binary {emulator} not found",
                               "install qemu-system-arm or fix the domain's <emulator>",
                               code="emulator-failed") from None
        except subprocess.TimeoutExpired:
            raise HostdevError(f"{emulator} did not dump its device tree within {timeout:.0f} s",
                               "run the command by hand to see where it hangs",
                               code="emulator-failed") from None
        if done.returncode != 0 or not out.exists():
            stderr = done.stderr.decode(errors="replace").strip()
            raise HostdevError(f"QEMU could not dump the machine's device tree: {stderr}",
                               f"command: {shlex.join(argv)}", code="emulator-failed")
        return out.read_bytes()
