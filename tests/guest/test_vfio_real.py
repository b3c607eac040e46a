"""Guest tier: the VFIO client and ``inspect`` against the real vfio-platform / vfio-amba.

Runs INSIDE the emulated board (Debian's arm64 6.12 kernel under
qemu-system-aarch64, vfio in no-IOMMU mode, vfio-platform reset_required=0)::

    python3 -m board run -- python3 -m pytest -p no:cacheprovider tests/guest

Each device is detached to its vfio driver with :func:`binding.detach`, looked
at through :mod:`platform_hostdev.vfio.client` (never its registers), and given back
with :func:`binding.reattach`: a000000.virtio_mmio (unused transport, no
driver) and 9030000.pl061 (back on pl061_gpio).
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from platform_hostdev.binding import operations as binding
from platform_hostdev.binding.journal import Journal
from platform_hostdev.cli.main import Context, main
from platform_hostdev.host.boundary import live_host
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device, load_inventory
from platform_hostdev.vfio import client as vfio
from platform_hostdev.vfio.correlate import correlate


@dataclass(frozen=True)
class Case:
    name: str
    bus: str
    driver: str
    original: str | None     # the driver the device has before and after the test
    flag: str
    size: int                # the DT reg size
    mmap: bool
    irq_flags: list[str]


CASES = [
    Case("a000000.virtio_mmio", "platform", "vfio-platform", None, "PLATFORM", 0x200, False,
         ["EVENTFD"]),
    Case("9030000.pl061", "amba", "vfio-amba", "pl061_gpio", "AMBA", 0x1000, True,
         ["EVENTFD", "MASKABLE", "AUTOMASKED"]),
]


@pytest.fixture(scope="module", autouse=True)
def _in_the_board() -> None:
    missing = [what for what, ok in (
        ("the emulated board (/run/platform-hostdev-board; run through "
         "'python3 -m board run -- python3 -m pytest tests/guest')",
         os.path.exists("/run/platform-hostdev-board")),
        ("root", os.geteuid() == 0),
        ("/dev/vfio/vfio (the vfio module)", os.path.exists("/dev/vfio/vfio")),
        ("vfio no-IOMMU mode (vfio.enable_unsafe_noiommu_mode=Y)",
         open_text("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode") == "Y"),
        ("the vfio-platform driver", os.path.isdir("/sys/bus/platform/drivers/vfio-platform")),
        ("the vfio-amba driver", os.path.isdir("/sys/bus/amba/drivers/vfio-amba")),
    ) if not ok]
    if missing:
        pytest.fail("guest tests need: " + "; ".join(missing), pytrace=False)


def open_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def driver_of(case: Case) -> str | None:
    return HostFs("/").link_name(f"/sys/bus/{case.bus}/devices/{case.name}/driver")


def device(name: str) -> Device:
    return load_inventory("/").resolve(name)


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def on_vfio(request: pytest.FixtureRequest) -> Iterator[Case]:
    """The case's device bound to its vfio driver; given back afterwards."""
    case: Case = request.param
    fs = HostFs("/")
    assert driver_of(case) == case.original, f"{case.name} does not start on {case.original}"
    journal, host = Journal(fs), live_host(fs)
    binding.detach(host, device(case.name), journal)
    try:
        assert driver_of(case) == case.driver
        yield case
    finally:
        binding.reattach(host, device(case.name), journal)
        assert driver_of(case) == case.original, f"{case.name} was not given back"


def test_view_through_the_client(on_vfio: Case) -> None:
    case = on_vfio
    dev = device(case.name)
    fds_before = len(os.listdir("/proc/self/fd"))
    view = vfio.query(HostFs("/"), dev)
    assert len(os.listdir("/proc/self/fd")) == fds_before, "the client leaked an fd"
    assert view.api_version == 0
    assert view.iommu_type == "NOIOMMU"
    assert view.group.noiommu and view.group.node == f"/dev/vfio/noiommu-{view.group.number}"
    assert case.flag in view.info.flag_names
    assert not ({"PLATFORM", "AMBA"} - {case.flag}) & set(view.info.flag_names)
    assert (view.info.num_regions, view.info.num_irqs) == (1, 1)
    region = view.regions[0]
    inventory = load_inventory("/")
    dt_size = correlate(inventory.tree, dev, inventory.page_size()).regions[0].size
    assert region.size == dt_size == case.size
    assert region.mmap is case.mmap
    assert {"READ", "WRITE"} <= set(region.flag_names)
    assert region.offset == 0
    assert view.irqs[0].flag_names == case.irq_flags
    assert view.irqs[0].count == 1


def test_inspect_json_reports_no_disagreement(on_vfio: Case) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["inspect", on_vfio.name, "--json"], Context(out=out, err=err))
    assert code == 0, err.getvalue() + out.getvalue()
    data = json.loads(out.getvalue())
    assert data["disagreements"] == []
    assert data["agree"] is True
    assert [w["kind"] for w in data["warnings"]] == ["noiommu"]
    assert data["device_flags"]["vfio"] == [on_vfio.flag]


def test_inspect_text(on_vfio: Case) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["inspect", on_vfio.name], Context(out=out, err=err)) == 0, err.getvalue()
    assert "VFIO agrees with the device tree." in out.getvalue()
    assert "(no-IOMMU: UNSAFE)" in out.getvalue()


def test_group_held_elsewhere_is_busy(on_vfio: Case) -> None:
    """The kernel allows one open of a group: a second client gets EBUSY, mapped clearly."""
    fs = HostFs("/")
    dev = device(on_vfio.name)
    ref = vfio.find_group(fs, dev)
    with vfio.Group.open(fs, vfio.OsSyscalls(), ref):
        with pytest.raises(vfio.VfioBusyError) as info:
            vfio.query(fs, dev)
    assert ref.node in info.value.what
    assert vfio.query(fs, dev).info.num_regions == 1   # free again once closed

