"""IOMMU group viability: one rule (vfio.groups), the same verdict at its three users.

The hook (before QEMU starts), check-host and the VFIO client's explanation of
a not-viable group all judge a group member by its driver as the kernel does
(drivers/vfio/group.c vfio_group_ioctl_get_status(): viable unless a driver
without driver_managed_dma holds a member). They used to disagree on a member
bound to vfio-pci (the client listed it as a blocker) and on pci-stub and
pcieport (the hook and check-host refused them).
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from platform_hostdev.checkhost import devices as checkhost_devices
from platform_hostdev.checkhost.model import FAIL, PASS
from platform_hostdev.errors import HostdevError
from platform_hostdev.hook import qemu as hook
from platform_hostdev.host.boundary import host_at
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device
from platform_hostdev.vfio import client as vfio
from platform_hostdev.vfio.groups import blocks_viability, group_blockers, group_members

from tests.support.fakevfio import FakeVfio, vfio_sysfs

DEV = Device("a000000.virtio_mmio", "platform", "/virtio_mmio@a000000", ("virtio,mmio",))
OTHER = "ff0e0000.ethernet"
GROUP = "5"

# driver of the other member -> does it keep the group from being viable?
VERDICTS = {None: False, "vfio-platform": False, "vfio-amba": False, "vfio-pci": False,
            "pci-stub": False, "pcieport": False, "macb": True, "rtc-pl031": True}


def _fs(tmp_path: Path, other_driver: str | None) -> HostFs:
    vfio_sysfs(tmp_path, "platform", DEV.name, "vfio-platform", GROUP, group_name=None,
               members={OTHER: other_driver})
    return HostFs(tmp_path)


def _hook_verdict(fs: HostFs) -> bool:
    device = hook.HookDevice(DEV.name, DEV.bus, DEV.dt_path, DEV.compatible, True)
    domain = hook._Domain("vm", "u", [device])
    env = hook.HookEnv(host_at(fs.root), err=io.StringIO())
    try:
        hook._check_groups(domain, env)
    except HostdevError as exc:
        assert OTHER in exc.what
        return True
    return False


def _checkhost_verdict(fs: HostFs) -> bool:
    check = checkhost_devices._viability(fs, DEV.name, GROUP, {DEV.name})
    assert check.status in (PASS, FAIL)
    return check.status == FAIL


def _client_lists(fs: HostFs, tmp_path: Path) -> bool:
    """Whether the client names the member when the kernel says the group is not viable."""
    fake = FakeVfio(device=DEV.name, group_node=f"/dev/vfio/{GROUP}", root=str(tmp_path),
                    viable=False, extensions=frozenset({1, 3}))
    (tmp_path / "dev/vfio").mkdir(parents=True, exist_ok=True)
    with pytest.raises(vfio.GroupNotViableError) as info:
        vfio.query(fs, DEV, fake)
    return OTHER in info.value.what


@pytest.mark.parametrize("driver", list(VERDICTS))
def test_hook_checkhost_and_client_judge_a_member_alike(tmp_path: Path,
                                                        driver: str | None) -> None:
    fs = _fs(tmp_path, driver)
    expected = VERDICTS[driver]
    assert blocks_viability(driver) is expected
    assert group_blockers(fs, GROUP) == ([(OTHER, driver)] if expected else [])
    assert _hook_verdict(fs) is expected
    assert _checkhost_verdict(fs) is expected
    assert _client_lists(fs, tmp_path) is expected


def test_a_member_bound_to_vfio_pci_is_not_a_blocker(tmp_path: Path) -> None:
    fs = _fs(tmp_path, "vfio-pci")
    assert group_members(fs, GROUP) == sorted([(DEV.name, "vfio-platform"), (OTHER, "vfio-pci")])
    assert group_blockers(fs, GROUP) == []
    assert not _client_lists(fs, tmp_path)


def test_exempt_members_and_missing_groups(tmp_path: Path) -> None:
    fs = _fs(tmp_path, "macb")
    assert group_blockers(fs, GROUP) == [(OTHER, "macb")]
    assert group_blockers(fs, GROUP, exempt={OTHER}) == []
    assert group_members(fs, "99") == [] and group_blockers(fs, "99") == []
