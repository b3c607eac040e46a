"""``-c/--connect URI``: the libvirt connection of every command that talks to libvirt.

Declared once here (as virsh's ``-c``): the default is ``$LIBVIRT_DEFAULT_URI``,
else ``qemu:///system``. A test injects the connection as ``Context.conn``.
libvirt itself is imported only when a connection is opened.
"""
from __future__ import annotations

import argparse
from typing import Any

from platform_hostdev.cli.main import Context

__all__ = ["add_connect_option", "connection_uri", "connection"]


def add_connect_option(parser: argparse.ArgumentParser) -> None:
    """Add ``-c/--connect URI`` to a command's parser."""
    parser.add_argument("-c", "--connect", metavar="URI", default=None,
                        help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")


def connection_uri(args: argparse.Namespace, ctx: Context) -> str:
    """The URI given with -c, else the default one."""
    from platform_hostdev.virt.connection import default_uri

    return args.connect or default_uri(ctx.env)


def connection(args: argparse.Namespace, ctx: Context) -> Any:
    """``ctx.conn``, opened on first use from the command's URI."""
    if ctx.conn is None:
        from platform_hostdev.virt.connection import open_connection

        ctx.conn = open_connection(connection_uri(args, ctx))
    return ctx.conn
