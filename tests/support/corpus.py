"""The real device trees the tests run on, fetched at test time and cached.

* the DTBs shipped in Debian's arm64 6.12 kernel package (~1000 boards),
  through :func:`board.apt_arm64.kernel_image_dir` (private apt, nothing
  installed on the host);
* QEMU's own ``virt`` machine DT, dumped with
  ``qemu-system-aarch64 -M virt,dumpdtb=FILE -cpu max -m 1024 -nographic``.

Both live under ``${PLATFORM_HOSTDEV_CACHE:-$HOME/.cache/platform-hostdev}``.
A missing prerequisite raises :class:`CorpusUnavailable`, whose message names
what is missing and how to get it; tests turn it into a failure, never a skip.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "CorpusUnavailable",
    "cache_dir",
    "kernel_dtb_dir",
    "corpus_dtbs",
    "board_dtb",
    "qemu_virt_dtb",
    "QEMU_VIRT_ARGS",
    "CorpusStats",
    "CORPUS_STATS",
]

QEMU = "qemu-system-aarch64"
QEMU_VIRT_ARGS = ("-M", "virt,dumpdtb={out}", "-cpu", "max", "-m", "1024", "-nographic")
_QEMU_HINT = ("install it: apt-get -o DPkg::Lock::Timeout=600 install -y -t bookworm-backports "
              "qemu-system-arm (or run scripts/setup-host)")


class CorpusUnavailable(RuntimeError):
    """A prerequisite of the real-DTB tests is missing; the message says which and the fix."""


def cache_dir() -> Path:
    """``$PLATFORM_HOSTDEV_CACHE`` or ``~/.cache/platform-hostdev`` (board.cache's rule)."""
    from board.cache import cache_root

    return cache_root()


def kernel_dtb_dir(cache: Path | None = None) -> Path:
    """``usr/lib/linux-image-<release>`` of the newest Debian 6.12 arm64 kernel package."""
    cache = cache or cache_dir()
    try:
        from board.apt_arm64 import kernel_image_dir
        from board.errors import BoardError
    except ImportError as exc:
        raise CorpusUnavailable(
            f"board/apt_arm64.py (kernel_image_dir) cannot be imported: {exc}; the DTB "
            "corpus is fetched through it") from exc
    try:
        image = kernel_image_dir(cache)
    except (BoardError, OSError, subprocess.SubprocessError) as exc:
        raise CorpusUnavailable(
            f"cannot fetch Debian's arm64 6.12 kernel package (the DTB corpus) into {cache}: "
            f"{type(exc).__name__}: {exc}") from exc
    found = sorted((image / "usr" / "lib").glob("linux-image-*"))
    if not found or not found[-1].is_dir():
        raise CorpusUnavailable(f"{image} holds no usr/lib/linux-image-*/ directory of DTBs; "
                                f"delete {image} so that it is extracted again")
    return found[-1]


def corpus_dtbs(cache: Path | None = None) -> list[Path]:
    """Every DTB of the kernel package, sorted (vendor/board.dtb)."""
    base = kernel_dtb_dir(cache)
    dtbs = sorted(base.glob("*/*.dtb")) + sorted(base.glob("*/*/*.dtb"))
    if not dtbs:
        raise CorpusUnavailable(f"no *.dtb below {base}: the kernel package changed layout?")
    return dtbs


def board_dtb(relative: str, cache: Path | None = None) -> Path:
    """One DTB of the corpus, e.g. ``"xilinx/zynqmp-zcu102-rev1.0.dtb"``."""
    path = kernel_dtb_dir(cache) / relative
    if not path.is_file():
        raise CorpusUnavailable(f"{relative} is not in {path.parent.parent}: the Debian kernel "
                                "package no longer ships this board")
    return path


def qemu_virt_dtb(cache: Path | None = None) -> Path:
    """QEMU's virt machine DT (dumpdtb), cached per QEMU binary (path, size, mtime)."""
    binary = shutil.which(QEMU)
    if binary is None:
        raise CorpusUnavailable(f"{QEMU} is not installed (needed to dump the virt machine's "
                                f"DT); {_QEMU_HINT}")
    stat = Path(binary).stat()
    digest = hashlib.sha256(f"{binary}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = (cache or cache_dir()) / "qemu-virt" / f"virt-{digest}.dtb"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    argv = [binary] + [a.format(out=partial) for a in QEMU_VIRT_ARGS]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CorpusUnavailable(f"{' '.join(argv)} did not finish in 120 s") from exc
    if run.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise CorpusUnavailable(f"{' '.join(argv)} failed (exit {run.returncode}): "
                                f"{run.stderr.strip()[-500:]}; {_QEMU_HINT}")
    os.replace(partial, target)
    return target


@dataclass
class CorpusStats:
    """What one run over the corpus saw: counts and every located DeviceTreeError."""

    dtbs: int = 0
    nodes: int = 0
    nodes_with_reg: int = 0
    devices: int = 0
    errors: list[str] = field(default_factory=list)   # "vendor/board.dtb: node X, ...: ..."

    def summary(self) -> list[str]:
        lines = [f"DTB corpus: {self.dtbs} DTBs, {self.nodes} nodes "
                 f"({self.nodes_with_reg} enabled with reg), {self.devices} predicted devices, "
                 f"{len(self.errors)} located DeviceTreeErrors"]
        lines += [f"  {error}" for error in self.errors]
        return lines


#: where the corpus tests leave their CorpusStats on ``config.stash``
CORPUS_STATS = pytest.StashKey[CorpusStats]()
