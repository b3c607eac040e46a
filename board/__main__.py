"""Command line: ``python3 -m board {info,build,run}`` from the repository root.

``build`` and ``run`` take ``--machine virt|raspi3b`` (board/machines.py;
virt by default), e.g. ``python3 -m board run --machine raspi3b -- CMD``.

Exit codes: ``run`` exits with the guest command's code; 2 for a usage error;
3 when the board could not be built or the guest did not finish (missing tool,
download failure, watchdog timeout, crash), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from board.apt_arm64 import AptArm64
from board.build import build_board
from board.errors import BoardError
from board.machines import MACHINES, VIRT
from board.run import DEFAULT_TIMEOUT, run_in_guest

EXIT_BOARD_ERROR = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m board", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="action", required=True)
    info = sub.add_parser("info", help="print the resolved kernel version and cache paths")
    info.add_argument("--refresh", action="store_true", help="update the apt lists first")
    build = sub.add_parser("build", help="build (or find cached) kernel, modules, initramfs")
    build.add_argument("--refresh", action="store_true", help="update the apt lists first")
    run = sub.add_parser("run", help="boot the board and run CMD in /repo (after --)")
    for action in (build, run):
        action.add_argument("--machine", choices=sorted(MACHINES), default=VIRT.name,
                            help=f"the QEMU machine to boot (default {VIRT.name})")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                     help=f"watchdog seconds, boot included (default {DEFAULT_TIMEOUT:.0f})")
    run.add_argument("--smp", type=int, default=None,
                     help="guest CPUs (default: the machine's; raspi3b has 4, fixed)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    return parser


def _echo(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def _info() -> int:
    apt = AptArm64()
    apt.update()
    kernel = apt.resolve_kernel()
    kdir = apt.kernel_dir(kernel)
    age = apt.lists_age()
    print(f"kernel release: {kernel.release}")
    print(f"kernel package version: {kernel.version}")
    print(f"apt lists: {apt.root / 'lists'} (updated {0 if age is None else age / 3600:.1f} h ago)")
    print(f"downloads: {apt.debs}")
    print(f"kernel cache: {kdir}")
    for entry in sorted(kdir.glob("*")) if kdir.is_dir() else []:
        print(f"  {entry.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="board: %(message)s", stream=sys.stderr)
    try:
        if args.action == "info":
            if args.refresh:
                AptArm64().update(force=True)
            return _info()
        started = time.monotonic()
        board = build_board(refresh=getattr(args, "refresh", False), machine=args.machine)
        if args.action == "build":
            for key, value in board.describe().items():
                print(f"{key}: {value}")
            print(f"build time: {time.monotonic() - started:.1f} s")
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            print("board run: no command given (python3 -m board run -- CMD...)", file=sys.stderr)
            return 2
        result = run_in_guest(command, args.timeout, board=board, smp=args.smp,
                              stream=_echo)
        print(f"board: guest exit code {result.exit_code}; boot to /init {result.boot_time:.1f} s;"
              f" command done at {result.duration:.1f} s; total "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        return result.exit_code
    except BoardError as exc:
        print(f"board: error: {exc}", file=sys.stderr)
        return EXIT_BOARD_ERROR


if __name__ == "__main__":
    sys.exit(main())
