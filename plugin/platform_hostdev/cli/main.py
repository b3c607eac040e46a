"""The ``platform-hostdev`` command: virsh-style subcommands.

``COMMANDS`` names every subcommand with its module and one-line help; a
module's ``configure(name, parser)`` adds the command's arguments and its
handler, ``handler(args, ctx) -> int``. Only the module of the command being
run is imported (``--help`` lists the commands from the table alone), and a
module imports at its top only what all of its commands use: an interactive
command starts like virsh.

User errors (:class:`HostdevError`) print ``error:``/``hint:`` lines on stderr
and exit 1; a command run with ``--json`` prints ``{"error": {"code", "what",
"fix", ...}}`` on stdout instead (same exit code). Bad usage exits 2, as
argparse does.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from platform_hostdev.errors import HostdevError, printable_lines

if TYPE_CHECKING:
    from platform_hostdev.host.boundary import Host
    from platform_hostdev.host.inventory import Inventory

__all__ = ["main", "Context", "build_parser", "COMMANDS"]

_DISCOVERY = "platform_hostdev.cli.discovery"
_DOMAIN = "platform_hostdev.cli.domain"
_BINDING = "platform_hostdev.cli.binding"

COMMANDS: dict[str, tuple[str, str]] = {
    "nodedev-list": (_DISCOVERY, "list platform and amba devices"),
    "nodedev-dumpxml": (_DISCOVERY, "libvirt nodedev-style XML for a device"),
    "show": (_DISCOVERY, "a device's VFIO regions/IRQs tied to its DT origin, and its "
             "entanglements"),
    "translate": (_DOMAIN, "print the libvirt form of a domain XML (offline)"),
    "define": (_DOMAIN, "define a domain from an XML file with platform hostdevs"),
    "dumpxml": (_DOMAIN, "a domain's XML in the user form"),
    "attach-device": (_DOMAIN, "add a platform hostdev (XML file) to/from a domain"),
    "detach-device": (_DOMAIN, "remove a platform hostdev (XML file) to/from a domain"),
    "edit": (_DOMAIN, "edit a domain's XML in the user form with $EDITOR"),
    "nodedev-detach": (_BINDING, "bind a device to vfio-platform / vfio-amba"),
    "nodedev-reattach": (_BINDING, "give a detached device back to its driver"),
    "recover": (_BINDING, "restore devices an interrupted detach/reattach left"),
    "reserve-apply": (_BINDING, "bind the devices reserved with nodedev-detach --persistent "
                      "to vfio (run at boot by the udev rule and the unit)"),
    "inspect": ("platform_hostdev.cli.inspect", "open a vfio-bound device through VFIO and "
                "check its regions/IRQs against the DT"),
    "check-host": ("platform_hostdev.cli.checkhost", "check this host for platform-device "
                   "passthrough (like virt-host-validate)"),
    "hook": ("platform_hostdev.cli.hook", "install or remove the libvirt qemu hook"),
    "sync": ("platform_hostdev.cli.guestdt", "generate the guest device tree of a domain "
             "with platform hostdevs (run after changing memory, CPUs, machine or devices)"),
}
"""Subcommand -> (module, one-line help), in the order ``--help`` lists them."""

_GLOBAL_WITH_VALUE = ("--root", "--dtb", "--page-size")


class Context:
    """What a command works with: the host, the output streams, the environment, libvirt.

    Tests build one with their own boundaries: ``host`` (a
    :class:`~platform_hostdev.host.boundary.Host` around a fake kernel), ``conn``
    (a libvirt connection), ``run_editor`` (argv -> exit status, for ``edit``),
    ``vfio_syscalls`` (for ``inspect``). Without ``host``, the host at ``root``
    (``--root``, default ``/``) is used.
    """

    def __init__(self, *, host: Host | None = None, root: str = "/", dtb: str | None = None,
                 out: TextIO | None = None, err: TextIO | None = None,
                 env: dict[str, str] | None = None, conn: Any = None,
                 run_editor: Callable[[Sequence[str]], int] | None = None,
                 vfio_syscalls: Any = None) -> None:
        self._host = host
        self.root = str(host.root) if host is not None else root
        self.dtb = dtb
        self.page_size: str | None = None  # --page-size as given (with --dtb)
        self.out: TextIO = out if out is not None else sys.stdout
        self.err: TextIO = err if err is not None else sys.stderr
        self.env: dict[str, str] = env if env is not None else dict(os.environ)
        self.conn = conn
        self.run_editor = run_editor
        self.vfio_syscalls = vfio_syscalls
        self._inventory: Inventory | None = None

    @property
    def host(self) -> Host:
        """The host the command acts on (built once from ``root`` unless injected)."""
        if self._host is None:
            import platform_hostdev as api

            self._host = api.host_at(self.root)
        return self._host

    def print(self, text: str = "") -> None:
        """A line (or lines) of text; any control character in it (from a device tree, sysfs)
        is escaped, so nothing printed can move the cursor, recolour or retitle a terminal."""
        print(printable_lines(text), file=self.out)

    def warn(self, text: str) -> None:
        """A line on stderr (warnings, notes), escaped as :meth:`print` escapes."""
        print(printable_lines(text), file=self.err)

    def print_json(self, data: Any) -> None:
        import json

        json.dump(data, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def inventory(self) -> Inventory:
        """The devices of the host, or of ``--dtb``, scanned once."""
        if self._inventory is None:
            import platform_hostdev as api
            from platform_hostdev.host.pagesize import parse_page_size

            size = parse_page_size(self.page_size) if self.page_size is not None else None
            self._inventory = api.load_inventory(self.host if self.dtb is None else self.root,
                                                 self.dtb, page_size=size)
        return self._inventory

    def use_inventory(self, inventory: Inventory) -> None:
        """Use ``inventory`` instead of scanning (tests)."""
        self._inventory = inventory


Handler = Callable[[argparse.Namespace, Context], int]


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() tells it ($COLUMNS, the tty, 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the width: without one it imports shutil (~5 ms) at the
    first add_argument."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _columns() - 2)


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (after the global options), or None."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _GLOBAL_WITH_VALUE:
            i += 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` is configured (and imported),
    every command when ``argv`` is None."""
    parser = argparse.ArgumentParser(
        prog="platform-hostdev",
        description="Device-tree platform/AMBA device passthrough for libvirt (vfio-platform).",
        formatter_class=_Formatter,
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
    chosen = None if argv is None else _command_of(argv)
    if chosen in COMMANDS and not {"-h", "--help"} & set(argv or ()):
        names = [chosen]  # a parser per command costs ~1 ms: build the one that runs
    else:
        names = list(COMMANDS)  # --help, a usage error: every command, by name and help
    for name in names:
        module_name, help_text = COMMANDS[name]
        p = sub.add_parser(name, help=help_text, formatter_class=_Formatter)
        if argv is None or name == chosen:
            __import__(module_name)  # the importlib package itself costs a start ~2 ms
            sys.modules[module_name].configure(name, p)
    return parser


def _print_error(exc: HostdevError, args: argparse.Namespace, ctx: Context) -> None:
    if getattr(args, "json", False):
        ctx.print_json({"error": exc.to_json()})
        return
    ctx.warn(f"error: {exc.what}")
    if exc.fix:
        ctx.warn(f"hint: {exc.fix}")


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 user error, 2 usage)."""
    ctx = ctx or Context()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["reserve-apply", "--udev"]:
        # the udev rule's call, on the add event of every DT device of a host with
        # reservations: no parser, and only the reservation file read for most devices
        from platform_hostdev.binding.boot import udev_main

        return udev_main(ctx.host, ctx.env, ctx.out, ctx.err)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors and --help
        return int(exc.code or 0)
    if args.root is not None and ctx._host is None:
        ctx.root = args.root
    if args.dtb is not None:
        ctx.dtb = args.dtb
    if args.page_size is not None:
        ctx.page_size = args.page_size
    handler: Handler = args.handler
    try:
        return handler(args, ctx)
    except HostdevError as exc:
        _print_error(exc, args, ctx)
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
