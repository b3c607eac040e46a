"""The host's own Debian archive for a suite, read from its apt sources (stdlib only).

The clean root of the package test is debootstrapped from the mirror the host's
apt already uses; nothing here names a mirror host. Read, in apt's order:
``/etc/apt/sources.list``, then ``/etc/apt/sources.list.d/*.list`` and
``*.sources`` sorted by name (other names, e.g. ``x.list.disabled``, are
ignored as apt ignores them). One-line entries are ``deb [opt=value ...] URI
SUITE COMPONENT...``; deb822 stanzas have ``Types``, ``URIs``, ``Suites``,
``Components``, ``Enabled`` and ``Signed-By`` (apt's sources.list(5)). The
archive is the first ``deb`` entry with the suite and component ``main``.
``$PLATFORM_HOSTDEV_DEBIAN_MIRROR`` overrides the URI (the keyring stays the
host entry's, or Debian's archive keyring).

A small reader of the test's own; scripts/setup-host and the board read the
same files for their mirrors, and the readers are meant to become one.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Archive", "MirrorError", "MIRROR_ENV", "DEBIAN_KEYRING", "host_archive",
           "host_codename"]

MIRROR_ENV = "PLATFORM_HOSTDEV_DEBIAN_MIRROR"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class MirrorError(Exception):
    """No usable Debian archive in the host's apt sources; the message says what to do."""


@dataclass(frozen=True)
class Archive:
    uri: str
    suite: str
    keyring: str          # a keyring file debootstrap can check the Release file with
    origin: str           # where it was found: "FILE:LINE" or the environment variable


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """VERSION_CODENAME of the host (bookworm on Debian 12)."""
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip().strip('"'):
            return value.strip().strip('"')
    raise MirrorError(f"{os_release} names no VERSION_CODENAME: this test needs a Debian host")


def _source_files(etc: Path) -> list[Path]:
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir()
                        if p.is_file() and p.suffix in (".list", ".sources"))
    return files


def _one_line_entries(path: Path) -> list[tuple[str, list[str], list[str], dict[str, str], int]]:
    """(uri, suites, components, options, line) of each ``deb`` line."""
    found = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        rest = line[3:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for item in inside.split():
                key, _, value = item.partition("=")
                options[key.lower()] = value
        words = rest.split()
        if len(words) >= 2:
            found.append((words[0], [words[1]], words[2:], options, number))
    return found


def _deb822_entries(path: Path) -> list[tuple[str, list[str], list[str], dict[str, str], int]]:
    """(uri, suites, components, fields, first line) of each enabled ``deb`` stanza and URI."""
    found = []
    stanza: dict[str, str] = {}
    start = 0
    last = ""

    def flush() -> None:
        types = stanza.get("types", "").split()
        if "deb" in types and stanza.get("enabled", "yes").lower() != "no":
            for uri in stanza.get("uris", "").split():
                found.append((uri, stanza.get("suites", "").split(),
                              stanza.get("components", "").split(), dict(stanza), start))

    lines = path.read_text(errors="replace").splitlines()
    for number, raw in enumerate(lines + [""], 1):
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                flush()
            stanza, last = {}, ""
            continue
        if raw[0] in " \t" and last:  # a continuation line (multi-line Signed-By keys)
            stanza[last] += "\n" + raw.strip()
            continue
        match = re.match(r"([A-Za-z0-9-]+):\s*(.*)", raw)
        if match is None:
            continue
        if not stanza:
            start = number
        last = match.group(1).lower()
        stanza[last] = match.group(2).strip()
    return found


def host_archive(suite: str, etc: Path = Path("/etc/apt"),
                 env: dict[str, str] | None = None) -> Archive:
    """The host's archive for ``suite`` (component main); MirrorError when there is none."""
    env = dict(os.environ) if env is None else env
    files = _source_files(etc)
    chosen: Archive | None = None
    for path in files:
        parse = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        for uri, suites, components, options, line in parse(path):
            if suite in suites and "main" in components and uri.split(":", 1)[0] in (
                    "http", "https", "file"):
                keyring = options.get("signed-by", "")
                if "\n" in keyring or "BEGIN PGP" in keyring:
                    keyring = ""  # an inline key: debootstrap needs a file
                chosen = Archive(uri.rstrip("/"), suite, keyring or DEBIAN_KEYRING,
                                 f"{path}:{line}")
                break
        if chosen is not None:
            break
    override = env.get(MIRROR_ENV, "").strip()
    if override:
        keyring = chosen.keyring if chosen is not None else DEBIAN_KEYRING
        return Archive(override.rstrip("/"), suite, keyring, MIRROR_ENV)
    if chosen is None:
        names = ", ".join(str(p) for p in files) or f"nothing in {etc}"
        raise MirrorError(f"no 'deb' source for suite {suite} with component main in the "
                          f"host's apt sources ({names}): add one, or set {MIRROR_ENV} to a "
                          "Debian mirror's URI")
    return chosen
