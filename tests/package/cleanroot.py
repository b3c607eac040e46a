"""A clean Debian root to install the package into: debootstrap once, copy per run.

The root is a minimal (``--variant=minbase``) debootstrap of the host's suite
from the host's own mirror (:mod:`tests.package.aptsource`), cached as a tarball
``package-root/<suite>-minbase-<YYYYMMDD>.tar`` under the cache directory
(``$PLATFORM_HOSTDEV_CACHE``, default ``~/.cache/platform-hostdev``) and made
again when the newest is older than :data:`MAX_AGE_DAYS`. Each run unpacks a
fresh copy under ``package-root/runs/``; the downloaded .debs are kept across
runs in ``package-root/apt-archives`` (bound over the root's
/var/cache/apt/archives), the package lists are refreshed each run.

Every command runs through ``unshare --mount --propagation private``: /proc and
the archives directory are mounted in that private mount namespace only, so
they are gone when the command ends, whatever happened in it. The copy is
removed afterwards only when no mount below it is visible (a directory with a
live bind mount inside is never deleted).
"""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.package.aptsource import Archive

__all__ = ["CleanRoot", "RootError", "MAX_AGE_DAYS", "cache_dir", "cached_tarball"]

MAX_AGE_DAYS = 7
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
              "DEBIAN_FRONTEND": "noninteractive", "TERM": "dumb"}
_IN_NAMESPACE = """set -e
root=$1; archives=$2; shift 2
mount -t proc proc "$root/proc"
mount --bind "$archives" "$root/var/cache/apt/archives"
exec chroot "$root" "$@"
"""


class RootError(Exception):
    """The clean root could not be made or used; the message says why and what to do."""


def cache_dir() -> Path:
    base = os.environ.get("PLATFORM_HOSTDEV_CACHE") or str(Path.home() / ".cache/platform-hostdev")
    return Path(base) / "package-root"


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == prefix.rstrip("/"):
            found.append(point)
    return found


def _remove(path: Path) -> None:
    """rm -r ``path`` unless something is mounted below it (then RootError, nothing removed)."""
    mounts = _mounts_below(path)
    if mounts:
        raise RootError(f"{path} still has mounts ({', '.join(mounts)}); left in place: "
                        f"umount them, then remove {path}")
    shutil.rmtree(path)


def _tarball_date(path: Path) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(path.stem.rsplit("-", 1)[-1], "%Y%m%d").date()
    except ValueError:
        return None


def cached_tarball(archive: Archive, today: datetime.date | None = None) -> Path:
    """The newest cached root of ``archive.suite`` younger than MAX_AGE_DAYS, else a new one."""
    today = today or datetime.date.today()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    existing = sorted((p for p in cache.glob(f"{archive.suite}-minbase-*.tar")
                       if _tarball_date(p) is not None), key=lambda p: _tarball_date(p)
                      or today)
    if existing:
        newest = existing[-1]
        made = _tarball_date(newest)
        if made is not None and (today - made).days < MAX_AGE_DAYS:
            return newest
    if shutil.which("debootstrap") is None:
        raise RootError("debootstrap is missing: apt-get install debootstrap (or run "
                        "scripts/setup-host)")
    target = cache / f"{archive.suite}-minbase-{today:%Y%m%d}.tar"
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
    try:
        root = work / "root"
        log = cache / "debootstrap.log"
        with log.open("w") as out:
            done = subprocess.run(["debootstrap", "--variant=minbase",
                                   f"--keyring={archive.keyring}", archive.suite, str(root),
                                   archive.uri], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=1800, check=False)
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RootError(f"debootstrap of {archive.suite} from {archive.uri} ({archive.origin})"
                            f" failed (exit {done.returncode}):\n{tail}\nwhole log: {log}")
        partial = target.with_suffix(".tar.partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cpf", str(partial), "."],
                       check=True, timeout=600)
        partial.rename(target)
    finally:
        _remove(work)
    for old in existing:
        old.unlink()
    return target


class CleanRoot:
    """A fresh copy of the cached root; run() executes a command chrooted into it."""

    def __init__(self, tarball: Path, archive: Archive) -> None:
        self.tarball = tarball
        self.archive = archive
        self.log = ""  # what the last install printed (set by its user)
        runs = cache_dir() / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        for stale in runs.iterdir():  # left by a run that was killed: unmounted, so removable
            if not _mounts_below(stale):
                shutil.rmtree(stale, ignore_errors=True)
        self.archives = cache_dir() / "apt-archives"
        (self.archives / "partial").mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="root-", dir=runs))
        subprocess.run(["tar", "--numeric-owner", "-C", str(self.path), "-xpf", str(tarball)],
                       check=True, timeout=600)
        etc = self.path / "etc"
        (etc / "apt" / "sources.list").write_text(
            f"deb [signed-by={archive.keyring}] {archive.uri} {archive.suite} main\n")
        keyring = self.path / archive.keyring.lstrip("/")
        if not keyring.exists():
            keyring.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(archive.keyring, keyring)
        if Path("/etc/resolv.conf").exists():
            (etc / "resolv.conf").unlink(missing_ok=True)
            shutil.copy(Path("/etc/resolv.conf").resolve(), etc / "resolv.conf")
        # No daemon starts from a maintainer script in here (invoke-rc.d's policy-rc.d).
        policy = self.path / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)

    def __enter__(self) -> CleanRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` chrooted into the copy, with /proc and the archives cache mounted."""
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _IN_NAMESPACE,
               "sh", str(self.path), str(self.archives), "/usr/bin/env", "-i",
               *(f"{k}={v}" for k, v in {**CHROOT_ENV, **(env or {})}.items()), *argv]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def copy_in(self, source: Path, directory: str = "/tmp") -> str:
        """Copy a host file into the root; its path inside the root."""
        target = self.path / directory.lstrip("/") / source.name
        shutil.copy2(source, target)
        return f"{directory.rstrip('/')}/{source.name}"

    def remove(self) -> None:
        if self.path.exists():
            _remove(self.path)
