#!/usr/bin/env python3
"""Coverage benchmark: how many devices of the DTB corpus could get a guest node.

Run from the repository root:

    .venv/bin/python benchmarks/bench_coverage.py [--top 15] [--limit N]

For every enabled device of every DTB of Debian's arm64 6.12 kernel package
(the devices nodedev-list --dtb predicts), correlate it and build its guest
device-tree node on QEMU's own virt machine DT (dumpdtb, cached as the tests
cache it), as ``platform-hostdev sync`` would, without libvirt. Prints how
many got a guest node, how many correlate as "simple", and the most common
refusal reasons (paths, numbers and property lists folded so that equal
reasons count together). Figures only; nothing is asserted.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugin"), str(REPO)]

from platform_hostdev.dt.fdt import parse_dtb  # noqa: E402
from platform_hostdev.errors import DeviceTreeError, HostdevError  # noqa: E402
from platform_hostdev.guestdt.builder import build_guest_tree  # noqa: E402
from platform_hostdev.host.inventory import load_inventory  # noqa: E402
from platform_hostdev.vfio.correlate import correlate  # noqa: E402

from tests.support.corpus import corpus_dtbs, qemu_virt_dtb  # noqa: E402

_PATH = re.compile(r"/[^\s,;:()\]]*")
_HEX = re.compile(r"\b0x[0-9a-f]+\b")
_NUM = re.compile(r"\b\d+\b")
_LIST = re.compile(r"\[[^\]]*\]")


def fold(reason: str) -> str:
    """A refusal with its device, paths and numbers folded, so equal reasons count together."""
    problem = reason.split(" cannot be given to a guest: ", 1)[-1]
    problem = _LIST.sub("[...]", _PATH.sub("<node>", problem))
    problem = _NUM.sub("N", _HEX.sub("N", problem))
    return re.sub(r"<node>(, <node>)+", "<node>", problem)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="how many refusal reasons to print")
    parser.add_argument("--limit", type=int, default=0, help="only the first N DTBs (0: all)")
    args = parser.parse_args()
    dtbs = corpus_dtbs()
    if args.limit:
        dtbs = dtbs[:args.limit]
    base = qemu_virt_dtb().read_bytes()
    devices = accepted = simple = 0
    refusals: Counter[str] = Counter()
    examples: dict[str, str] = {}
    t0 = time.perf_counter()
    for dtb in dtbs:
        inventory = load_inventory(dtb=str(dtb))
        page = inventory.page_size()
        board = f"{dtb.parent.name}/{dtb.name}"
        for device in inventory.devices:
            devices += 1
            try:
                correlation = correlate(inventory.tree, device, page)
                simple += correlation.verdict == "simple"
                build_guest_tree(parse_dtb(base, "virt.dtb"), inventory.tree, [correlation])
            except DeviceTreeError as exc:
                key = "the device tree does not read: " + fold(exc.what)
            except HostdevError as exc:
                key = fold(exc.what)
            else:
                accepted += 1
                continue
            refusals[key] += 1
            examples.setdefault(key, f"{board} {device.name}")
    elapsed = time.perf_counter() - t0
    print(f"coverage: {len(dtbs)} DTBs, {devices} enabled devices, {elapsed:.1f} s")
    print(f"  guest node built: {accepted} ({100 * accepted / max(devices, 1):.1f} %); "
          f"correlation 'simple': {simple} ({100 * simple / max(devices, 1):.1f} %)")
    print(f"  refused: {devices - accepted}, {len(refusals)} distinct reasons; the top "
          f"{min(args.top, len(refusals))}:")
    for reason, count in refusals.most_common(args.top):
        print(f"  {count:7d} {100 * count / max(devices, 1):5.1f} %  {reason}")
        print(f"  {'':7} {'':5}    e.g. {examples[reason]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
