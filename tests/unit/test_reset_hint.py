"""The reset_required hint is written once (binding.preflight.RESET_REQUIRED_FIX).

Three places tell a user that vfio-platform refuses a device without a reset
handler: the check before a detach, the explanation of a probe that failed
anyway, and check-host. The explanation used to give a shorter fix without
the command line and with less of the risk.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from platform_hostdev.binding.preflight import (
    RESET_REQUIRED_FIX,
    DeviceState,
    ResetRequiredError,
    check_reset,
    explain_probe_failure,
)
from platform_hostdev.checkhost import devices as checkhost_devices
from platform_hostdev.checkhost.model import FAIL
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device

DEV = Device("a000000.virtio_mmio", "platform", "/virtio_mmio@a000000", ("virtio,mmio",))


@pytest.fixture
def fs(tmp_path: Path) -> HostFs:
    for path, text in (("sys/module/vfio_platform/parameters/reset_required", "Y\n"),
                       ("proc/sys/kernel/osrelease", "6.12.0-fake\n")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return HostFs(tmp_path)


def test_the_three_places_give_one_fix(fs: HostFs) -> None:
    with pytest.raises(ResetRequiredError) as before:
        check_reset(fs, DEV)
    after = explain_probe_failure(
        fs, DEV, [f"vfio-platform {DEV.name}: No reset function found for device {DEV.name}"],
        DeviceState(None, "vfio-platform", "3"))
    check = checkhost_devices._reset(fs, DEV)
    assert check.status == FAIL
    assert before.value.fix == after.fix == check.fix == RESET_REQUIRED_FIX
    assert "vfio_platform.reset_required=0" in RESET_REQUIRED_FIX
    assert "not reset between host and guest" in RESET_REQUIRED_FIX
