"""Kernel modules for the board: vfio built out of tree, stock modules picked by modules.dep.

Debian's arm64 kernels lack VFIO_PLATFORM, VFIO_AMBA and VFIO_NOIOMMU, so
vfio.ko, vfio-platform-base.ko, vfio-platform.ko and vfio-amba.ko are
cross-compiled from linux-source-<series> of the exact kernel version against
its headers, with ``-DCONFIG_VFIO_NOIOMMU=1``. The headers package needs the
amd64 linux-kbuild of the same version beside it, and its one-line Makefile
names the -common headers by absolute path: that path is rewritten to the
extraction root.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from board.errors import BuildError
from board.host import BUILD_TOOLS, check_host_tools

__all__ = [
    "CROSS_COMPILE",
    "KBUILD",
    "VFIO_MODULES",
    "build_vfio_modules",
    "extract_vfio_sources",
    "load_order",
    "module_name",
    "modinfo_depends",
    "prepare_headers",
    "strip_debug",
]

CROSS_COMPILE = "aarch64-linux-gnu-"
COMPILER = f"{CROSS_COMPILE}gcc-12"  # what Debian's .kernelvariables sets as CC
VFIO_SOURCES = (
    "vfio_main.c", "group.c", "container.c", "virqfd.c", "vfio.h",
    "platform/vfio_platform.c", "platform/vfio_amba.c", "platform/vfio_platform_common.c",
    "platform/vfio_platform_irq.c", "platform/vfio_platform_private.h",
)
KBUILD = """\
ccflags-y += -DCONFIG_VFIO_NOIOMMU=1
obj-m += vfio.o
vfio-y := vfio_main.o group.o container.o virqfd.o
obj-m += vfio-platform-base.o vfio-platform.o vfio-amba.o
vfio-platform-base-y := platform/vfio_platform_common.o platform/vfio_platform_irq.o
vfio-platform-y := platform/vfio_platform.o
vfio-amba-y := platform/vfio_amba.o
"""
VFIO_MODULES = ("vfio.ko", "vfio-platform-base.ko", "vfio-platform.ko", "vfio-amba.ko")
_MAKE_TIMEOUT = 900.0


def extract_vfio_sources(source_deb: Path, dest: Path) -> None:
    """Copy drivers/vfio/ out of linux-source-<series>.deb's tarball into ``dest``.

    Streams the 150 MB .tar.xz and stops once past drivers/vfio/ (tar order).
    """
    outer_proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(source_deb)],
                                  stdout=subprocess.PIPE)
    assert outer_proc.stdout is not None
    try:
        _copy_vfio_tree(outer_proc.stdout, dest)
    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise BuildError(f"cannot read {source_deb}: {exc}; delete it to download it "
                         "again") from exc
    finally:
        outer_proc.stdout.close()
        outer_proc.kill()
        outer_proc.wait(timeout=60)
    missing = [name for name in VFIO_SOURCES if not (dest / name).is_file()]
    if missing:
        raise BuildError(f"{source_deb.name} has no drivers/vfio/{missing[0]} (of {missing}); "
                         "the source package layout changed: update board/kmod.py")


def _copy_vfio_tree(deb_tar: IO[bytes], dest: Path) -> None:
    """From the .deb's data tar, stream the kernel tarball and copy drivers/vfio/ out."""
    found = 0
    with tarfile.open(fileobj=deb_tar, mode="r|") as outer:
        for member in outer:
            if not re.fullmatch(r"\./usr/src/linux-source-[\d.]+\.tar\.xz", member.name):
                continue
            inner_stream = outer.extractfile(member)
            assert inner_stream is not None
            with tarfile.open(fileobj=inner_stream, mode="r|xz") as inner:
                for item in inner:
                    parts = PurePosixPath(item.name).parts
                    if parts[1:3] != ("drivers", "vfio"):
                        if found:
                            break
                        continue
                    found += 1
                    if item.isfile():
                        target = dest.joinpath(*parts[3:])
                        target.parent.mkdir(parents=True, exist_ok=True)
                        data = inner.extractfile(item)
                        assert data is not None
                        target.write_bytes(data.read())
            break


def prepare_headers(debs: Iterable[Path], dest: Path,
                    extract: Callable[[Path, Path], None]) -> Path:
    """Unpack headers, -common and kbuild into ``dest``; return the arm64 build dir (KDIR)."""
    for deb in debs:
        extract(deb, dest)
    (kdir,) = [p for p in (dest / "usr/src").glob("linux-headers-*-arm64") if p.is_dir()]
    makefile = kdir / "Makefile"
    text = makefile.read_text()
    rewritten = re.sub(r"include /usr/src/", f"include {dest}/usr/src/", text)
    if rewritten == text:
        raise BuildError(f"{makefile} names no /usr/src/ path to rewrite: {text!r}")
    makefile.write_text(rewritten)
    return kdir


def compiler_version() -> str:
    """First line of the cross compiler's --version (part of the modules' cache key)."""
    check_host_tools(BUILD_TOOLS)
    done = subprocess.run([COMPILER, "--version"], capture_output=True, text=True, check=True,
                          timeout=60)
    return done.stdout.splitlines()[0]


def build_vfio_modules(kdir: Path, sources: Path, workdir: Path, out: Path,
                       jobs: int = 2) -> list[Path]:
    """Cross-compile the four vfio modules in ``workdir``; copy the .ko files to ``out``."""
    check_host_tools(BUILD_TOOLS)
    for name in VFIO_SOURCES:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / name, workdir / name)
    (workdir / "Kbuild").write_text(KBUILD)
    argv = ["make", f"-j{jobs}", "-C", str(kdir), f"M={workdir}", "ARCH=arm64",
            f"CROSS_COMPILE={CROSS_COMPILE}", "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"]
    try:
        subprocess.run(argv, capture_output=True, text=True, check=True, timeout=_MAKE_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        log = (exc.stdout + exc.stderr).strip().splitlines()
        raise BuildError("building the vfio modules failed:\n  " + " ".join(argv) + "\n"
                         + "\n".join(log[-40:])) from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"building the vfio modules took over {_MAKE_TIMEOUT:.0f} s") from exc
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for name in VFIO_MODULES:
        if not (workdir / name).is_file():
            raise BuildError(f"make succeeded but produced no {name} in {workdir}")
        built.append(Path(shutil.copyfile(workdir / name, out / name)))
    return built


def strip_debug(modules: Sequence[Path]) -> None:
    """Drop debug sections from built modules (5 MB less to load into the guest)."""
    argv = [f"{CROSS_COMPILE}strip", "--strip-debug", *map(str, modules)]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{' '.join(argv)} failed: {exc}") from exc


def modinfo_depends(ko: bytes) -> list[str]:
    """Module names in the ``depends=`` field of a module's .modinfo strings."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if match is None:
        return []
    return [name for name in match.group(1).decode().split(",") if name]


def module_name(path: str) -> str:
    """The kernel's name for a module file: basename without .ko[.xz], - as _."""
    name = PurePosixPath(path).name
    for suffix in (".xz", ".zst", ".gz", ".ko"):
        name = name.removesuffix(suffix)
    return name.replace("-", "_")


def load_order(modules_dir: Path, wanted: Sequence[str],
               extra: Sequence[Path] = ()) -> list[tuple[str, bytes]]:
    """Modules ``wanted`` and their dependencies, dependencies first, decompressed.

    ``modules_dir`` is an unpacked lib/modules/<release> (its modules.order names
    the stock modules; the package ships no modules.dep). A module in ``extra``
    replaces the stock module of the same name (our vfio.ko) and is placed under
    updates/board/. Returns (path relative to lib/modules/<release>, .ko bytes).
    """
    files: dict[str, tuple[str, Path]] = {}
    for line in (modules_dir / "modules.order").read_text().splitlines():
        for candidate in (line + ".xz", line):
            if (modules_dir / candidate).is_file():
                files[module_name(line)] = (line, modules_dir / candidate)
                break
    for path in extra:
        files[module_name(path.name)] = (f"updates/board/{path.name}", path)
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name not in files:
            raise BuildError(f"module {name} (needed by {' <- '.join(chain) or 'the board'}) is "
                             f"not in {modules_dir / 'modules.order'}; is it built in?")
        done.add(name)
        rel, path = files[name]
        data = decompress(path)
        for dep in modinfo_depends(data):
            visit(module_name(dep), (*chain, name))
        order.append((rel, data))

    for name in wanted:
        visit(module_name(name), ())
    return order


def decompress(path: Path) -> bytes:
    """A module file's bytes, decompressed when it is a .ko.xz."""
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data
