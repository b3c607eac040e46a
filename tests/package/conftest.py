"""The package tier: the .deb built from this tree, and a clean root it is installed into."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package.aptsource import MirrorError, host_archive, host_codename
from tests.package.cleanroot import CleanRoot, RootError, cached_tarball
from tests.support.debpackage import PackageError, built_deb


@pytest.fixture(scope="session")
def deb() -> Path:
    try:
        return built_deb()
    except PackageError as exc:
        pytest.fail(f"package tier: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def clean_root(deb: Path) -> Iterator[CleanRoot]:
    """A fresh minimal Debian root with the .deb installed by apt (plus man-db, bash-completion)."""
    if os.geteuid() != 0:
        pytest.fail("package tier: installing into a clean root needs root (debootstrap, "
                    "chroot, mount)", pytrace=False)
    try:
        archive = host_archive(host_codename())
        root = CleanRoot(cached_tarball(archive), archive)
    except (MirrorError, RootError) as exc:
        pytest.fail(f"package tier: {exc}", pytrace=False)
    try:
        inside = root.copy_in(deb)
        for argv in (["apt-get", "update", "-q"],
                     ["apt-get", "install", "-y", "-q", "--no-install-recommends", inside,
                      "man-db", "bash-completion"]):
            done = root.run(argv)
            if done.returncode != 0:
                pytest.fail(f"package tier: {' '.join(argv)} in the clean root failed (exit "
                            f"{done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}",
                            pytrace=False)
        root.log = done.stdout + done.stderr
        yield root
    finally:
        try:
            root.remove()
        except RootError as exc:
            pytest.fail(f"package tier: {exc}", pytrace=False)
