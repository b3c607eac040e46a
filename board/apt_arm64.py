"""A private apt configuration that fetches Debian arm64 packages on an x86 host.

Nothing is installed on the host: apt gets its own sources.list (bookworm,
bookworm-security and bookworm-backports, ``[arch=arm64,amd64]``: arm64 for
the board, amd64 only for the kernel's build tools in linux-kbuild), its own
lists and caches under ``<cache>/board/apt``, an empty dpkg status and empty
configuration parts (the host's apt.conf.d, e.g. Docker's docker-clean hook,
does not apply). Packages are fetched with ``apt-get download`` into
``<cache>/board/debs`` and unpacked with ``dpkg-deb -x``.

The kernel is never hard-coded: :meth:`AptArm64.resolve_kernel` takes the
newest version of the ``linux-image-6.12-arm64`` metapackage and follows its
dependency to the versioned image package. The mirror keeps only the newest
bookworm-security build, so the lists are refreshed when older than
``$PLATFORM_HOSTDEV_APT_MAX_AGE`` seconds (default one day) or when the
sources change.

The mirrors are the host's own (:mod:`board.aptsources` reads its apt sources):
bookworm and bookworm-backports from the host's main Debian archive (or its
backports entry), bookworm-security from its security archive, each with the
host entry's ``Signed-By`` and validity options. ``$PLATFORM_HOSTDEV_DEBIAN_MIRROR``
replaces the main archive's URI (bookworm and bookworm-backports),
``$PLATFORM_HOSTDEV_DEBIAN_SECURITY`` the security archive's; with neither a
host entry nor the override for the main archive, :class:`~board.aptsources.MirrorError`
says which files were read.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from board.aptsources import MIRROR_ENV, SECURITY_ENV, Archive, Archives, host_archives
from board.cache import board_dir, content_key, file_digest, files_digest, locked, publish_dir
from board.debversion import version_key
from board.errors import DownloadError
from board.host import FETCH_TOOLS, check_host_tools

__all__ = [
    "KERNEL_METAPACKAGE",
    "AptArm64",
    "Kernel",
    "Package",
    "kernel_image_dir",
]

log = logging.getLogger(__name__)

KERNEL_METAPACKAGE = "linux-image-6.12-arm64"
BOARD_SUITE = "bookworm"  # the board runs Debian 12's arm64 packages, whatever the host runs
DEFAULT_MAX_AGE = 24 * 3600.0
_IMAGE_DEP = re.compile(r"^linux-image-(?P<abi>6\.12\.\d+\+[\w.~+]+)-arm64$")
_TIMEOUT_QUERY = 300.0
_TIMEOUT_UPDATE = 900.0
_TIMEOUT_DOWNLOAD = 1800.0


@dataclass(frozen=True)
class Package:
    """One binary package version as the archive describes it."""

    name: str
    version: str
    arch: str
    depends: str = ""
    pre_depends: str = ""
    size: int = 0
    sha256: str = ""

    @property
    def deb_name(self) -> str:
        """The file name apt-get download gives it (epoch colon escaped)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @property
    def spec(self) -> str:
        """An exact apt selector: name:arch=version."""
        return f"{self.name}:{self.arch}={self.version}"

    def dependency_groups(self) -> list[list[str]]:
        """Pre-Depends and Depends as alternatives of bare names (no versions, no :any)."""
        groups = []
        for field in (self.pre_depends, self.depends):
            for group in filter(None, (part.strip() for part in field.split(","))):
                alternatives = group.split("|")
                groups.append([re.split(r"[\s(:\[]", alt.strip(), maxsplit=1)[0]
                               for alt in alternatives])
        return groups


@dataclass(frozen=True)
class Kernel:
    """A resolved Debian arm64 kernel: every related package shares ``version``."""

    abi: str  # e.g. 6.12.117+deb12
    version: str  # e.g. 6.12.117-1~deb12u1

    @property
    def release(self) -> str:
        """The kernel release (uname -r, /lib/modules/<release>)."""
        return f"{self.abi}-arm64"

    @property
    def series(self) -> str:
        """Major.minor, e.g. 6.12 (names linux-source-6.12)."""
        return ".".join(self.abi.split(".")[:2])

    def image(self) -> tuple[str, str]:
        return f"linux-image-{self.release}", "arm64"

    def build_packages(self) -> list[tuple[str, str]]:
        """Headers, common headers, the amd64 kbuild tools and the source (name, arch)."""
        return [
            (f"linux-headers-{self.release}", "arm64"),
            (f"linux-headers-{self.abi}-common", "all"),
            (f"linux-kbuild-{self.abi}", "amd64"),
            (f"linux-source-{self.series}", "all"),
        ]


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Split deb822 control text (apt-cache show output) into field dicts."""
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            stanzas.append(fields)
    return stanzas


def _package(fields: dict[str, str]) -> Package:
    return Package(
        name=fields["Package"],
        version=fields["Version"],
        arch=fields.get("Architecture", ""),
        depends=fields.get("Depends", ""),
        pre_depends=fields.get("Pre-Depends", ""),
        size=int(fields.get("Size", "0") or 0),
        sha256=fields.get("SHA256", ""),
    )


class AptArm64:
    """apt-get/apt-cache with the private arm64 configuration under ``<cache>/board/apt``."""

    def __init__(self, cache: Path | None = None, max_age: float | None = None,
                 archives: Archives | None = None) -> None:
        self.board = board_dir(cache)
        self.root = self.board / "apt"
        self.debs = self.board / "debs"
        if max_age is None:
            max_age = float(os.environ.get("PLATFORM_HOSTDEV_APT_MAX_AGE", DEFAULT_MAX_AGE))
        self.max_age = max_age
        self._archives = archives

    @property
    def archives(self) -> Archives:
        """The Debian archives to fetch from: the host's (read once), or those given."""
        if self._archives is None:
            self._archives = host_archives()
            if self._archives.security is None:
                log.warning("the host's apt sources have no %s-security entry and %s is not "
                            "set: the board's lists go without %s-security",
                            self._archives.codename, SECURITY_ENV, BOARD_SUITE)
        return self._archives

    # -- configuration ------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.root / "apt.conf"

    def _entries(self) -> list[tuple[Archive, str]]:
        archives = self.archives
        entries = [(archives.main, BOARD_SUITE)]
        if archives.security is not None:
            entries.append((archives.security, f"{BOARD_SUITE}-security"))
        entries.append((archives.backports, f"{BOARD_SUITE}-backports"))
        return entries

    def _embedded_key(self, key: str) -> Path:
        """Where an entry's embedded Signed-By key is written (one-line sources need a file)."""
        return self.root / "etc" / f"signed-by-{content_key(key)}.asc"

    def sources(self) -> str:
        """The private sources.list text: one line per suite, the host's options kept."""
        lines = []
        for archive, suite in self._entries():
            options = ["arch=arm64,amd64"]
            for name, value in archive.options:
                if name == "signed-by" and "\n" in value:
                    value = str(self._embedded_key(value))
                options.append(f"{name}={value}")
            lines.append(f"deb [{' '.join(options)}] {archive.uri} {suite} main\n")
        return "".join(lines)

    def _mirror_hint(self) -> str:
        origins = "; ".join(f"{suite}: {archive.uri} (from {archive.origin})"
                            for archive, suite in self._entries())
        return (f"Check that the mirrors are reachable ({origins}); set {MIRROR_ENV} or "
                f"{SECURITY_ENV} to use others.")

    def write_config(self) -> None:
        """Create (or refresh) the private apt directories and configuration files."""
        for sub in ("lists/partial", "cache/archives/partial", "state", "etc/parts",
                    "etc/sources.list.d", "etc/preferences.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.debs.mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        (self.root / "etc" / "preferences").touch()
        etc = self.root / "etc"
        for archive, _suite in self._entries():
            signed_by = archive.signed_by or ""
            if "\n" in signed_by:
                _write_if_changed(self._embedded_key(signed_by), signed_by + "\n")
        _write_if_changed(etc / "sources.list", self.sources())
        settings = {
            "APT::Architecture": "arm64",
            "Dir::Etc::Main": str(self.config_file),
            "Dir::Etc::Parts": str(etc / "parts"),
            "Dir::Etc::SourceList": str(etc / "sources.list"),
            "Dir::Etc::SourceParts": str(etc / "sources.list.d"),
            "Dir::Etc::Preferences": str(etc / "preferences"),
            "Dir::Etc::PreferencesParts": str(etc / "preferences.d"),
            "Dir::State": str(self.root / "state"),
            "Dir::State::Lists": str(self.root / "lists"),
            "Dir::State::status": str(self.root / "state" / "status"),
            "Dir::Cache": str(self.root / "cache"),
            "Dir::Log": str(self.root / "state"),
            "Acquire::Languages": "none",
            "Acquire::Retries": "3",
        }
        if os.geteuid() == 0:  # root: keep apt from switching to _apt, who cannot write here
            settings["APT::Sandbox::User"] = "root"
        lines = [f'{key} "{value}";' for key, value in settings.items()]
        lines.append('APT::Architectures { "arm64"; "amd64"; };')
        _write_if_changed(self.config_file, "\n".join(lines) + "\n")

    def _run(self, argv: Sequence[str], timeout: float, cwd: Path | None = None,
             what: str = "", none_found_ok: bool = False) -> str:
        check_host_tools(FETCH_TOOLS)
        env = dict(os.environ, APT_CONFIG=str(self.config_file), LC_ALL="C.UTF-8")
        env.pop("DEBIAN_FRONTEND", None)
        try:
            done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=True)
        except subprocess.CalledProcessError as exc:
            if none_found_ok and "No packages found" in (exc.stderr or ""):
                return ""
            raise DownloadError(
                f"{what or argv[0]} failed (exit {exc.returncode}): {' '.join(argv)}\n"
                f"{(exc.stderr or exc.stdout or '').strip()[-2000:]}\n"
                f"{self._mirror_hint()}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise DownloadError(f"{what or argv[0]} timed out after {timeout:.0f} s: "
                                f"{' '.join(argv)}") from exc
        return done.stdout

    # -- package lists --------------------------------------------------------------------

    def lists_age(self) -> float | None:
        """Seconds since the last successful update of these sources, None if never."""
        stamp = self.root / "updated"
        if not stamp.is_file() or stamp.read_text() != self.sources():
            return None
        return time.time() - stamp.stat().st_mtime

    def update(self, force: bool = False) -> None:
        """``apt-get update`` when forced, never done, or older than ``max_age``.

        When a refresh fails but older lists exist, they are used with a warning.
        """
        with locked(self.root / ".lock"):
            self.write_config()
            age = self.lists_age()
            if not force and age is not None and age < self.max_age:
                return
            log.info("updating the private arm64 apt lists in %s", self.root / "lists")
            try:
                self._run(["apt-get", "-q", "--error-on=any", "update"], _TIMEOUT_UPDATE,
                          what="apt-get update")
            except DownloadError as exc:
                if age is None:
                    raise
                log.warning("apt-get update failed, using lists from %.0f h ago: %s",
                            age / 3600, exc)
                return
            (self.root / "updated").write_text(self.sources())

    def fingerprint(self) -> str:
        """Digest of the lists' InRelease files: changes whenever the archive state does."""
        releases = sorted((self.root / "lists").glob("*InRelease"))
        if not releases:
            raise DownloadError(f"no apt lists in {self.root / 'lists'}: run the update first")
        return files_digest(releases)

    # -- queries --------------------------------------------------------------------------

    def show(self, selectors: Iterable[str], all_versions: bool = False) -> list[Package]:
        """Records for apt selectors (name:arch, name:arch=version); unknown names give none."""
        selectors = list(selectors)
        if not selectors:
            return []
        argv = ["apt-cache", "show"] + ([] if all_versions else ["--no-all-versions"])
        text = self._run(argv + selectors, _TIMEOUT_QUERY, what="apt-cache show",
                         none_found_ok=True)
        return [_package(fields) for fields in parse_stanzas(text)]

    def newest(self, name: str, arch: str = "arm64") -> Package:
        """The highest version of ``name`` in any configured suite."""
        found = [p for p in self.show([f"{name}:{arch}"], all_versions=True) if p.name == name]
        if not found:
            raise DownloadError(f"package {name} ({arch}) is not in bookworm, bookworm-security "
                                f"or bookworm-backports (lists in {self.root / 'lists'})")
        return max(found, key=lambda p: version_key(p.version))

    def exact(self, name: str, arch: str, version: str) -> Package:
        """The record of ``name`` at exactly ``version`` (kernel packages must all match)."""
        qualifier = "" if arch == "all" else f":{arch}"
        found = [p for p in self.show([f"{name}{qualifier}={version}"]) if p.version == version]
        if not found:
            raise DownloadError(
                f"{name} {version} ({arch}) is not available from the mirror: the kernel "
                "packages must all have the same version. The archive may be mid-update; "
                "retry later, or refresh the lists with `python3 -m board build --refresh`."
            )
        return found[0]

    def providers(self, virtual: str) -> list[str]:
        """Names of real packages that Provide ``virtual``."""
        text = self._run(["apt-cache", "showpkg", f"{virtual}:arm64"], _TIMEOUT_QUERY,
                         what="apt-cache showpkg")
        _, _, tail = text.partition("Reverse Provides:")
        return [line.split()[0].split(":")[0] for line in tail.strip().splitlines() if line]

    def resolve_kernel(self) -> Kernel:
        """The newest Debian 6.12 arm64 kernel: metapackage -> versioned image package."""
        meta = self.newest(KERNEL_METAPACKAGE)
        for group in meta.dependency_groups():
            match = _IMAGE_DEP.match(group[0])
            if match:
                return Kernel(abi=match["abi"], version=meta.version)
        raise DownloadError(f"{KERNEL_METAPACKAGE} {meta.version} depends on no "
                            f"linux-image-6.12.*-arm64 package: {meta.depends!r}")

    def closure(self, roots: Iterable[str], exclude: Iterable[str] = ()) -> list[Package]:
        """Roots plus their Depends/Pre-Depends, recursively (arm64 candidates).

        A dependency group is satisfied by an alternative already chosen, else by the
        first real package (virtual names go to their first provider). Names in
        ``exclude`` are pruned with everything only they would pull in.
        """
        excluded = set(exclude)
        chosen: dict[str, Package] = {}
        pending = [name for name in roots if name not in excluded]
        while pending:
            records = {p.name: p for p in self.show(f"{n}:arm64" for n in pending)}
            missing = [n for n in pending if n not in records]
            for name in missing:
                providers = [p for p in self.providers(name) if p not in excluded]
                if not providers:
                    raise DownloadError(f"no arm64 package provides {name!r}")
                log.debug("%s is virtual: taking %s", name, providers[0])
                if providers[0] not in chosen:
                    records.update({p.name: p for p in self.show([f"{providers[0]}:arm64"])})
            chosen.update(records)
            pending = []
            for package in records.values():
                for group in package.dependency_groups():
                    if any(alt in chosen or alt in excluded for alt in group):
                        continue
                    if group[0] not in pending:
                        pending.append(group[0])
        return sorted(chosen.values(), key=lambda p: p.name)

    # -- downloads and extraction ---------------------------------------------------------

    def download(self, packages: Sequence[Package]) -> list[Path]:
        """The .deb files of ``packages``, fetched into the debs cache when missing."""
        if any(not (self.debs / p.deb_name).is_file() for p in packages):
            with locked(self.root / ".lock"):
                self.write_config()
                self._fetch([p for p in packages if not (self.debs / p.deb_name).is_file()])
        return [self.debs / p.deb_name for p in packages]

    def _fetch(self, wanted: Sequence[Package]) -> None:
        """apt-get download into a scratch dir, check each file, move it into the cache."""
        if not wanted:
            return
        log.info("downloading %d arm64 package(s), %.0f MB: %s", len(wanted),
                 sum(p.size for p in wanted) / 1e6, " ".join(p.name for p in wanted))
        tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=self.debs))
        try:
            self._run(["apt-get", "-q", "download"] + [p.spec for p in wanted],
                      _TIMEOUT_DOWNLOAD, cwd=tmp, what="apt-get download")
            for package in wanted:
                fetched = tmp / package.deb_name
                if not fetched.is_file():
                    raise DownloadError(f"apt-get download of {package.spec} produced no "
                                        f"{package.deb_name} in {tmp}")
                if package.sha256 and file_digest(fetched) != package.sha256:
                    raise DownloadError(f"{fetched.name}: SHA-256 differs from the archive's "
                                        "record; retry (the mirror may be mid-update)")
                os.replace(fetched, self.debs / package.deb_name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def extract(deb: Path, dest: Path) -> None:
        """Unpack a .deb's files into ``dest`` (dpkg-deb -x; no maintainer scripts)."""
        dest.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True,
                           capture_output=True, text=True, timeout=_TIMEOUT_DOWNLOAD)
        except subprocess.CalledProcessError as exc:
            raise DownloadError(f"dpkg-deb -x {deb} failed: {exc.stderr.strip()}. "
                                f"Delete the file to fetch it again.") from exc
        except subprocess.TimeoutExpired as exc:
            raise DownloadError(f"dpkg-deb -x {deb} took over {exc.timeout:.0f} s") from exc

    def kernel_dir(self, kernel: Kernel) -> Path:
        """``<cache>/board/<kernel release>``: everything built for that kernel."""
        return self.board / kernel.release

    def image_dir(self, kernel: Kernel) -> Path:
        """The extracted linux-image package of ``kernel`` (downloaded on first use)."""
        final = self.kernel_dir(kernel) / "image"
        if final.is_dir():
            return final
        name, arch = kernel.image()
        (deb,) = self.download([self.exact(name, arch, kernel.version)])
        with locked(self.kernel_dir(kernel) / ".lock"):
            return publish_dir(final, lambda tmp: self.extract(deb, tmp))


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def kernel_image_dir(cache: Path | None = None) -> Path:
    """Root of the extracted linux-image package of the newest Debian 6.12 arm64 kernel.

    ``cache`` is the project cache (default ``$PLATFORM_HOSTDEV_CACHE`` or
    ~/.cache/platform-hostdev). The image holds ``boot/vmlinuz-<release>``,
    ``lib/modules/<release>/`` and the DTB corpus under
    ``usr/lib/linux-image-<release>/``. Downloads and extracts on first use only.
    """
    apt = AptArm64(cache)
    apt.update()
    return apt.image_dir(apt.resolve_kernel())
