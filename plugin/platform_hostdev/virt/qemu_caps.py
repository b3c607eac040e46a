"""What a QEMU binary can do, probed once and cached on disk.

Detection is by capability, not by version: ``<emulator> -device help`` lists
``name "vfio-platform", bus System`` when the device exists (QEMU 2.4 to 10.1;
deprecated in 10.0, removed in 10.2 with vfio-calxeda-xgmac and vfio-amd-xgbe).
The version is read only to word the deprecation warning.

A device's properties come from ``<emulator> -machine none -device MODEL,help``
(one ``  name=<type>`` line each), probed only when a domain needs one:
vfio-platform's ``iommufd=<link<iommufd>>`` exists when QEMU was built with
CONFIG_IOMMUFD (hw/vfio/platform.c vfio_platform_dev_properties, under
``#ifdef CONFIG_IOMMUFD``), and with it the ``iommufd`` object
(backends/iommufd.c).

The cache key is the binary's path, size and mtime; entries live in
``${PLATFORM_HOSTDEV_CACHE}``, else ``/var/cache/platform-hostdev`` for root,
else ``~/.cache/platform-hostdev``, under ``qemu-caps/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.processes import QemuProbeRunner

__all__ = [
    "QemuCaps",
    "cache_dir",
    "parse_device_help",
    "parse_version",
    "probe",
    "check_vfio_platform",
    "VFIO_PLATFORM_MODELS",
    "parse_device_properties",
    "probe_properties",
    "check_iommufd",
]

VFIO_PLATFORM_MODELS = ("vfio-platform", "vfio-calxeda-xgmac", "vfio-amd-xgbe")
_DEVICE_LINE = re.compile(r'^name "([^"]+)"', re.MULTILINE)
_PROPERTY_LINE = re.compile(r"^\s+([A-Za-z0-9_.-]+)=", re.MULTILINE)
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class QemuCaps:
    """The devices and version of one emulator binary."""

    emulator: str
    version: tuple[int, int, int] | None
    devices: frozenset[str]

    @property
    def has_vfio_platform(self) -> bool:
        return "vfio-platform" in self.devices


def cache_dir(env: Mapping[str, str], is_root: bool) -> Path:
    """Where probe results are kept (see the module docstring)."""
    base = env.get("PLATFORM_HOSTDEV_CACHE")
    if base:
        return Path(base) / "qemu-caps"
    if is_root:
        return Path("/var/cache/platform-hostdev/qemu-caps")
    return Path(env.get("HOME", "~")).expanduser() / ".cache/platform-hostdev/qemu-caps"


def parse_device_help(text: str) -> frozenset[str]:
    """Device names from ``-device help`` output."""
    return frozenset(_DEVICE_LINE.findall(text))


def parse_device_properties(text: str) -> frozenset[str]:
    """Property names from ``-device MODEL,help`` output."""
    return frozenset(_PROPERTY_LINE.findall(text))


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, micro) from ``--version`` output."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _cache_key(emulator: str) -> dict[str, object]:
    try:
        st = os.stat(emulator)
    except OSError as exc:
        raise HostdevError(f"emulator {emulator} cannot be read: {exc.strerror}",
                           "install qemu-system-arm or fix <emulator> in the domain XML",
                           code="emulator-failed") from None
    return {"format": _CACHE_FORMAT, "path": emulator, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _entry(cache: Path | None, name: str) -> Path | None:
    if cache is None:
        return None
    return cache / (hashlib.sha256(name.encode()).hexdigest()[:20] + ".json")


def probe_properties(emulator: str, model: str, runner: QemuProbeRunner,
                     cache: Path | None) -> frozenset[str]:
    """The property names of device ``model`` in ``emulator`` (cached as :func:`probe`)."""
    key = {**_cache_key(emulator), "device": model}
    entry = _entry(cache, f"{emulator}\0{model}")
    if entry is not None:
        try:
            data = json.loads(entry.read_text())
            if data.get("key") == key:
                return frozenset(data["properties"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    properties = parse_device_properties(
        runner([emulator, "-machine", "none", "-device", f"{model},help"]))
    if entry is not None:
        _store(entry, {"key": key, "properties": sorted(properties)})
    return properties


def check_iommufd(emulator: str, model: str, properties: frozenset[str]) -> None:
    """Refuse an emulator whose ``model`` has no ``iommufd`` property."""
    if "iommufd" not in properties:
        raise HostdevError(
            f"{model} of {emulator} has no iommufd property: this QEMU was built without "
            "iommufd support, so <driver iommufd='yes'> cannot be honoured",
            "use a QEMU built with iommufd (Debian's qemu-system-arm 10.0 has it: "
            f"'{emulator} -device {model},help' lists iommufd=<link<iommufd>>), or drop "
            "iommufd='yes' to keep the legacy /dev/vfio/N backend",
            code="emulator-unsupported", emulator=emulator, device=model)


def probe(emulator: str, runner: QemuProbeRunner, cache: Path | None) -> QemuCaps:
    """The caps of ``emulator``, from the cache when path, size and mtime still match;
    else asked through ``runner`` (the host's QEMU probe)."""
    key = _cache_key(emulator)
    entry = _entry(cache, emulator)
    if entry is not None:
        try:
            data = json.loads(entry.read_text())
            if data.get("key") == key:
                version = data["version"]
                return QemuCaps(emulator, (version[0], version[1], version[2]) if version else None,
                                frozenset(data["devices"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    caps = QemuCaps(emulator, parse_version(runner([emulator, "--version"])),
                    parse_device_help(runner([emulator, "-machine", "none", "-device", "help"])))
    if entry is not None:
        _store(entry, {"key": key, "version": caps.version, "devices": sorted(caps.devices)})
    return caps


def _store(entry: Path, data: dict[str, object]) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, entry)
    except OSError:
        pass  # a cache that cannot be written only costs a re-probe next time


def check_vfio_platform(caps: QemuCaps) -> list[str]:
    """Refuse an emulator without vfio-platform; warnings for one that deprecates it."""
    version = ".".join(map(str, caps.version)) if caps.version else "of unknown version"
    if not caps.has_vfio_platform:
        raise HostdevError(
            f"QEMU {version} ({caps.emulator}) has no vfio-platform device: "
            "QEMU 10.2 removed platform-device passthrough",
            "use a QEMU that still has it: pin QEMU 10.1.x (or 10.0 from Debian "
            "bookworm-backports / trixie) and point <emulator> at it", code="emulator-unsupported")
    if caps.version is not None and (10, 0) <= caps.version[:2] <= (10, 1):
        return [f"QEMU {version} deprecates vfio-platform (removed in 10.2): keep this QEMU "
                "pinned to 10.1.x or older for platform-device passthrough"]
    return []
