"""Binding contract: the same cases against the fake kernel (host) and the real one (board).

Every expectation here holds for Debian's arm64 6.12 kernel on QEMU's virt
machine; the host run proves the fake kernel behaves the same. When the board
run disagrees, the fake is what gets fixed.
"""
from __future__ import annotations

import json
import os

import pytest
from platform_hostdev.binding.journal import JournalRecord
from platform_hostdev.binding.operations import detach, device_state, reattach, recover

from tests.contract.conftest import Backend, SimulatedKill, kill_at

# name -> (bus, DT path, compatibles): the nodes QEMU's virt machine writes (hw/arm/virt.c
# create_virtio_devices, create_fw_cfg, create_rtc, create_gpio_devices), as 6.12 names them
IDENTITIES = {
    "a000000.virtio_mmio": ("platform", "/virtio_mmio@a000000", ("virtio,mmio",)),
    "9020000.fw-cfg": ("platform", "/fw-cfg@9020000", ("qemu,fw-cfg-mmio",)),
    "9010000.pl031": ("amba", "/pl031@9010000", ("arm,pl031", "arm,primecell")),
    "9030000.pl061": ("amba", "/pl061@9030000", ("arm,pl061", "arm,primecell")),
}
# device -> (vfio driver, driver it has on the board before and after)
MOVABLE = {
    "a000000.virtio_mmio": ("vfio-platform", None),
    "9030000.pl061": ("vfio-amba", "pl061_gpio"),
}


def _override_file(backend: Backend, bus: str, name: str) -> str:
    text = backend.fs.read_text(f"/sys/bus/{bus}/devices/{name}/driver_override")
    assert text is not None, f"{name} has no driver_override file"
    return text.strip()


def _assert_original(backend: Backend, name: str) -> None:
    bus = IDENTITIES[name][0]
    state = device_state(backend.fs, bus, name)
    assert state.driver == MOVABLE[name][1]
    assert _override_file(backend, bus, name) == "(null)"
    assert backend.journal().read(name) is None
    assert not backend.journal().file(name).exists()


@pytest.mark.parametrize("name", sorted(IDENTITIES))
def test_identity(backend: Backend, name: str) -> None:
    bus, dt_path, compatible = IDENTITIES[name]
    inventory = backend.inventory()
    device = inventory.resolve(name)
    assert (device.bus, device.dt_path, device.compatible) == (bus, dt_path, compatible)
    assert inventory.resolve(dt_path).name == name


@pytest.mark.parametrize("name", sorted(MOVABLE))
def test_detach_reattach(backend: Backend, name: str) -> None:
    bus = IDENTITIES[name][0]
    vfio, original = MOVABLE[name]
    _assert_original(backend, name)

    code, out, err = backend.cli("nodedev-detach", name)
    assert (code, out, err) == (0, f"Device {name} detached\n", "")
    state = device_state(backend.fs, bus, name)
    assert state.driver == vfio
    assert _override_file(backend, bus, name) == vfio
    record = backend.journal().read(name)
    assert record is not None
    assert (record.op, record.step, record.original_driver, record.original_override) == \
        ("detach", "detached", original, None)
    assert state.iommu_group is not None
    group_name = backend.fs.read_text(f"/sys/kernel/iommu_groups/{state.iommu_group}/name")
    assert (group_name or "").strip() == "vfio-noiommu"
    node = backend.fs.path(f"/dev/vfio/noiommu-{state.iommu_group}")
    assert node.exists()

    code, out, err = backend.cli("nodedev-detach", name)
    assert code == 1 and "already bound to" in err and "nodedev-reattach" in err

    code, out, err = backend.cli("nodedev-reattach", name, "--json")
    assert code == 0, err
    assert json.loads(out)["driver"] == original
    _assert_original(backend, name)
    assert device_state(backend.fs, bus, name).iommu_group is None
    assert not node.exists()

    code, out, err = backend.cli("nodedev-reattach", name)
    assert code == 1 and "not bound to" in err


@pytest.mark.parametrize("name", sorted(MOVABLE))
def test_noiommu_off_refused_before_any_write(backend: Backend, name: str) -> None:
    backend.set_noiommu(False)
    code, out, err = backend.cli("nodedev-detach", name)
    assert code == 1 and out == ""
    assert "no IOMMU group" in err and "enable_unsafe_noiommu_mode" in err
    _assert_original(backend, name)


@pytest.mark.parametrize("name", sorted(MOVABLE))
def test_noiommu_off_kernel_refusal_rolled_back(backend: Backend, name: str) -> None:
    """--force lets the kernel decide: the probe fails, the tool restores and says why."""
    backend.set_noiommu(False)
    code, out, err = backend.cli("nodedev-detach", name, "--force")
    assert code == 1 and out == ""
    assert "no IOMMU group" in err and "no-IOMMU" in err
    # the reason is read from the kernel log (/dev/kmsg), not only guessed from the state
    assert f"probe with driver {MOVABLE[name][0]} failed with error -22" in err
    assert "put back as it was" in err
    _assert_original(backend, name)
    backend.set_noiommu(True)
    code, _, err = backend.cli("nodedev-detach", name)
    assert code == 0, err
    code, _, err = backend.cli("nodedev-reattach", name)
    assert code == 0, err
    _assert_original(backend, name)


@pytest.mark.parametrize("step", ["planned", "override-written", "unbound", "probed"])
@pytest.mark.parametrize("name", sorted(MOVABLE))
def test_recover_after_killed_detach(backend: Backend, name: str, step: str) -> None:
    device = backend.inventory().resolve(name)
    journal = backend.journal()
    with pytest.raises(SimulatedKill):
        detach(backend.host(observer=kill_at(step, "detach")), device, journal)
    left = journal.read(name)
    assert isinstance(left, JournalRecord) and (left.op, left.step) == ("detach", step)

    code, out, err = backend.cli("recover")
    assert code == 0, err
    assert out.startswith(f"{name}: restored: interrupted detach at step {step}")
    _assert_original(backend, name)
    assert backend.cli("recover") == (0, "Nothing to recover\n", "")  # idempotent


@pytest.mark.parametrize("step", ["planned", "override-cleared", "unbound"])
def test_recover_after_killed_reattach(backend: Backend, step: str) -> None:
    name = "9030000.pl061"
    device = backend.inventory().resolve(name)
    journal = backend.journal()
    detach(backend.host(), device, journal)
    with pytest.raises(SimulatedKill):
        reattach(backend.host(observer=kill_at(step, "reattach")), device, journal)
    assert journal.read(name) is not None
    actions = recover(backend.host(), journal)
    assert [(a.device, a.action) for a in actions] == [(name, "restored")]
    _assert_original(backend, name)
    assert recover(backend.host(), journal) == []


def test_recover_keeps_completed_detach(backend: Backend) -> None:
    name = "a000000.virtio_mmio"
    assert backend.cli("nodedev-detach", name)[0] == 0
    code, out, _ = backend.cli("recover", "--json")
    data = json.loads(out)
    assert code == 0 and [a["action"] for a in data["journal"]] == ["kept"]
    assert data["released"] == []  # detached by hand, owned by no domain: left alone
    assert backend.cli("nodedev-reattach", name)[0] == 0
    _assert_original(backend, name)


def test_journal_written_before_first_write(backend: Backend) -> None:
    """The journal holds the original state when the first sysfs write happens."""
    name = "9030000.pl061"
    device = backend.inventory().resolve(name)
    journal = backend.journal()
    seen: list[tuple[str, bool, str | None, str]] = []

    def hook(step: str, record: JournalRecord) -> None:
        on_disk = journal.read(name)
        assert on_disk == record  # every step is on disk before the next write
        seen.append((record.step, os.path.exists(journal.file(name)),
                     device_state(backend.fs, "amba", name).driver,
                     _override_file(backend, "amba", name)))

    detach(backend.host(observer=hook), device, journal)
    assert seen == [("planned", True, "pl061_gpio", "(null)"),
                    ("override-written", True, "pl061_gpio", "vfio-amba"),
                    ("unbound", True, None, "vfio-amba"),
                    ("probed", True, "vfio-amba", "vfio-amba"),
                    ("detached", True, "vfio-amba", "vfio-amba")]
    reattach(backend.host(), device, journal)
    _assert_original(backend, name)


def test_the_builtin_pl011_forbids_unbinding(backend: Backend) -> None:
    """Debian builds uart-pl011 in, so it sets suppress_bind_attrs
    (drivers/tty/serial/amba-pl011.c: IS_BUILTIN(CONFIG_SERIAL_AMBA_PL011)): no
    bind/unbind files, and the console's detach is refused for that before anything
    else, with nothing written."""
    assert backend.fs.link_name("/sys/bus/amba/devices/9000000.pl011/driver") == "uart-pl011"
    assert not backend.fs.path("/sys/bus/amba/drivers/uart-pl011/unbind").exists()
    assert not backend.fs.path("/sys/bus/amba/drivers/uart-pl011/bind").exists()
    code, out, _ = backend.cli("nodedev-detach", "9000000.pl011", "--force", "--json")
    error = json.loads(out)["error"]
    assert (code, error["code"], error["driver"]) == (1, "unbind-forbidden", "uart-pl011")
    assert device_state(backend.fs, "amba", "9000000.pl011").override is None
