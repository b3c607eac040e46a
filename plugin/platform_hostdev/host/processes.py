"""The processes the package runs on a host: modprobe, the QEMU probe, QEMU's dumpdtb.

Each has its own runner type, so a runner for one cannot be passed for
another; :class:`~platform_hostdev.host.boundary.Host` carries one of each.
``subprocess`` is imported inside the runners: it costs the hook a few ms at
import, and only a driver load needs it there.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from platform_hostdev.errors import HostdevError

if TYPE_CHECKING:
    import subprocess

__all__ = [
    "ModprobeRunner",
    "QemuProbeRunner",
    "DumpdtbRunner",
    "run_modprobe",
    "run_qemu_probe",
    "run_dumpdtb",
]

ModprobeRunner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
"""Runs ``modprobe ...`` (argv) and returns the finished process (text output)."""

QemuProbeRunner = Callable[[Sequence[str]], str]
"""Runs an emulator query (``--version``, ``-device help``); its stdout, or HostdevError."""

DumpdtbRunner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[bytes]"]
"""Runs QEMU with ``-machine dumpdtb=`` (argv, timeout in seconds); the finished process."""


def run_modprobe(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run modprobe with captured output and a time limit."""
    import subprocess

    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def run_qemu_probe(argv: Sequence[str]) -> str:
    """argv's stdout; HostdevError (probe-failed) when it cannot run, fails or hangs."""
    import subprocess

    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostdevError(f"cannot run {argv[0]}: {exc}",
                           "check the <emulator> path in the domain XML",
                           code="emulator-failed", emulator=argv[0]) from None
    if done.returncode != 0:
        raise HostdevError(f"{' '.join(argv)} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[:500]}",
                           "check that the emulator runs on this host",
                           code="emulator-failed", emulator=argv[0])
    return done.stdout


def run_dumpdtb(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run QEMU for its machine DT; FileNotFoundError / TimeoutExpired pass through."""
    import subprocess

    return subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
