"""Build (or find in the cache) everything the board boots: kernel, vfio modules, initramfs.

Cache layout under ``<cache>/board/<kernel release>/``: ``image/`` (the
unpacked linux-image package), ``headers/`` and ``source-vfio/`` (build inputs),
``vfio-<key>/`` (the four built modules), ``initramfs-<key>.cpio`` (one for
every machine of board/machines.py) and, for raspi3b, ``sdcard-<key>.img``. Each
key is a digest of that entry's inputs (package versions, recipe text,
compiler, the builder code itself), so a stale entry is never reused; a warm
run only checks keys. The apt lists are refreshed once a day (see apt_arm64).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from board import initramfs, kmod, sdcard
from board.apt_arm64 import AptArm64, Kernel, Package
from board.cache import content_key, files_digest, locked, publish_dir, publish_file
from board.errors import BuildError
from board.host import BUILD_TOOLS, FETCH_TOOLS, SD_TOOLS, check_host_tools
from board.machines import MACHINES, VIRT, Machine, get_machine

__all__ = ["Board", "build_board"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Board:
    """A built board: what ``qemu-system-aarch64 -kernel/-initrd`` needs."""

    kernel: Kernel
    vmlinuz: Path
    initramfs: Path
    image_dir: Path
    vfio_modules: tuple[Path, ...]
    cache_dir: Path
    machine: Machine = VIRT
    dtb: Path | None = None
    """The DTB QEMU boots (-dtb); None: the machine's own (virt)."""
    sd_image: Path | None = None
    """The cached SD card image (raspi3b), attached with snapshot=on."""

    def describe(self) -> dict[str, str]:
        """Facts to print: versions and paths."""
        extra = {"dtb": str(self.dtb)} if self.dtb else {}
        if self.sd_image:
            extra["sd card image"] = str(self.sd_image)
        return {
            "machine": self.machine.name,
            **extra,
            "kernel release": self.kernel.release,
            "kernel package version": self.kernel.version,
            "cache": str(self.cache_dir),
            "vmlinuz": str(self.vmlinuz),
            "initramfs": str(self.initramfs),
            "kernel image package root": str(self.image_dir),
            "vfio modules": " ".join(str(p) for p in self.vfio_modules),
        }


def _code_digest(*modules: str) -> str:
    return files_digest(_HERE / name for name in modules)


def _prune_siblings(keep: Path, pattern: str) -> None:
    """Remove older cache entries of the same kind (other keys) beside ``keep``."""
    for old in keep.parent.glob(pattern):
        if old != keep:
            log.info("removing stale cache entry %s", old)
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _vfio_modules(apt: AptArm64, kernel: Kernel) -> Path:
    kdir = apt.kernel_dir(kernel)
    key = content_key({
        "kernel": kernel.version,
        "kbuild": kmod.KBUILD,
        "sources": kmod.VFIO_SOURCES,
        "compiler": kmod.compiler_version(),
        "code": _code_digest("kmod.py", "build.py"),
    })
    final = kdir / f"vfio-{key}"
    if final.is_dir():
        return final
    packages = [apt.exact(name, arch, kernel.version) for name, arch in kernel.build_packages()]
    headers_deb, common_deb, kbuild_deb, source_deb = apt.download(packages)
    with locked(kdir / ".lock"):
        sources = publish_dir(kdir / "source-vfio",
                              lambda tmp: kmod.extract_vfio_sources(source_deb, tmp))
        headers = kdir / "headers"  # unpacked in place: its Makefile names its own path
        if not (headers / ".complete").is_file():
            shutil.rmtree(headers, ignore_errors=True)
            kbuild = kmod.prepare_headers([headers_deb, common_deb, kbuild_deb], headers,
                                          apt.extract)
            (headers / ".complete").touch()
        (kbuild,) = (headers / "usr/src").glob("linux-headers-*-arm64")

        def fill(out: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="vfio-build.", dir=kdir) as work:
                log.info("building the vfio modules for %s", kernel.release)
                started = time.monotonic()
                built = kmod.build_vfio_modules(kbuild, sources, Path(work), out)
                kmod.strip_debug(built)
                log.info("built %s in %.1f s", ", ".join(p.name for p in built),
                         time.monotonic() - started)

        publish_dir(final, fill)
        _prune_siblings(final, "vfio-*")
    return final


def _prune_other_versions(apt: AptArm64, kernel: Kernel, keep: list[Package]) -> None:
    """Drop what belongs to no current input: other kernels' dirs, unused .debs."""
    for other in apt.board.glob("*-arm64"):
        if other.is_dir() and other.name != kernel.release:
            log.info("removing the cache of kernel %s (now %s)", other.name, kernel.release)
            shutil.rmtree(other)
    wanted = {p.deb_name for p in keep}
    kernel_debs = {f"_{kernel.version.replace(':', '%3a')}_"}
    for deb in apt.debs.glob("*.deb"):
        if deb.name not in wanted and not any(tag in deb.name for tag in kernel_debs):
            log.info("removing unused download %s", deb.name)
            deb.unlink()


def _closure(apt: AptArm64) -> list[Package]:
    """The guest userland's packages, cached per archive state."""
    key = content_key({"lists": apt.fingerprint(), "roots": initramfs.GUEST_ROOTS,
                       "exclude": sorted(initramfs.GUEST_EXCLUDE)})
    path = apt.root / f"closure-{key}.json"
    if path.is_file():
        return [Package(**record) for record in json.loads(path.read_text())]
    log.info("resolving the guest userland's dependencies")
    packages = apt.closure(initramfs.GUEST_ROOTS, initramfs.GUEST_EXCLUDE)
    publish_file(path, lambda tmp: tmp.write_text(json.dumps([asdict(p) for p in packages])))
    _prune_siblings(path, "closure-*.json")
    return packages


def _sd_image(kdir: Path) -> Path:
    """The raspi3b SD card image, built once per recipe (board/sdcard.py)."""
    key = content_key({"bytes": sdcard.IMAGE_BYTES, "file": sdcard.KNOWN_FILE,
                       "text": sdcard.KNOWN_TEXT, "argv": sdcard.mke2fs_argv(Path("i"), Path("d")),
                       "code": _code_digest("sdcard.py")})
    final = kdir / f"sdcard-{key}.img"
    if not final.is_file():
        with locked(kdir / ".lock"):
            publish_file(final, sdcard.write_sd_image)
            _prune_siblings(final, "sdcard-*.img")
    return final


def _dtb(image: Path, kernel: Kernel, machine: Machine) -> Path | None:
    """The machine's DTB from the unpacked linux-image package (None: QEMU's own)."""
    if machine.dtb is None:
        return None
    dtb = image / "usr/lib" / f"linux-image-{kernel.release}" / machine.dtb
    if not dtb.is_file():
        raise BuildError(f"{dtb} is missing: the {machine.name} machine boots Debian's "
                         f"{machine.dtb} from linux-image-{kernel.release}; delete {image} to "
                         "unpack it again")
    return dtb


def build_board(cache: Path | None = None, refresh: bool = False,
                machine: Machine | str = VIRT) -> Board:
    """Resolve the newest 6.12 arm64 kernel and return its built (or cached) board.

    ``refresh`` forces an apt lists update; ``machine`` (a name of
    board.machines.MACHINES or a Machine) picks what QEMU boots: the kernel,
    modules and initramfs are the same for every machine. Raises
    :class:`board.errors.BoardError` subclasses naming what is missing.
    """
    machine = get_machine(machine) if isinstance(machine, str) else machine
    check_host_tools({**FETCH_TOOLS, **BUILD_TOOLS, **(SD_TOOLS if machine.sd_card else {})})
    apt = AptArm64(cache)
    apt.update(force=refresh)
    kernel = apt.resolve_kernel()
    image = apt.image_dir(kernel)
    vmlinuz = image / "boot" / f"vmlinuz-{kernel.release}"
    if not vmlinuz.is_file():
        raise BuildError(f"{vmlinuz} is missing from the unpacked image: delete "
                         f"{image} to unpack it again")
    vfio_dir = _vfio_modules(apt, kernel)
    vfio = tuple(vfio_dir / name for name in kmod.VFIO_MODULES)
    userland = _closure(apt)
    modules_dir = image / "lib/modules" / kernel.release
    dtb = _dtb(image, kernel, machine)
    key = content_key({
        "packages": [p.spec for p in userland],
        "kernel": kernel.version,
        "vfio": vfio_dir.name,
        "stock": {name: m.stock_modules for name, m in MACHINES.items()},
        "autoload": {name: m.autoload_modules for name, m in MACHINES.items()},
        "params": initramfs.MODULE_PARAMS,
        "init": initramfs.init_script(),
        "code": _code_digest("initramfs.py", "cpio.py", "kmod.py", "build.py", "machines.py"),
    })
    final = apt.kernel_dir(kernel) / f"initramfs-{key}.cpio"
    if not final.is_file():
        debs = apt.download(userland)
        modules = {name: kmod.load_order(modules_dir, [*m.stock_modules, "vfio_platform",
                                                       "vfio_amba"], vfio)
                   for name, m in MACHINES.items()}
        loaded = {rel for machine_modules in modules.values() for rel, _ in machine_modules}
        autoload = [(rel, data) for name, m in MACHINES.items()
                    for rel, data in kmod.load_order(modules_dir, m.autoload_modules)
                    if rel not in loaded]
        lists = {name: (modules_dir / name).read_bytes()
                 for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo")
                 if (modules_dir / name).is_file()}
        with locked(apt.kernel_dir(kernel) / ".lock"):
            started = time.monotonic()
            publish_file(final, lambda tmp: initramfs.write_initramfs(
                tmp, debs, modules, kernel.release, apt.extract, autoload=autoload,
                module_lists=lists))
            log.info("wrote %s (%.1f MB) in %.1f s", final.name, final.stat().st_size / 1e6,
                     time.monotonic() - started)
            _prune_siblings(final, "initramfs-*.cpio*")
        _prune_other_versions(apt, kernel, userland)
    sd_image = _sd_image(apt.kernel_dir(kernel)) if machine.sd_card else None
    return Board(kernel=kernel, vmlinuz=vmlinuz, initramfs=final, image_dir=image,
                 vfio_modules=vfio, cache_dir=apt.kernel_dir(kernel), machine=machine,
                 dtb=dtb, sd_image=sd_image)
