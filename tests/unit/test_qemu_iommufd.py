"""QEMU's iommufd property on vfio-platform: parsed, cached, and required by define."""
from __future__ import annotations

from pathlib import Path

import pytest
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.define import prepare_domain
from platform_hostdev.host.boundary import host_at
from platform_hostdev.virt.qemu_caps import (
    check_iommufd,
    parse_device_properties,
    probe_properties,
)

from tests.support.domains import user_domain

# qemu-system-aarch64 10.0.2 (Debian bookworm-backports) -machine none -device vfio-platform,help
VFIO_PLATFORM_HELP = """vfio-platform options:
  fd=<string>
  host=<str>             - Host device name of assigned device
  iommufd=<link<iommufd>> - Set host IOMMUFD backend device
  mmap-timeout-ms=<uint32> - When EOI is not provided by KVM/QEMU, wait time (milliseconds) \
to re-enable device direct access after level interrupt (DEBUG) (default: 1100)
  sysfsdev=<str>         - Host sysfs path of assigned device
  x-irqfd=<bool>         - Allow disabling irqfd support (DEBUG) (default: on)
  x-no-mmap=<bool>       - Disable MMAP for device. Allows to trace MMIO accesses (DEBUG) \
(default: off)
"""
WITHOUT_IOMMUFD = "".join(line + "\n" for line in VFIO_PLATFORM_HELP.splitlines()
                          if "iommufd" not in line)
DEVICES = 'name "vfio-platform", bus System, desc "VFIO-based platform device assignment"\n'


def test_properties_are_parsed_from_device_help() -> None:
    assert parse_device_properties(VFIO_PLATFORM_HELP) == {
        "fd", "host", "iommufd", "mmap-timeout-ms", "sysfsdev", "x-irqfd", "x-no-mmap"}
    assert "iommufd" not in parse_device_properties(WITHOUT_IOMMUFD)


def test_properties_are_probed_once_and_cached(tmp_path: Path) -> None:
    emulator = tmp_path / "qemu-system-aarch64"
    emulator.write_text("")
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> str:
        calls.append(list(argv))
        return VFIO_PLATFORM_HELP
    for _ in range(2):
        props = probe_properties(str(emulator), "vfio-platform", runner, tmp_path / "cache")
        assert "iommufd" in props
    assert calls == [[str(emulator), "-machine", "none", "-device", "vfio-platform,help"]]
    emulator.write_text("rebuilt")  # another size: probed again
    probe_properties(str(emulator), "vfio-platform", runner, tmp_path / "cache")
    assert len(calls) == 2


def test_an_emulator_without_the_property_is_refused() -> None:
    check_iommufd("/usr/bin/qemu", "vfio-platform", parse_device_properties(VFIO_PLATFORM_HELP))
    with pytest.raises(HostdevError) as info:
        check_iommufd("/usr/bin/qemu", "vfio-platform", parse_device_properties(WITHOUT_IOMMUFD))
    assert info.value.code == "emulator-unsupported"
    assert info.value.what == ("vfio-platform of /usr/bin/qemu has no iommufd property: this "
                               "QEMU was built without iommufd support, so <driver "
                               "iommufd='yes'> cannot be honoured")


def _prepare(tmp_path: Path, help_text: str, iommufd: list[str]) -> tuple[list[str], list[str]]:
    emulator = tmp_path / "qemu-system-aarch64"
    emulator.write_text("")
    asked: list[str] = []

    def runner(argv: list[str]) -> str:
        asked.append(argv[-1])
        if argv[-1] == "--version":
            return "QEMU emulator version 10.0.2\n"
        return DEVICES if argv[-1] == "help" else help_text
    xml = user_domain("vm", ["a.dev"], iommufd=iommufd).replace(
        "/usr/bin/qemu-system-aarch64", str(emulator))
    prepared = prepare_domain(parse_xml(xml, "d"), None, host_at(tmp_path).replace(
        qemu_probe=runner), cache=None)
    return prepared.warnings, asked


def test_define_probes_the_property_only_for_iommufd_hostdevs(tmp_path: Path) -> None:
    _, asked = _prepare(tmp_path, WITHOUT_IOMMUFD, [])
    assert "vfio-platform,help" not in asked
    warnings, asked = _prepare(tmp_path, VFIO_PLATFORM_HELP, ["a.dev"])
    assert "vfio-platform,help" in asked
    assert "a.dev: its vfio cdev was not checked (no device tree here); the hook checks it " \
           "when the domain starts" in warnings
    with pytest.raises(HostdevError, match="has no iommufd property") as info:
        _prepare(tmp_path, WITHOUT_IOMMUFD, ["a.dev"])
    assert info.value.code == "emulator-unsupported"
