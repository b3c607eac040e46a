#!/usr/bin/env python3
"""Command benchmark: interactive commands against a bare interpreter start.

Run from the repository root:

    .venv/bin/python benchmarks/bench_cli.py [--rounds 30] [--interpreter /usr/bin/python3]

Each case runs as a subprocess of ``--interpreter`` (default: the python
running this script), with ``plugin/`` on PYTHONPATH, started as the
``platform-hostdev`` console script starts it (``from platform_hostdev.cli.main
import main; sys.exit(main())``), against the zcu102 board's DTB from
Debian's arm64 kernel package (fetched and cached as the tests do,
tests/support/corpus.py):

* (a) ``<python> -c pass``: the interpreter's bare start (the baseline);
* (b) ``platform-hostdev --dtb zynqmp-zcu102-rev1.0.dtb show ff0e0000.ethernet``;
* (c) ``platform-hostdev --dtb zynqmp-zcu102-rev1.0.dtb nodedev-list``;
* (d) ``platform-hostdev --help`` (the parser alone, for reference).

The cases are interleaved round by round (so drift hits every case alike);
medians of ``--rounds`` rounds and their ratios to (a) are printed against
the target (interactive commands <= 5x a bare start). Prints figures only;
timings are never asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from tests.support.corpus import board_dtb  # noqa: E402

TARGET = 5.0
BOARD = "xilinx/zynqmp-zcu102-rev1.0.dtb"
DEVICE = "ff0e0000.ethernet"


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: "
                         f"{done.stderr.decode(errors='replace')}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--interpreter", default=sys.executable)
    args = parser.parse_args()
    dtb = str(board_dtb(BOARD))
    env = dict(os.environ, PYTHONPATH=str(REPO / "plugin"))
    python = args.interpreter
    # what pip's console script for the entry point runs (no runpy, unlike python -m)
    tool = [python, "-c", "import sys; from platform_hostdev.cli.main import main; "
            "sys.exit(main())"]
    cases = {
        "(a) python -c pass": [python, "-c", "pass"],
        f"(b) show {DEVICE}": [*tool, "--dtb", dtb, "show", DEVICE],
        "(c) nodedev-list": [*tool, "--dtb", dtb, "nodedev-list"],
        "(d) --help": [*tool, "--help"],
    }
    for argv in cases.values():  # warm the page cache and the .pyc files
        _time(argv, env)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, argv in cases.items():
            samples[name].append(_time(argv, env))
    base = statistics.median(samples["(a) python -c pass"])
    print(f"interpreter {python}, {args.rounds} rounds, DTB {BOARD}")
    for name, times in samples.items():
        median = statistics.median(times)
        ratio = median / base
        target = "" if name.startswith(("(a)", "(d)")) else \
            f"  (target <= {TARGET:g}x: {'met' if ratio <= TARGET else 'MISSED'})"
        print(f"{name:28} {median * 1000:7.1f} ms  {ratio:5.2f}x{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
