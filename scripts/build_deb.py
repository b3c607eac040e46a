"""Build platform-hostdev_<version>_all.deb from the tree, out of tree, and lint it.

    scripts/build-deb [--force]

The files git knows (tracked, plus untracked ones that are not ignored) are
copied from the work tree into a temporary directory, where
``dpkg-buildpackage -us -uc`` builds the native source package and the .deb
with Debian's tools only (debhelper, dh-python/pybuild, argparse-manpage,
shtab: debian/control's Build-Depends, no network); the work tree is not
written to. The results go to build/deb/ (gitignored): the .deb, .dsc,
.tar.xz, .buildinfo, .changes, build.log and lintian.txt. lintian then checks
the .changes (source, binary and buildinfo) and fails on errors; its
warnings are printed.

A build is keyed by a digest of the copied files: when build/deb/ already
holds a linted build of the same files it is reused (one build per test run:
scripts/test builds, tests/package and tests/libvirt reuse). --force
rebuilds. The last line printed is the .deb's path.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
OUT = TOP / "build" / "deb"
STAMP = OUT / "SOURCE-SHA256"
PACKAGE = "platform-hostdev"
# The build sees Debian's tools only: no virtualenv, pyenv or ~/.local shims first.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = {"dpkg-buildpackage": "dpkg-dev", "dpkg-checkbuilddeps": "dpkg-dev",
         "dpkg-parsechangelog": "dpkg-dev", "lintian": "lintian", "git": "git"}
BUILD_DEPS_HINT = ("apt-get install debhelper dh-python python3-all python3-setuptools "
                   "python3-argparse-manpage python3-shtab python3-lxml python3-pyudev "
                   "python3-libvirt lintian (or run scripts/setup-host)")


class BuildError(Exception):
    """The package could not be built or failed lintian; the message says why and what to do."""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def source_files() -> list[str]:
    """Paths (relative to the top) of the files to build from: what git tracks or would add."""
    done = subprocess.run(["git", "-C", str(TOP), "ls-files", "-z", "--cached", "--others",
                           "--exclude-standard"], capture_output=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"git ls-files failed in {TOP}: {done.stderr.decode().strip()} "
                         "(build from a git checkout of the project)")
    names = sorted({n for n in done.stdout.decode().split("\0") if n})
    return [n for n in names if (TOP / n).is_file() and not (TOP / n).is_symlink()
            and not n.startswith("debian/generated/")]


def digest(names: list[str]) -> str:
    """sha256 over each file's path, executable bit and content."""
    h = hashlib.sha256()
    for name in names:
        path = TOP / name
        h.update(name.encode() + b"\0" + (b"x" if os.access(path, os.X_OK) else b"-") + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def setup_version() -> str:
    """The version in setup.py's setup(version=...)."""
    match = re.search(r'^\s*version\s*=\s*"([^"]+)"', (TOP / "setup.py").read_text(), re.M)
    if match is None:
        raise BuildError('setup.py has no version="..." line: keep setup(version="X.Y.Z") '
                         "a literal, debian/changelog follows it")
    return match.group(1)


def check_tools() -> None:
    """Every program the build needs is installed, or BuildError naming the apt packages."""
    missing = sorted({pkg for tool, pkg in TOOLS.items()
                      if shutil.which(tool, path=SYSTEM_PATH) is None})
    if missing:
        raise BuildError(f"missing Debian packages {', '.join(missing)} for building the .deb: "
                         f"{BUILD_DEPS_HINT}")


def deb_name(version: str) -> str:
    return f"{PACKAGE}_{version}_all.deb"


def reusable(key: str, version: str) -> Path | None:
    """The .deb of an earlier linted build of the same files, if build/deb/ holds one."""
    deb = OUT / deb_name(version)
    if STAMP.is_file() and STAMP.read_text().strip() == key and deb.is_file():
        return deb
    return None


def build(names: list[str], version: str, env: dict[str, str]) -> tuple[Path, float]:
    """Copy ``names`` to a temporary directory, build there, move the results to build/deb/."""
    with tempfile.TemporaryDirectory(prefix="phd-deb-") as tmp:
        src = Path(tmp) / f"{PACKAGE}-{version}"
        for name in names:
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TOP / name, target)
        changelog = _run(["dpkg-parsechangelog", "-S", "Version"], src, env)
        if changelog.stdout.strip() != version:
            raise BuildError(f"debian/changelog's version is {changelog.stdout.strip()!r} but "
                             f"setup.py's is {version!r}: add a debian/changelog entry for "
                             f"{version} (dch -v {version})")
        deps = _run(["dpkg-checkbuilddeps"], src, env)
        if deps.returncode != 0:
            raise BuildError(f"{deps.stderr.strip()}: {BUILD_DEPS_HINT}")
        started = time.monotonic()
        done = _run(["dpkg-buildpackage", "-us", "-uc"], src, env)
        elapsed = time.monotonic() - started
        log = done.stdout + done.stderr
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "build.log").write_text(log)
        if done.returncode != 0:
            tail = "\n".join(log.splitlines()[-30:])
            raise BuildError(f"dpkg-buildpackage failed (exit {done.returncode}); the log's "
                             f"end:\n{tail}\nwhole log: {OUT / 'build.log'}")
        for old in OUT.iterdir():
            if old.name.startswith(f"{PACKAGE}_"):
                old.unlink()
        for made in Path(tmp).iterdir():
            if made.is_file() and made.name.startswith(f"{PACKAGE}_"):
                shutil.move(str(made), OUT / made.name)
    return OUT / deb_name(version), elapsed


def lint(version: str, env: dict[str, str]) -> str:
    """lintian over the .changes; BuildError on errors (or lintian failing), else its output."""
    changes = sorted(OUT.glob(f"{PACKAGE}_{version}_*.changes"))
    if not changes:
        raise BuildError(f"no .changes file in {OUT} after the build")
    done = _run(["lintian", "--fail-on", "error", "--tag-display-limit", "0",
                 str(changes[0])], OUT, env)
    text = (done.stdout + done.stderr).strip()
    (OUT / "lintian.txt").write_text(text + "\n")
    if done.returncode != 0:
        raise BuildError(f"lintian found errors (exit {done.returncode}):\n{text}\nfix them in "
                         "debian/ (an override needs a written reason)")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/build-deb", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when build/deb/ "
                        "holds a build of the same files")
    args = parser.parse_args(argv)
    env = {**os.environ, "PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}
    for leaking in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(leaking, None)
    try:
        check_tools()
        version = setup_version()
        names = source_files()
        key = digest(names)
        deb = None if args.force else reusable(key, version)
        if deb is not None:
            print(f"build-deb: reusing {deb.relative_to(TOP)} (built from the same "
                  f"{len(names)} files); lintian said:")
            print((OUT / "lintian.txt").read_text().rstrip() or "(nothing)")
        else:
            STAMP.unlink(missing_ok=True)
            deb, elapsed = build(names, version, env)
            text = lint(version, env)
            print(f"build-deb: built {deb.relative_to(TOP)} ({deb.stat().st_size / 1024:.0f} kB) "
                  f"from {len(names)} files in {elapsed:.0f} s; lintian said:")
            print(text or "(nothing)")
            STAMP.write_text(key + "\n")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
