"""The host's Debian archive the clean root is debootstrapped from.

A thin view of :mod:`board.aptsources`, the one reader of the host's apt
configuration (scripts/setup-host and the board use it too): debootstrap
needs a URI, a suite and a keyring FILE, so a ``Signed-By`` that embeds its
key falls back to Debian's archive keyring.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from board.aptsources import (
    APT_ETC,
    DEBIAN_KEYRING,
    MIRROR_ENV,
    MirrorError,
    discover,
    host_codename,
    read_sources,
)

__all__ = ["Archive", "MirrorError", "MIRROR_ENV", "DEBIAN_KEYRING", "host_archive",
           "host_codename"]


@dataclass(frozen=True)
class Archive:
    uri: str
    suite: str
    keyring: str          # a keyring file debootstrap can check the Release file with
    origin: str           # where it was found: "FILE:LINE" or the environment variable


def host_archive(codename: str, etc: Path = APT_ETC,
                 env: Mapping[str, str] | None = None) -> Archive:
    """The main archive of ``codename`` in the host's apt sources (overrides applied)."""
    sources, files = read_sources(etc)
    main = discover(sources, codename, dict(os.environ) if env is None else env, files).main
    keyring = main.signed_by
    if not keyring or "\n" in keyring or not keyring.startswith("/"):
        keyring = DEBIAN_KEYRING
    return Archive(main.uri.rstrip("/"), codename, keyring, main.origin)
