"""vfio.uapi's ioctl table; vfio.client's call order and errno -> message mapping."""
from __future__ import annotations

import errno
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device
from platform_hostdev.vfio import client as vfio
from platform_hostdev.vfio import uapi

from tests.support.fakevfio import FakeIrq, FakeRegion, FakeVfio, vfio_sysfs

VIRTIO = Device("a000000.virtio_mmio", "platform", "/virtio_mmio@a000000", ("virtio,mmio",))
PL061 = Device("9030000.pl061", "amba", "/pl061@9030000", ("arm,pl061", "arm,primecell"))


# ---------------------------------------------------------------- the table

@pytest.mark.parametrize(("name", "number"), [
    ("GET_API_VERSION", 0x3B64), ("CHECK_EXTENSION", 0x3B65), ("SET_IOMMU", 0x3B66),
    ("GROUP_GET_STATUS", 0x3B67), ("GROUP_SET_CONTAINER", 0x3B68),
    ("GROUP_UNSET_CONTAINER", 0x3B69), ("GROUP_GET_DEVICE_FD", 0x3B6A),
    ("DEVICE_GET_INFO", 0x3B6B), ("DEVICE_GET_REGION_INFO", 0x3B6C),
    ("DEVICE_GET_IRQ_INFO", 0x3B6D),
])
def test_ioctl_numbers_match_the_uapi_header(name: str, number: int) -> None:
    assert uapi.IOCTLS[name].number == number


@pytest.mark.parametrize(("name", "size"), [
    ("GROUP_GET_STATUS", 8), ("GROUP_SET_CONTAINER", 4), ("DEVICE_GET_INFO", 24),
    ("DEVICE_GET_REGION_INFO", 32), ("DEVICE_GET_IRQ_INFO", 16),
])
def test_struct_sizes(name: str, size: int) -> None:
    assert uapi.IOCTLS[name].size == size
    assert len(uapi.IOCTLS[name].pack()) == size


def _le32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, sys.byteorder) for v in values)


def test_pack_sets_argsz_and_places_fields_at_their_offsets() -> None:
    buf = uapi.IOCTLS["DEVICE_GET_REGION_INFO"].pack(index=3)
    assert buf[0:4] == _le32(32)          # argsz
    assert buf[8:12] == _le32(3)          # index after flags
    assert buf[12:] == bytes(20)          # cap_offset, size, offset


def test_unpack_region_info_reads_u64_size_and_offset() -> None:
    raw = (_le32(32, 0x7, 1, 0) + (0x1000).to_bytes(8, sys.byteorder)
           + (1 << 40).to_bytes(8, sys.byteorder))
    fields = uapi.IOCTLS["DEVICE_GET_REGION_INFO"].unpack(raw)
    assert fields == {"argsz": 32, "flags": 7, "index": 1, "cap_offset": 0,
                      "size": 0x1000, "offset": 1 << 40}


def test_device_info_accepts_the_older_20_byte_layout() -> None:
    fields = uapi.IOCTLS["DEVICE_GET_INFO"].unpack(_le32(20, 0x8, 1, 1, 0))
    assert (fields["flags"], fields["num_regions"], fields["num_irqs"]) == (8, 1, 1)
    assert fields["pad"] == 0


def test_device_info_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="num_irqs"):
        uapi.IOCTLS["DEVICE_GET_INFO"].unpack(_le32(12, 4, 1))


def test_region_info_shorter_than_its_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="DEVICE_GET_REGION_INFO"):
        uapi.IOCTLS["DEVICE_GET_REGION_INFO"].unpack(_le32(32, 7, 0, 0))


def test_pack_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="sizee"):
        uapi.IOCTLS["DEVICE_GET_REGION_INFO"].pack(sizee=1)


def test_flag_names() -> None:
    assert uapi.flag_names("device", 0x4) == ["PLATFORM"]
    assert uapi.flag_names("device", 0x8 | 0x1) == ["RESET", "AMBA"]
    assert uapi.flag_names("region", 0x7) == ["READ", "WRITE", "MMAP"]
    assert uapi.flag_names("irq", 0x7) == ["EVENTFD", "MASKABLE", "AUTOMASKED"]
    assert uapi.flag_names("irq", 0x1 | 0x40) == ["EVENTFD", "0x40"]
    assert uapi.flag_names("group", 0) == []
    assert uapi.flag_bit("region", "MMAP") == 4


def test_iommu_model_arguments() -> None:
    assert dict(uapi.IOMMU_TYPES) == {"TYPE1v2": 3, "TYPE1": 1, "NOIOMMU": 8}


# ---------------------------------------------------------------- the group

def test_noiommu_group_node(tmp_path: Path) -> None:
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, "vfio-platform", "0")
    ref = vfio.find_group(HostFs(tmp_path), VIRTIO)
    assert ref == vfio.GroupRef("0", True, "/dev/vfio/noiommu-0")
    assert ref.noiommu and ref.to_json()["unsafe"]


def test_iommu_group_node(tmp_path: Path) -> None:
    vfio_sysfs(tmp_path, "amba", PL061.name, "vfio-amba", "7", group_name=None)
    ref = vfio.find_group(HostFs(tmp_path), PL061)
    assert ref == vfio.GroupRef("7", False, "/dev/vfio/7")
    assert not ref.noiommu and not ref.to_json()["unsafe"]


@pytest.mark.parametrize("driver", [None, "virtio-mmio", "vfio-amba"])
def test_not_bound_to_vfio_says_to_detach(tmp_path: Path, driver: str | None) -> None:
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, driver, "0")
    with pytest.raises(vfio.NotBoundError) as info:
        vfio.find_group(HostFs(tmp_path), VIRTIO)
    assert f"platform-hostdev nodedev-detach {VIRTIO.name}" in info.value.fix
    assert (driver or "not bound to any driver") in info.value.what


def test_bound_without_group(tmp_path: Path) -> None:
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, "vfio-platform", None)
    with pytest.raises(vfio.NotBoundError, match="no iommu_group"):
        vfio.find_group(HostFs(tmp_path), VIRTIO)


# ---------------------------------------------------------------- the whole query

def _host(tmp_path: Path, members: dict[str, str | None] | None = None,
          **fake: Any) -> tuple[HostFs, FakeVfio]:
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, "vfio-platform", "0", members=members)
    return HostFs(tmp_path), FakeVfio(device=VIRTIO.name, root=str(tmp_path), **fake)


def test_query_reads_device_regions_and_irqs(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path)
    view = vfio.query(fs, VIRTIO, fake)
    assert view.info == vfio.DeviceInfo(0x4, 1, 1, 0)
    assert view.info.flag_names == ["PLATFORM"]
    assert view.regions == (vfio.RegionInfo(0, 0x3, 0x200, 0),)
    assert view.irqs == (vfio.IrqInfo(0, 0x1, 1),)
    assert view.iommu_type == "NOIOMMU"
    assert view.group.node == "/dev/vfio/noiommu-0"
    assert not fake.open_fds, "every fd is closed"


def test_query_several_regions_offsets(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, regions=[FakeRegion(0x7, 0x1000), FakeRegion(0x3, 0x20)],
                        irqs=[FakeIrq(0x7), FakeIrq(0x1)])
    view = vfio.query(fs, VIRTIO, fake)
    assert [(r.size, r.offset, r.mmap) for r in view.regions] == [
        (0x1000, 0, True), (0x20, 1 << 40, False)]
    assert [i.automasked for i in view.irqs] == [True, False]


def test_call_order(tmp_path: Path, mocker: Any) -> None:
    fs, fake = _host(tmp_path)
    spy = mocker.spy(fake, "ioctl")
    vfio.query(fs, VIRTIO, fake)
    names = [c[0] for c in fake.calls]
    order = ["open", "GROUP_SET_CONTAINER", "SET_IOMMU", "GROUP_GET_DEVICE_FD"]
    positions = [names.index(n) for n in order]
    assert positions == sorted(positions)
    assert fake.calls[0] == ("open", "/dev/vfio/vfio")
    assert names.index("GROUP_GET_STATUS") < names.index("GROUP_SET_CONTAINER")
    assert fake.calls.index(("open", "/dev/vfio/noiommu-0")) < names.index(
        "GROUP_SET_CONTAINER")
    # SET_CONTAINER gets a pointer to the container's fd; SET_IOMMU gets the model by value
    set_container = next(c for c in spy.call_args_list if c.args[1] == 0x3B68)
    assert struct.unpack("=i", set_container.args[2])[0] == 101   # the fake's first fd
    set_iommu = next(c for c in spy.call_args_list if c.args[1] == 0x3B66)
    assert set_iommu.args[2] == 8
    get_fd = next(c for c in spy.call_args_list if c.args[1] == 0x3B6A)
    assert isinstance(get_fd.args[2], bytearray) and bytes(get_fd.args[2]) == (
        VIRTIO.name.encode() + b"\0")
    # fds close in reverse order
    assert [c for c in fake.calls if c[0] == "close"] == [
        ("close", "device"), ("close", "group"), ("close", "container")]


def test_real_groups_use_type1v2_then_type1(tmp_path: Path) -> None:
    fs = HostFs(tmp_path)
    vfio_sysfs(tmp_path, "platform", VIRTIO.name, "vfio-platform", "3", group_name=None)
    fake = FakeVfio(root=str(tmp_path), group_node="/dev/vfio/3", extensions=frozenset({1}))
    view = vfio.query(fs, VIRTIO, fake)
    assert view.iommu_type == "TYPE1"
    assert not view.group.noiommu
    fake2 = FakeVfio(root=str(tmp_path), group_node="/dev/vfio/3", extensions=frozenset({1, 3}))
    assert vfio.query(fs, VIRTIO, fake2).iommu_type == "TYPE1v2"


def test_get_device_fd_before_set_iommu_is_refused_by_the_fake(tmp_path: Path) -> None:
    """The fake enforces the kernel's order, so the order test above can fail."""
    fs, fake = _host(tmp_path)
    ref = vfio.find_group(fs, VIRTIO)
    with vfio.Container.open(fs, fake) as container, \
            vfio.Group.open(fs, fake, ref) as group:
        group.set_container(container)
        with pytest.raises(vfio.VfioError, match="GROUP_GET_DEVICE_FD.*Invalid argument"):
            group.device(VIRTIO.name)
    assert not fake.open_fds


# ---------------------------------------------------------------- errors

def test_no_container_node_says_to_load_vfio(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, open_errors={"/dev/vfio/vfio": errno.ENOENT})
    with pytest.raises(vfio.VfioError) as info:
        vfio.query(fs, VIRTIO, fake)
    assert "/dev/vfio/vfio does not exist" in info.value.what
    assert "modprobe vfio" in info.value.fix
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_noiommu_permission_denied_names_cap_sys_rawio(tmp_path: Path, code: int) -> None:
    fs, fake = _host(tmp_path, open_errors={"/dev/vfio/noiommu-0": code})
    with pytest.raises(vfio.VfioPermissionError) as info:
        vfio.query(fs, VIRTIO, fake)
    assert "permission denied opening /dev/vfio/noiommu-0" in info.value.what
    assert "CAP_SYS_RAWIO" in info.value.fix and "root" in info.value.fix
    assert not fake.open_fds


def test_group_busy(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, open_errors={"/dev/vfio/noiommu-0": errno.EBUSY})
    with pytest.raises(vfio.VfioBusyError) as info:
        vfio.query(fs, VIRTIO, fake)
    assert "busy" in info.value.what and "iommu group 0" in info.value.what
    assert "fuser" in info.value.fix


def test_device_busy(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, ioctl_errors={"GROUP_GET_DEVICE_FD": errno.EBUSY})
    with pytest.raises(vfio.VfioBusyError, match="in use"):
        vfio.query(fs, VIRTIO, fake)
    assert not fake.open_fds


def test_group_node_vanished(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, open_errors={"/dev/vfio/noiommu-0": errno.ENOENT})
    with pytest.raises(vfio.NotBoundError) as info:
        vfio.query(fs, VIRTIO, fake)
    assert "nodedev-detach" in info.value.fix


def test_group_not_viable_names_the_other_devices_and_drivers(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, viable=False,
                        members={"ff0e0000.ethernet": "macb", "ff0f0000.mdio": None,
                                 "ff0d0000.dma": "vfio-platform"})
    with pytest.raises(vfio.GroupNotViableError) as info:
        vfio.query(fs, VIRTIO, fake)
    assert "ff0e0000.ethernet (macb)" in info.value.what
    assert "ff0f0000.mdio" not in info.value.what      # no driver: does not block
    assert "ff0d0000.dma" not in info.value.what       # already on vfio
    assert "nodedev-detach" in info.value.fix
    assert "GROUP_SET_CONTAINER" not in [c[0] for c in fake.calls]
    assert not fake.open_fds


def test_noiommu_model_missing(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, extensions=frozenset({1, 3}))
    with pytest.raises(vfio.VfioError) as info:
        vfio.query(fs, VIRTIO, fake)
    assert "enable_unsafe_noiommu_mode=1" in info.value.fix


def test_set_container_permission(tmp_path: Path) -> None:
    fs, fake = _host(tmp_path, ioctl_errors={"GROUP_SET_CONTAINER": errno.EPERM})
    with pytest.raises(vfio.VfioPermissionError, match="GROUP_SET_CONTAINER"):
        vfio.query(fs, VIRTIO, fake)


def test_every_vfio_error_is_a_user_error() -> None:
    for cls in (vfio.VfioError, vfio.NotBoundError, vfio.GroupNotViableError,
                vfio.VfioPermissionError, vfio.VfioBusyError):
        assert issubclass(cls, HostdevError)


def test_no_region_is_ever_read_or_mapped(tmp_path: Path, mocker: Any) -> None:
    """The client only asks; os.read/pread/mmap on a device fd would be a defect."""
    fs, fake = _host(tmp_path)
    reads = [mocker.patch("os." + name) for name in ("read", "pread", "write", "pwrite")]
    mmap = mocker.patch("mmap.mmap")
    vfio.query(fs, VIRTIO, fake)
    assert not any(m.called for m in reads) and not mmap.called
