"""The clean root's archive from the host's apt sources (tests/package/aptsource.py over
board.aptsources, whose parser has its own tests in tests/board/test_board_aptsources.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.package.aptsource import DEBIAN_KEYRING, MIRROR_ENV, MirrorError, host_archive


def _etc(tmp_path: Path, files: dict[str, str]) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc


def test_deb822_stanza_with_several_suites(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.invalid/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/local.gpg

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
"""})
    archive = host_archive("bookworm", etc, env={})
    assert (archive.uri, archive.keyring) == ("http://mirror.invalid/debian",
                                              "/usr/share/keyrings/local.gpg")
    assert archive.origin.endswith("debian.sources:1")
    security = host_archive("bookworm-security", etc, env={})
    assert (security.uri, security.keyring) == ("http://security.invalid/debian-security",
                                                DEBIAN_KEYRING)


def test_disabled_source_only_and_other_component_entries_are_passed_over(
        tmp_path: Path) -> None:
    etc = _etc(tmp_path, {
        "sources.list": "deb-src http://src.invalid/debian bookworm main\n"
                        "deb http://contrib.invalid/debian bookworm contrib\n",
        "sources.list.d/a.sources": "Types: deb\nURIs: http://off.invalid/debian\n"
                                    "Suites: bookworm\nComponents: main\nEnabled: no\n",
        "sources.list.d/b.list.disabled": "deb http://ignored.invalid/debian bookworm main\n",
        "sources.list.d/c.list": "deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/d "
                                 "bookworm main # trailing comment\n",
    })
    archive = host_archive("bookworm", etc, env={})
    assert (archive.uri, archive.keyring) == ("http://one.invalid/d", "/k.gpg")
    assert archive.origin.endswith("c.list:1")


def test_sources_list_comes_first_in_apts_order(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {
        "sources.list": "deb http://first.invalid/debian bookworm main\n",
        "sources.list.d/0.sources": "Types: deb\nURIs: http://second.invalid/debian\n"
                                    "Suites: bookworm\nComponents: main\n",
    })
    assert host_archive("bookworm", etc, env={}).uri == "http://first.invalid/debian"


def test_inline_key_falls_back_to_debians_keyring(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list.d/x.sources": """\
Types: deb
URIs: https://inline.invalid/debian
Suites: bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
 -----END PGP PUBLIC KEY BLOCK-----
"""})
    archive = host_archive("bookworm", etc, env={})
    assert (archive.uri, archive.keyring) == ("https://inline.invalid/debian", DEBIAN_KEYRING)


def test_environment_overrides_the_uri(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list": "deb [signed-by=/k.gpg] http://host.invalid/debian "
                                          "bookworm main\n"})
    archive = host_archive("bookworm", etc, env={MIRROR_ENV: "http://override.invalid/d/"})
    assert (archive.uri, archive.keyring, archive.origin) == (
        "http://override.invalid/d", "/k.gpg", f"${MIRROR_ENV}")
    empty = _etc(tmp_path / "empty", {})
    assert host_archive("bookworm", empty, env={MIRROR_ENV: "http://o.invalid"}).keyring == \
        DEBIAN_KEYRING


def test_no_matching_source_is_a_clear_error(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list": "deb http://x.invalid/debian bullseye main\n"})
    with pytest.raises(MirrorError, match=f"no Debian archive for suite 'bookworm'.*{MIRROR_ENV}"):
        host_archive("bookworm", etc, env={})
