"""The ``platform-hostdev`` command: virsh-style subcommands.

Each feature module registers its subcommands through a ``register(sub)``
function listed in ``_COMMAND_MODULES``; a handler is ``handler(args, ctx) ->
int``. User errors (:class:`HostdevError`) print ``error:``/``hint:`` lines and
exit 1; bad usage exits 2, as argparse does.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from platform_hostdev.errors import HostdevError

__all__ = ["main", "Context", "build_parser"]

# Modules that contribute subcommands; each defines register(subparsers).
_COMMAND_MODULES = (
    "platform_hostdev.cli.discovery",
    "platform_hostdev.cli.domain",
    "platform_hostdev.cli.binding",
    "platform_hostdev.cli.inspect",
    "platform_hostdev.cli.checkhost",
    "platform_hostdev.cli.hook",
    "platform_hostdev.cli.guestdt",
)


@dataclass
class Context:
    """Boundaries a command may use, injected for tests."""

    root: str = "/"
    dtb: str | None = None
    page_size: str | None = None  # --page-size as given (with --dtb)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    conn: Any = None  # a libvirt connection, or a factory-provided one
    extras: dict[str, Any] = field(default_factory=dict)

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def print_json(self, data: Any) -> None:
        json.dump(data, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def inventory(self) -> Any:
        cached = self.extras.get("inventory")
        if cached is None:
            from platform_hostdev.host.inventory import load_inventory
            from platform_hostdev.host.pagesize import parse_page_size

            size = parse_page_size(self.page_size) if self.page_size is not None else None
            cached = load_inventory(self.root, self.dtb, page_size=size)
            self.extras["inventory"] = cached
        return cached


Handler = Callable[[argparse.Namespace, Context], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="platform-hostdev",
        description="Device-tree platform/AMBA device passthrough for libvirt (vfio-platform).",
    )
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="read the host below DIR instead of / (fake hosts, chroots)")
    parser.add_argument("--dtb", default=None, metavar="FILE",
                        help="analyse a board offline from its DTB instead of the live host")
    parser.add_argument("--page-size", default=None, metavar="SIZE",
                        help="with --dtb: the page size of the board's kernel, 4K, 16K or 64K "
                             "(or bytes); default 4K, and the output says it was assumed")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 user error, 2 usage)."""
    ctx = ctx or Context()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors and --help
        return int(exc.code or 0)
    if args.root is not None:
        ctx.root = args.root
    if args.dtb is not None:
        ctx.dtb = args.dtb
    if args.page_size is not None:
        ctx.page_size = args.page_size
    handler: Handler = args.handler
    try:
        return handler(args, ctx)
    except HostdevError as exc:
        print(f"error: {exc.what}", file=ctx.err)
        if exc.fix:
            print(f"hint: {exc.fix}", file=ctx.err)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. '| head'): stop quietly, as virsh does
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        finally:
            os.close(devnull)
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
