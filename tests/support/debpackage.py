"""The Debian package built from this tree, for tests/package and tests/libvirt.

:func:`built_deb` runs ``scripts/build-deb``, which reuses build/deb/ when it
holds a linted build of the same files (scripts/test builds it before the
pytest tiers, so a run builds once) and builds otherwise. Missing build tools
(dpkg-buildpackage, debhelper, dh-python, lintian, ...) make it fail with the
apt-get command to run: the tests that need the package fail, never skip.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["PackageError", "REPO", "built_deb", "deb_field", "deb_listing"]

REPO = Path(__file__).resolve().parents[2]


class PackageError(Exception):
    """The package could not be built (or inspected); the message says why."""


@functools.cache
def built_deb() -> Path:
    """platform-hostdev_<version>_all.deb from scripts/build-deb (built or reused)."""
    done = subprocess.run([str(REPO / "scripts" / "build-deb")], capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise PackageError(f"scripts/build-deb failed (exit {done.returncode}):\n"
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    deb = Path(done.stdout.strip().splitlines()[-1])
    if not deb.is_file() or deb.suffix != ".deb":
        raise PackageError(f"scripts/build-deb did not end with a .deb path: {done.stdout!r}")
    return deb


def deb_field(deb: Path, field: str) -> str:
    """One control field of the .deb (dpkg-deb -f)."""
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


def deb_listing(deb: Path) -> dict[str, tuple[str, str]]:
    """path (without the leading '.') -> (mode string, owner/group) from dpkg-deb -c."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    listing = {}
    for line in out.splitlines():
        parts = line.split(None, 5)
        mode, owner, name = parts[0], parts[1], parts[5].split(" -> ")[0]
        listing[name[1:].rstrip("/") or "/"] = (mode, owner)
    return listing
