"""libvirt's qemu.conf, read as libvirt reads it (key = value, lists, strings, comments).

Only what platform passthrough needs: ``user``/``group`` (who must own
/dev/vfio/N), ``cgroup_device_acl``, ``namespaces``. Users and groups are
resolved from ``<root>/etc/passwd`` and ``<root>/etc/group`` so fake hosts
resolve their own.
"""
from __future__ import annotations

import re

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs

__all__ = ["parse_conf", "read_qemu_conf", "qemu_ids", "QEMU_CONF", "ConfValue",
           "ConfSyntaxError", "DEFAULT_USER", "DEFAULT_GROUP"]

QEMU_CONF = "/etc/libvirt/qemu.conf"
# Debian's build defaults (libvirt configured with qemu_user/qemu_group libvirt-qemu).
DEFAULT_USER = "libvirt-qemu"
DEFAULT_GROUP = "libvirt-qemu"
ConfValue = str | int | list[str | int]
_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+) | (?P<comment>\#[^\n]*) | (?P<newline>\n) |
    (?P<tstring>\"\"\"(?:.|\n)*?\"\"\") | (?P<string>"[^"\n]*"|'[^'\n]*') |
    (?P<int>-?\d+) | (?P<key>[A-Za-z_][A-Za-z0-9_.]*) | (?P<punct>[=\[\],;])
""", re.VERBOSE)
_SYNTAX_FIX = ("fix the syntax (key = value; strings in quotes; lists in [ ]): libvirtd refuses "
               "to start with this file too")


class ConfSyntaxError(HostdevError):
    """A libvirt config file libvirtd itself would refuse."""

    code = "config-invalid"


def _tokens(text: str, what: str) -> list[tuple[str, str, int]]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConfSyntaxError(f"{what} line {line}: unexpected {text[pos]!r}", _SYNTAX_FIX)
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group(), line))
        line += match.group().count("\n")
        pos = match.end()
    tokens.append(("eof", "", line))
    return tokens


def parse_conf(text: str, what: str = "the config file") -> dict[str, ConfValue]:
    """The settings of a libvirt config file (src/util/virconf.c syntax).

    ``key = value`` statements end at a newline or ``;``; a value is a string
    in double or single quotes (no escapes) or triple double quotes, an
    integer, or a list in ``[ ]`` (commas between items, a trailing comma,
    newlines and ``#`` comments allowed inside). ConfSyntaxError names the line.
    """
    tokens = _tokens(text, what)
    settings: dict[str, ConfValue] = {}
    i = 0

    def peek() -> tuple[str, str, int]:
        return tokens[min(i, len(tokens) - 1)]

    def fail(message: str) -> ConfSyntaxError:
        return ConfSyntaxError(f"{what} line {peek()[2]}: {message}", _SYNTAX_FIX)

    def skip_newlines() -> None:
        nonlocal i
        while peek()[0] == "newline":
            i += 1

    def scalar() -> str | int:
        nonlocal i
        kind, value, _ = peek()
        if kind not in ("int", "tstring", "string"):
            raise fail(f"expected a value, found {value or 'the end of the file'!r}")
        i += 1
        if kind == "int":
            return int(value)
        return value[3:-3] if kind == "tstring" else value[1:-1]

    while peek()[0] != "eof":
        kind, key, _ = peek()
        if kind == "newline" or key == ";":
            i += 1
            continue
        if kind != "key":
            raise fail(f"expected a setting name, found {key!r}")
        i += 1
        if peek()[1] != "=":
            raise fail(f"expected '=' after {key}")
        i += 1
        if peek()[1] != "[":
            settings[key] = scalar()
        else:
            i += 1
            items: list[str | int] = []
            skip_newlines()
            while peek()[1] != "]":
                items.append(scalar())
                skip_newlines()
                if peek()[1] == ",":
                    i += 1
                    skip_newlines()
                elif peek()[1] != "]":
                    raise fail(f"expected ',' or ']' in the list of {key}")
            i += 1
            settings[key] = items
        if peek()[0] not in ("newline", "eof") and peek()[1] != ";":
            raise fail(f"unexpected {peek()[1]!r} after the value of {key}")
    return settings


def read_qemu_conf(fs: HostFs) -> dict[str, ConfValue]:
    text = fs.read_text(QEMU_CONF)
    return parse_conf(text, QEMU_CONF) if text else {}


def _lookup(fs: HostFs, table: str, name: str) -> int | None:
    if name.startswith("+") and name[1:].isdigit():
        return int(name[1:])
    for line in (fs.read_text(table) or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def qemu_ids(fs: HostFs, settings: dict[str, ConfValue] | None = None) -> tuple[int, int]:
    """The uid and gid QEMU runs as (qemu.conf user/group, Debian's defaults otherwise)."""
    settings = read_qemu_conf(fs) if settings is None else settings
    user = str(settings.get("user", DEFAULT_USER))
    group = str(settings.get("group", DEFAULT_GROUP))
    uid = _lookup(fs, "/etc/passwd", user)
    gid = _lookup(fs, "/etc/group", group)
    if uid is None or gid is None:
        missing = user if uid is None else group
        raise HostdevError(f"qemu.conf's QEMU {'user' if uid is None else 'group'} "
                           f"{missing!r} does not exist on this host",
                           f"set user/group in {QEMU_CONF} to the account QEMU runs as",
                           code="config-invalid")
    return uid, gid
