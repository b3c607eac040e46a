"""Fake hosts built from real DTBs: the host view equals the DTB view, look-ups go both
ways, and show / nodedev-dumpxml output is pinned by golden files."""
from __future__ import annotations

from pathlib import Path

import pytest
from platform_hostdev.vfio.correlate import correlate

from tests.support.boards import BOARDS, Board, run_cli
from tests.support.corpus import CorpusUnavailable
from tests.support.fakehost import FakeHost, build_fake_host, tree_state
from tests.support.golden import check_golden


@pytest.fixture(scope="module", params=sorted(BOARDS))
def board(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Board, Path, FakeHost]:
    spec = BOARDS[request.param]
    try:
        dtb = spec.dtb()
    except CorpusUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    host = build_fake_host(tmp_path_factory.mktemp(spec.name), dtb, drivers=spec.drivers,
                           iommu=spec.iommu if isinstance(spec.iommu, str) else set(spec.iommu),
                           vfio_loaded=spec.vfio_loaded, noiommu=spec.vfio_loaded)
    return spec, dtb, host


def _identity(devices: list[dict[str, object]]) -> dict[object, tuple[object, ...]]:
    return {d["name"]: (d["bus"], d["dt_path"], tuple(d["compatible"]),  # type: ignore[arg-type]
                        tuple(d["aliases"]), d["nodedev"])  # type: ignore[arg-type]
            for d in devices}


def test_host_list_equals_the_dtb_view(board: tuple[Board, Path, FakeHost]) -> None:
    spec, dtb, host = board
    assert host.skipped == []
    on_host = run_cli("nodedev-list", "--json", root=host.root)
    offline = run_cli("nodedev-list", "--json", dtb=dtb)
    assert (on_host.code, on_host.err, offline.code, offline.err) == (0, "", 0, "")
    host_view, dtb_view = _identity(on_host.json()), _identity(offline.json())
    assert len(host_view) == len(on_host.json()) == len(host.devices) > 10
    assert host_view == dtb_view
    listed = {d["name"]: d for d in on_host.json()}
    for name, directory in host.devices.items():
        assert listed[name]["sysfs_path"] == host.host_paths[name]
        assert listed[name]["driver"] == host.driver_of(name)
        group = host.iommu_group_of(name)
        assert listed[name]["iommu_group"] == (None if group is None else str(group))
        assert directory.is_dir()


def test_every_device_resolves_both_ways(board: tuple[Board, Path, FakeHost]) -> None:
    _, _, host = board
    inventory = run_cli("nodedev-list", root=host.root).ctx.inventory()
    assert len(inventory.devices) == len(host.devices)
    aliases = 0
    for device in inventory.devices:
        assert inventory.resolve(device.name) is device
        assert device.dt_path == host.dt_paths[device.name]
        assert inventory.resolve(device.dt_path) is device
        assert inventory.resolve(device.nodedev_name) is device
        for alias in device.aliases:
            assert inventory.tree.aliases[alias] == device.dt_path
            assert inventory.resolve(alias) is device
            aliases += 1
    assert aliases == sum(1 for p in inventory.tree.aliases.values() if p in inventory.by_path)


def test_show_and_dumpxml_match_golden(board: tuple[Board, Path, FakeHost],
                                       update_golden: bool) -> None:
    spec, _, host = board
    before = tree_state(host.root)
    for device in spec.golden:
        show = run_cli("show", device, "--json", root=host.root)
        xml = run_cli("nodedev-dumpxml", device, root=host.root)
        assert (show.code, show.err, xml.code, xml.err) == (0, "", 0, ""), device
        name = show.json()["device"]
        check_golden(f"{spec.name}/{name}.show.json", show.out, update_golden)
        check_golden(f"{spec.name}/{name}.nodedev.xml", xml.out, update_golden)
    listing = run_cli("nodedev-list", root=host.root)
    check_golden(f"{spec.name}/nodedev-list.txt", listing.out, update_golden)
    assert tree_state(host.root) == before, "a read-only command wrote to the host"


def test_every_device_correlates(board: tuple[Board, Path, FakeHost]) -> None:
    _, _, host = board
    inventory = run_cli("nodedev-list", root=host.root).ctx.inventory()
    page = inventory.page_size()
    verdicts = {d.name: correlate(inventory.tree, d, page).verdict for d in inventory.devices}
    assert set(verdicts.values()) <= {"simple", "complex"}
    assert "simple" in verdicts.values() or "complex" in verdicts.values()
