"""The two device sources (sysfs files, libudev) read a device alike.

They ranked a device's DT-path sources in opposite order: the sysfs source
took the of_node link first, the udev source the uevent's OF_FULLNAME. One
rule now (host.sources.device_dt_path: the link first, it is the kernel's own
pointer), and one reading of driver_override (host.fs.read_driver_override:
an unset override reads "(null)").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.preflight import device_state
from platform_hostdev.host.fs import HostFs, read_driver_override
from platform_hostdev.host.sources import HostDevice, SysfsDeviceSource, UdevDeviceSource

NAME = "ff0e0000.ethernet"
LINKED, NAMED = "/axi/ethernet@ff0e0000", "/amba/ethernet@ff0e0000"


def _host(root: Path, *, of_node: bool, override: str) -> None:
    device = root / "sys/devices/platform" / NAME
    device.mkdir(parents=True)
    bus = root / "sys/bus/platform/devices"
    bus.mkdir(parents=True)
    (bus / NAME).symlink_to(os.path.relpath(device, bus))
    node = root / "sys/firmware/devicetree/base" / LINKED.lstrip("/")
    node.mkdir(parents=True)
    if of_node:
        (device / "of_node").symlink_to(os.path.relpath(node, device))
    (device / "uevent").write_text(f"OF_FULLNAME={NAMED}\nOF_COMPATIBLE_N=1\n"
                                   "OF_COMPATIBLE_0=cdns,gem\n")
    (device / "driver_override").write_text(override)


class _UdevDevice:
    def __init__(self, root: Path) -> None:
        self.sys_name = NAME
        self.sys_path = str(root / "sys/devices/platform" / NAME)
        self.driver = None
        self.properties = {"OF_FULLNAME": NAMED, "OF_COMPATIBLE_N": "1",
                           "OF_COMPATIBLE_0": "cdns,gem"}


def _both(root: Path, mocker: Any) -> list[HostDevice]:
    context = mocker.patch("pyudev.Context")
    context.return_value.list_devices.return_value = [_UdevDevice(root)]
    fs = HostFs(root)
    return [SysfsDeviceSource(fs).devices("platform")[0],
            UdevDeviceSource(fs).devices("platform")[0]]


@pytest.mark.parametrize("of_node, expected", [(True, LINKED), (False, NAMED)])
def test_both_sources_rank_the_of_node_link_before_of_fullname(
        tmp_path: Path, mocker: Any, of_node: bool, expected: str) -> None:
    _host(tmp_path, of_node=of_node, override="(null)\n")
    assert [d.dt_path for d in _both(tmp_path, mocker)] == [expected, expected]


@pytest.mark.parametrize("text, expected", [("(null)\n", None), ("\n", None),
                                            ("vfio-platform\n", "vfio-platform")])
def test_driver_override_reads_alike_everywhere(tmp_path: Path, mocker: Any, text: str,
                                                expected: str | None) -> None:
    _host(tmp_path, of_node=True, override=text)
    fs = HostFs(tmp_path)
    assert [d.driver_override for d in _both(tmp_path, mocker)] == [expected, expected]
    assert device_state(fs, "platform", NAME).override == expected
    assert read_driver_override(fs, f"/sys/bus/platform/devices/{NAME}") == expected
    assert read_driver_override(fs, "/sys/bus/platform/devices/nothing") is None
