"""A tiny arm64 initramfs that prints what the guest kernel made of its device tree.

Built from the board's cached busybox-static; its /init prints marker lines on
the console and powers off:
  @@DT nproc N / @@DT memtotal KB / @@DT node PATH / @@DT prop PATH NAME HEX
  @@DT dev NAME (every /sys/bus/platform/devices entry) / @@DT end
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from board.apt_arm64 import AptArm64
from board.build import Board, build_board
from board.cache import content_key, publish_file
from board.cpio import CpioWriter

__all__ = ["ProbeImage", "probe_image", "parse_console", "GuestFacts"]

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "@@DT nproc $(grep -c ^processor /proc/cpuinfo)"
echo "@@DT memtotal $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
for node in /proc/device-tree/platform-bus@c000000/*/; do
    [ -d "$node" ] || continue
    n=${node%/}
    echo "@@DT node ${n#/proc/device-tree}"
    for prop in compatible reg interrupts; do
        [ -f "$n/$prop" ] || continue
        hex=$(od -An -v -tx1 "$n/$prop" | tr -d ' \n')
        echo "@@DT prop ${n#/proc/device-tree} $prop $hex"
    done
done
for dev in /sys/bus/platform/devices/*; do echo "@@DT dev ${dev##*/}"; done
echo "@@DT end"
poweroff -f
"""


@dataclass(frozen=True)
class ProbeImage:
    board: Board
    initramfs: Path


@dataclass
class GuestFacts:
    nproc: int | None = None
    memtotal_kb: int | None = None
    nodes: list[str] = field(default_factory=list)
    props: dict[tuple[str, str], bytes] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    complete: bool = False


def probe_image() -> ProbeImage:
    """The board's kernel plus the probe initramfs (built once, cached by content)."""
    board = build_board()
    apt = AptArm64()
    (busybox_deb,) = apt.download([apt.newest("busybox-static")])
    key = content_key({"busybox": busybox_deb.name, "init": INIT})
    final = board.cache_dir / f"dtprobe-{key}.cpio"

    def fill(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="dtprobe.") as root:
            apt.extract(busybox_deb, Path(root))
            busybox = (Path(root) / "bin" / "busybox").read_bytes()
        with tmp.open("wb") as out:
            archive = CpioWriter(out)
            for d in ("bin", "dev", "proc", "sys"):
                archive.add_dir(d)
            archive.add_char_device("dev/console", 5, 1)
            archive.add_file("bin/busybox", busybox, 0o755)
            archive.add_file("init", INIT.encode(), 0o755)
            archive.close()

    if not final.is_file():
        publish_file(final, fill)
    return ProbeImage(board, final)


def parse_console(text: str) -> GuestFacts:
    facts = GuestFacts()
    for line in text.splitlines():
        if "@@DT " not in line:
            continue
        words = line[line.index("@@DT ") + 5:].split()
        if not words:
            continue
        kind, rest = words[0], words[1:]
        if kind == "nproc" and rest:
            facts.nproc = int(rest[0])
        elif kind == "memtotal" and rest:
            facts.memtotal_kb = int(rest[0])
        elif kind == "node" and rest:
            facts.nodes.append(rest[0])
        elif kind == "prop" and len(rest) >= 2:
            facts.props[(rest[0], rest[1])] = bytes.fromhex(rest[2] if len(rest) > 2 else "")
        elif kind == "dev" and rest:
            facts.devices.append(rest[0])
        elif kind == "end":
            facts.complete = True
    return facts
