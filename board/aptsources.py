"""The host's own Debian mirrors, read from its apt sources (standard library only).

One reader for everything that needs a Debian archive: ``scripts/setup-host``
(through ``python3 -m board.aptsources``) and the board's private arm64 lists
(:mod:`board.apt_arm64`). Nothing names a mirror host: the URIs come from

- deb822 files ``/etc/apt/sources.list.d/*.sources`` (``Types``, ``URIs``,
  ``Suites``, ``Components``, ``Enabled``, options such as ``Signed-By``,
  several URIs and suites per stanza, ``#`` comments), and
- one-line files ``/etc/apt/sources.list`` and ``sources.list.d/*.list``
  (``deb [opt=value ...] URI suite component...``),

read in apt's order, with ``deb-src`` entries, disabled stanzas and files apt
ignores (other extensions, e.g. ``foo.list.disabled``) left out. The main
archive is the first ``deb`` entry of suite ``<codename>`` (``VERSION_CODENAME``
of ``/etc/os-release``) with component ``main``, preferring entries signed by
Debian's archive keyring (or not restricted by ``Signed-By``); the security
archive is the one of ``<codename>-security``; backports is the host's
``<codename>-backports`` entry, else the main archive's URI and options.

Overrides: ``$PLATFORM_HOSTDEV_DEBIAN_MIRROR`` replaces the main archive's URI
(and so the backports one), ``$PLATFORM_HOSTDEV_DEBIAN_SECURITY`` the security
archive's; the options (``Signed-By``...) stay the host's, or Debian's archive
keyring when the host has no such entry.

Command line (from the repository root; any python3)::

    python3 -m board.aptsources show
    python3 -m board.aptsources backports-source [--ignore FILE]

``show`` prints the archives the board's lists use (overrides applied);
``backports-source`` prints the deb822 stanza to install as the host's source
for ``<codename>-backports`` (nothing when the host already has one), from the
host's configuration alone: the overrides are for the board's private lists and
never end up in the host's apt configuration.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from board.errors import DownloadError

__all__ = [
    "DEBIAN_KEYRING",
    "MIRROR_ENV",
    "SECURITY_ENV",
    "Archive",
    "Archives",
    "MirrorError",
    "Source",
    "discover",
    "host_codename",
    "parse_deb822",
    "parse_one_line",
    "read_sources",
    "source_files",
]

MIRROR_ENV = "PLATFORM_HOSTDEV_DEBIAN_MIRROR"
SECURITY_ENV = "PLATFORM_HOSTDEV_DEBIAN_SECURITY"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_ETC = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")

# Options worth carrying from the host's entry to ours: trust and validity, not
# architectures, languages or targets (ours set their own).
CARRIED_OPTIONS = (
    "signed-by", "trusted", "check-valid-until", "valid-until-min", "valid-until-max",
    "check-date", "date-max-future", "allow-insecure", "allow-weak",
    "allow-downgrade-to-insecure", "inrelease-path", "by-hash", "pdiffs",
)
# deb822 field <-> one-line option where the two spellings differ (apt's sourcelist.cc).
_DEB822_TO_OPTION = {"architectures": "arch", "languages": "lang", "targets": "target"}
_OPTION_TO_DEB822 = {"arch": "Architectures", "lang": "Languages", "target": "Targets",
                     "inrelease-path": "InRelease-Path", "pdiffs": "PDiffs"}
_STRUCTURAL = {"types", "uris", "suites", "components", "enabled"}
_FALSE = {"no", "false", "without", "off", "disable", "0"}
# apt reads only parts with these names (Dir::Ignore-Files-Silently covers the rest).
_PART_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(list|sources)$")


class MirrorError(DownloadError):
    """No usable Debian archive in the host's apt configuration nor in the override."""


@dataclass(frozen=True)
class Source:
    """One ``deb`` entry: a URI serving one suite (a stanza with N URIs gives N entries)."""

    uri: str
    suite: str
    components: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # one-line option names, host's values
    origin: str = ""  # "file:line" of the entry

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None

    @property
    def signed_by(self) -> str | None:
        return self.option("signed-by")


@dataclass(frozen=True)
class Archive:
    """An archive we use: a URI, the apt options to use it with, and where it came from."""

    uri: str
    options: tuple[tuple[str, str], ...]
    origin: str

    @property
    def signed_by(self) -> str | None:
        return dict(self.options).get("signed-by")

    def deb822(self, suites: Sequence[str], components: Sequence[str] = ("main",)) -> str:
        """A deb822 stanza for ``suites`` from this archive (options kept, embedded keys too)."""
        lines = ["Types: deb", f"URIs: {self.uri}", f"Suites: {' '.join(suites)}",
                 f"Components: {' '.join(components)}"]
        for key, value in self.options:
            name = _OPTION_TO_DEB822.get(key, "-".join(p.capitalize() for p in key.split("-")))
            if "\n" in value:  # an embedded key: every line a continuation, " ." for blank
                lines.append(f"{name}:")
                lines.extend(f" {line}" if line.strip() else " ." for line in value.split("\n"))
            else:
                lines.append(f"{name}: {value}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Archives:
    """The Debian archives of a host: main (always), security and backports (if any)."""

    codename: str
    main: Archive
    security: Archive | None
    backports: Archive
    host_backports: bool  # the host has its own <codename>-backports entry
    files: tuple[str, ...] = field(default=())  # the files read


# -- parsing --------------------------------------------------------------------------------


def _is_false(value: str) -> bool:
    return value.strip().lower() in _FALSE


def _normalise(name: str, value: str) -> str:
    """Signed-By lists (paths, fingerprints) comma-separated; an embedded key verbatim."""
    if name == "signed-by" and "\n" not in value.strip():
        return ",".join(filter(None, re.split(r"[\s,]+", value.strip())))
    return value.strip("\n") if "\n" in value.strip() else value.strip()


def _deb822_blocks(text: str) -> Iterable[tuple[int, dict[str, str]]]:
    """(first line number, fields) per stanza; field names lower-cased, comments dropped."""
    fields: dict[str, str] = {}
    start = 0
    key = ""
    for number, raw in enumerate(text.splitlines() + [""], start=1):
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield start, fields
            fields, key = {}, ""
            continue
        if line[:1] in (" ", "\t"):
            if key:
                stripped = line.strip()
                fields[key] += "\n" + ("" if stripped == "." else stripped)
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue  # not a field; apt would reject the file, we ignore the line
        if not fields:
            start = number
        key = name.strip().lower()
        fields[key] = value.strip()


def parse_deb822(text: str, origin: str = "") -> list[Source]:
    """The enabled ``deb`` entries of a deb822 ``.sources`` file."""
    found: list[Source] = []
    for line, fields in _deb822_blocks(text):
        if "deb" not in fields.get("types", "").split():
            continue
        if _is_false(fields.get("enabled", "yes")):
            continue
        options = tuple(
            (_DEB822_TO_OPTION.get(name, name), _normalise(name, value))
            for name, value in fields.items() if name not in _STRUCTURAL
        )
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                found.append(Source(uri=uri, suite=suite, components=components,
                                    options=options, origin=f"{origin}:{line}"))
    return found


def _one_line_options(tokens: list[str]) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """Split ``[a=b c=d]`` (one or several tokens) off the front of an entry's tokens."""
    if not tokens or not tokens[0].startswith("["):
        return (), tokens
    words: list[str] = []
    rest = list(tokens)
    while rest:
        token = rest.pop(0)
        closed = token.endswith("]")
        words.extend(filter(None, token.strip("[]").split()))
        if closed:
            break
    options = []
    for word in words:
        name, _, value = word.partition("=")
        name = name.rstrip("+-").lower()
        options.append((name, _normalise(name, value)))
    return tuple(options), rest


def parse_one_line(text: str, origin: str = "") -> list[Source]:
    """The ``deb`` entries of a one-line ``sources.list`` file (comments, deb-src skipped)."""
    found: list[Source] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        tokens = line.split()
        if not tokens or tokens[0] != "deb":
            continue
        options, rest = _one_line_options(tokens[1:])
        if rest and rest[0].startswith("cdrom:[") and "]" not in rest[0]:
            while len(rest) > 1 and "]" not in rest[0]:
                rest[0:2] = [f"{rest[0]} {rest[1]}"]
        if len(rest) < 2:
            continue
        uri, suite, *components = rest
        found.append(Source(uri=uri, suite=suite, components=tuple(components),
                            options=options, origin=f"{origin}:{number}"))
    return found


def source_files(etc: Path = APT_ETC) -> list[Path]:
    """The files apt reads, in its order: sources.list, then sources.list.d by name."""
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.is_file() and _PART_NAME.match(p.name))
    return files


def read_sources(etc: Path = APT_ETC, ignore: Iterable[Path] = ()) -> tuple[list[Source],
                                                                            list[Path]]:
    """Every enabled ``deb`` entry of the host, and the files read (``ignore`` left out)."""
    skipped = {Path(p).resolve() for p in ignore}
    files = [p for p in source_files(etc) if p.resolve() not in skipped]
    sources: list[Source] = []
    for path in files:
        text = path.read_text(errors="replace")
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        sources += parse(text, str(path))
    return sources, files


def host_codename(os_release: Path = OS_RELEASE) -> str:
    """VERSION_CODENAME of os-release (e.g. bookworm)."""
    try:
        text = os_release.read_text()
    except OSError as exc:
        raise MirrorError(f"cannot read {os_release}: {exc.strerror}") from exc
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "VERSION_CODENAME" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    raise MirrorError(f"{os_release} has no VERSION_CODENAME: which Debian release is this?")


# -- discovery ------------------------------------------------------------------------------


def _usable(source: Source) -> bool:
    return not source.uri.startswith("cdrom:") and not source.suite.endswith("/")


def _debian_signed(source: Source) -> bool:
    signed_by = source.signed_by
    return signed_by is None or "debian-archive-keyring" in signed_by


def _first(sources: Sequence[Source], suites: Sequence[str]) -> Source | None:
    """The first usable entry of one of ``suites`` with component main, Debian-signed first."""
    candidates = [s for s in sources if s.suite in suites and "main" in s.components
                  and _usable(s)]
    preferred = [s for s in candidates if _debian_signed(s)]
    return (preferred or candidates or [None])[0]


def _archive(source: Source) -> Archive:
    carried = tuple((k, v) for k, v in source.options if k in CARRIED_OPTIONS)
    return Archive(uri=source.uri, options=carried, origin=source.origin)


def _override(uri: str, variable: str, like: Archive | None) -> Archive:
    options = like.options if like is not None else (("signed-by", DEBIAN_KEYRING),)
    return Archive(uri=uri.strip(), options=options, origin=f"${variable}")


def _describe(sources: Sequence[Source]) -> str:
    if not sources:
        return "no enabled deb entries"
    seen = sorted({f"{s.suite} ({' '.join(s.components) or 'no components'})"
                   for s in sources})
    return "entries for " + ", ".join(seen)


def discover(sources: Sequence[Source], codename: str, env: Mapping[str, str] | None = None,
             files: Sequence[Path | str] = (), overrides: bool = True) -> Archives:
    """The main, security and backports archives from ``sources`` and the overrides.

    ``env`` holds the overrides (default: the process environment); with
    ``overrides=False`` only the host's own configuration counts.
    """
    env = (dict(os.environ) if env is None else env) if overrides else {}
    host_main = _first(sources, [codename])
    host_security = _first(sources, [f"{codename}-security", f"{codename}/updates"])
    host_backports = _first(sources, [f"{codename}-backports"])
    main = _archive(host_main) if host_main else None
    if env.get(MIRROR_ENV, "").strip():
        main = _override(env[MIRROR_ENV], MIRROR_ENV, main)
    if main is None:
        read = ", ".join(str(f) for f in files) or "no apt source files"
        raise MirrorError(
            f"no Debian archive for suite {codename!r} with component main in the host's apt "
            f"configuration (read: {read}; found {_describe(sources)}). Add the host's Debian "
            "mirror to its apt sources"
            + (f", or set {MIRROR_ENV} to a Debian archive URI." if overrides else ".")
        )
    security = _archive(host_security) if host_security else None
    if env.get(SECURITY_ENV, "").strip():
        security = _override(env[SECURITY_ENV], SECURITY_ENV, security)
    if host_backports and not env.get(MIRROR_ENV, "").strip():
        backports = _archive(host_backports)
    else:
        backports = main
    return Archives(codename=codename, main=main, security=security, backports=backports,
                    host_backports=host_backports is not None,
                    files=tuple(str(f) for f in files))


def host_archives(etc: Path = APT_ETC, os_release: Path = OS_RELEASE,
                  env: Mapping[str, str] | None = None, ignore: Iterable[Path] = (),
                  overrides: bool = True) -> Archives:
    """:func:`discover` over this host's apt configuration."""
    sources, files = read_sources(etc, ignore)
    return discover(sources, host_codename(os_release), env, files, overrides)


# -- command line ---------------------------------------------------------------------------


def _show(archives: Archives) -> str:
    lines = [f"codename: {archives.codename}",
             f"read: {', '.join(archives.files) or '(nothing)'}"]
    for name, archive in (("main", archives.main), ("security", archives.security),
                          ("backports", archives.backports)):
        if archive is None:
            lines.append(f"{name}: none")
            continue
        options = " ".join(f"{k}={v.splitlines()[0] if v.strip() else '(embedded key)'}"
                           for k, v in archive.options)
        lines.append(f"{name}: {archive.uri} (from {archive.origin}){' ' if options else ''}"
                     f"{options}")
    return "\n".join(lines) + "\n"


def backports_source(archives: Archives) -> str:
    """The stanza to install for <codename>-backports, "" when the host has its own."""
    if archives.host_backports:
        return ""
    suite = f"{archives.codename}-backports"
    return (f"# {suite} for platform-hostdev (scripts/setup-host): the host's main archive,\n"
            f"# as in {archives.main.origin}. Rewritten or removed by each set-up.\n"
            + archives.backports.deb822([suite]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m board.aptsources",
                                     description="the host's Debian archives, from its apt sources")
    parser.add_argument("action", choices=["show", "backports-source"])
    parser.add_argument("--ignore", action="append", default=[], type=Path, metavar="FILE",
                        help="a source file to leave out (ours, when deciding to write it)")
    parser.add_argument("--etc", type=Path, default=APT_ETC, help=argparse.SUPPRESS)
    parser.add_argument("--os-release", type=Path, default=OS_RELEASE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        archives = host_archives(args.etc, args.os_release, ignore=args.ignore,
                                 overrides=args.action != "backports-source")
    except MirrorError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(_show(archives) if args.action == "show" else backports_source(archives))
    return 0


if __name__ == "__main__":
    sys.exit(main())
