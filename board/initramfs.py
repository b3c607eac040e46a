"""The board's initramfs: a Debian arm64 userland unpacked from .debs, plus modules and /init.

The userland is the dependency closure of :data:`GUEST_ROOTS`, minus
:data:`GUEST_EXCLUDE` (packages that only matter to an installed system: they
and whatever only they pull in are left out). No maintainer script runs, so
the few things they would create are made here: applet links (by /init, with
``busybox --install``), /usr/bin/python3, /etc/passwd and /dev/console.

One initramfs serves every machine (board/machines.py): it holds the union of
the machines' modules, and one ``/etc/board/modules.<machine>.load`` list each;
/init picks the list named by ``board.machine=`` on the kernel command line.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from board.cpio import CpioWriter, Writable
from board.errors import BuildError, MissingToolError
from board.machines import VIRT

__all__ = [
    "GUEST_EXCLUDE",
    "GUEST_PYTHON",
    "GUEST_ROOTS",
    "GUEST_STOCK_MODULES",
    "MODULE_PARAMS",
    "init_script",
    "write_initramfs",
]

GUEST_ROOTS = (
    "busybox-static", "libc6", "libc-bin", "zlib1g", "libexpat1", "libffi8",
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libudev1", "python3-lxml", "python3-pyudev", "python3-pytest", "udev", "kmod",
)
"""Packages the guest needs: busybox, Python 3.11, lxml, pyudev, pytest. libc-bin
brings ldconfig: ctypes.util.find_library (pyudev loads libudev with it) reads
the cache that /init builds. udev (systemd-udevd, udevadm and Debian's rules) and
kmod (depmod: libkmod, which udev's kmod builtin uses, needs the modules.*.bin
indexes, and the kernel package ships none) run a real boot's coldplug when a
test starts them (tests/board/reserve_boot.sh); /init does not."""

GUEST_EXCLUDE = {
    "python3": "the python3 wrapper package; /usr/bin/python3 is linked here instead",
    "python3-minimal": "pulls dpkg; only ships the /usr/bin/python3 link",
    "python3.11": "pydoc and friends; the interpreter is python3.11-minimal",
    "dpkg": "no package manager in the guest",
    "debconf": "maintainer-script configuration, pulls perl-base",
    "perl-base": "only needed by debconf",
    "tzdata": "the guest runs in UTC",
    "media-types": "/etc/mime.types, unused",
    "mime-support": "/etc/mime.types, unused",
    "readline-common": "inputrc and docs, unused",
    "adduser": "udev's maintainer script adds a group with it; no maintainer script runs",
}

GUEST_STOCK_MODULES = VIRT.stock_modules
"""Stock modules /init loads on virt (each machine's list: board.machines)."""

MODULE_PARAMS = {
    "vfio": "enable_unsafe_noiommu_mode=1",
    "vfio_platform": "reset_required=0",
}
"""insmod parameters by module name (no-IOMMU mode; no reset handler needed)."""

GUEST_PYTHON = "3.11"
"""The guest's Python (python3.11-minimal): its bytecode is compiled on the host."""

_PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
          "usr/share/lintian", "usr/share/bug", "usr/share/bash-completion")
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def init_script() -> str:
    """The text of /init (board/guest_init.sh)."""
    return (Path(__file__).parent / "guest_init.sh").read_text()


def modules_load(modules: Sequence[tuple[str, bytes]]) -> str:
    """/etc/board/modules.load: one ``path params`` line per module, in load order."""
    lines = []
    for rel, _ in modules:
        name = Path(rel).name.removesuffix(".ko").replace("-", "_")
        lines.append(f"{rel} {MODULE_PARAMS.get(name, '')}".rstrip())
    return "\n".join(lines) + "\n"


def host_python() -> str:
    """A host interpreter of the guest's Python version, to precompile the bytecode.

    Debian's Python packages ship no .pyc (postinst compiles them); without them
    every guest import would compile from source under emulation (seconds).
    """
    if f"{sys.version_info.major}.{sys.version_info.minor}" == GUEST_PYTHON:
        return sys.executable
    found = shutil.which(f"python{GUEST_PYTHON}")
    if found is None:
        raise MissingToolError({f"python{GUEST_PYTHON}": f"python{GUEST_PYTHON}"})
    return found


def compile_bytecode(root: Path, python: str) -> None:
    """Write unchecked-hash .pyc files for the guest's Python trees under ``root``."""
    trees = [root / "usr/lib" / f"python{GUEST_PYTHON}", root / "usr/lib/python3/dist-packages"]
    argv = [python, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
            "-s", str(root), "-p", "/", *(str(t) for t in trees if t.is_dir())]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"precompiling the guest's Python modules failed: {' '.join(argv)}\n"
                         f"{(exc.stdout + exc.stderr)[-3000:]}") from exc


def _archive(stream: Writable, root: Path) -> None:
    """The archive: skeleton directories, device nodes, /init, then the unpacked tree."""
    archive = CpioWriter(stream)
    archive.add_dir(".")
    for directory in ("dev", "proc", "sys", "tmp", "run", "root", "repo", "board", "out"):
        archive.add_dir(directory, 0o1777 if directory == "tmp" else 0o755)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_char_device("dev/null", 1, 3, 0o666)
    archive.add_file("init", init_script().encode(), 0o755)
    archive.add_tree(root)
    archive.close()


def write_initramfs(dest: Path, debs: Sequence[Path],
                    modules: Mapping[str, Sequence[tuple[str, bytes]]],
                    release: str, extract: Callable[[Path, Path], None],
                    gzip_level: int | None = None,
                    autoload: Sequence[tuple[str, bytes]] = (),
                    module_lists: Mapping[str, bytes] | None = None) -> None:
    """Write the newc initramfs to ``dest``, gzip-compressed if ``gzip_level`` is set.

    ``modules`` maps each machine name to its modules, (path under
    lib/modules/<release>, .ko bytes) in load order; every module is written
    once and each machine gets its ``/etc/board/modules.<machine>.load``.
    ``autoload`` modules are written but in no list: only udev's kmod builtin
    loads them, once a test has run depmod; ``module_lists`` (modules.order,
    modules.builtin, modules.builtin.modinfo of the kernel package) go beside
    them for depmod.
    The board boots it uncompressed: under TCG, boot to /init took a median
    4.9 s with the 130 MB raw archive and 6.5 s with the 42 MB gzip one.
    """
    with tempfile.TemporaryDirectory(prefix="board-rootfs.") as tmp:
        root = Path(tmp)
        for deb in debs:
            extract(deb, root)
        for prune in _PRUNE:
            shutil.rmtree(root / prune, ignore_errors=True)
        if not (root / "usr/bin/python3").exists():
            (root / "usr/bin/python3").symlink_to("python3.11")
        compile_bytecode(root, host_python())
        (root / "etc/board").mkdir(parents=True, exist_ok=True)
        for machine, machine_modules in modules.items():
            for rel, data in machine_modules:
                path = root / "lib/modules" / release / rel
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
            (root / f"etc/board/modules.{machine}.load").write_text(
                modules_load(machine_modules))
        for rel, data in autoload:
            path = root / "lib/modules" / release / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for name, data in (module_lists or {}).items():
            (root / "lib/modules" / release / name).write_bytes(data)
        (root / "etc/passwd").write_text(_PASSWD)
        (root / "etc/group").write_text(_GROUP)
        (root / "etc/hostname").write_text("board\n")
        with dest.open("wb") as raw:
            if gzip_level is None:
                _archive(raw, root)
            else:
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                   compresslevel=gzip_level) as packed:
                    _archive(packed, root)
