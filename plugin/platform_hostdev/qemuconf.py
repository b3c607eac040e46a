"""libvirt's qemu.conf, read as libvirt reads it (key = value, lists, strings, comments).

Only what platform passthrough needs: ``user``/``group`` (who must own
/dev/vfio/N), ``cgroup_device_acl``, ``namespaces``. Users and groups are
resolved from ``<root>/etc/passwd`` and ``<root>/etc/group`` so fake hosts
resolve their own.
"""
from __future__ import annotations

import re
from typing import Any

from .errors import HostdevError
from .host import Sysfs

__all__ = ["parse_qemu_conf", "read_qemu_conf", "qemu_ids", "QEMU_CONF",
           "DEFAULT_USER", "DEFAULT_GROUP"]

QEMU_CONF = "/etc/libvirt/qemu.conf"
# Debian's build defaults (libvirt configured with qemu_user/qemu_group libvirt-qemu).
DEFAULT_USER = "libvirt-qemu"
DEFAULT_GROUP = "libvirt-qemu"
_TOKEN = re.compile(r'\s*(?:(\[)|(\])|(,)|"((?:[^"\\]|\\.)*)"|([0-9]+)|(#[^\n]*))')


def _value(text: str, pos: int, where: str) -> tuple[Any, int]:
    m = _TOKEN.match(text, pos)
    if not m:
        raise HostdevError(f"{where}: cannot parse the value at {text[pos:pos + 20]!r}",
                           "fix the syntax (strings in double quotes, lists in [ ])")
    if m.group(1):  # list
        items: list[Any] = []
        pos = m.end()
        while True:
            m2 = _TOKEN.match(text, pos)
            if m2 and m2.group(2):
                return items, m2.end()
            if m2 and (m2.group(3) or m2.group(6)):
                pos = m2.end()
                continue
            item, pos = _value(text, pos, where)
            items.append(item)
    if m.group(4) is not None:
        return m.group(4).encode().decode("unicode_escape"), m.end()
    if m.group(5) is not None:
        return int(m.group(5)), m.end()
    raise HostdevError(f"{where}: unexpected {m.group(0).strip()!r}", "fix the syntax")


def parse_qemu_conf(text: str, where: str = QEMU_CONF) -> dict[str, Any]:
    """Settings of a libvirt config file; a syntax error names the file and place."""
    settings: dict[str, Any] = {}
    pos = 0
    key_re = re.compile(r"\s*(?:#[^\n]*)?")
    assign = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")
    while True:
        pos = key_re.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            return settings
        m = assign.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise HostdevError(f"{where} line {line}: expected 'name = value'",
                               "fix the line (see the comments in the stock qemu.conf)")
        value, pos = _value(text, m.end(), where)
        settings[m.group(1)] = value


def read_qemu_conf(sysfs: Sysfs) -> dict[str, Any]:
    text = sysfs.read_text(QEMU_CONF)
    return parse_qemu_conf(text) if text else {}


def _lookup(sysfs: Sysfs, table: str, name: str) -> int | None:
    if name.startswith("+") and name[1:].isdigit():
        return int(name[1:])
    for line in (sysfs.read_text(table) or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def qemu_ids(sysfs: Sysfs, settings: dict[str, Any] | None = None) -> tuple[int, int]:
    """The uid and gid QEMU runs as (qemu.conf user/group, Debian's defaults otherwise)."""
    settings = read_qemu_conf(sysfs) if settings is None else settings
    user = str(settings.get("user", DEFAULT_USER))
    group = str(settings.get("group", DEFAULT_GROUP))
    uid = _lookup(sysfs, "/etc/passwd", user)
    gid = _lookup(sysfs, "/etc/group", group)
    if uid is None or gid is None:
        missing = user if uid is None else group
        raise HostdevError(f"qemu.conf's QEMU {'user' if uid is None else 'group'} "
                           f"{missing!r} does not exist on this host",
                           f"set user/group in {QEMU_CONF} to the account QEMU runs as")
    return uid, gid
