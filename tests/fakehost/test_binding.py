"""Binding on a fake host (QEMU virt DT + fake kernel): refusals, explanations, rollback."""
from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import (
    DeviceInUseError,
    InterruptedOperationError,
    NoIommuError,
    ProbeFailedError,
    ResetRequiredError,
    VfioUnavailableError,
    detach,
    device_state,
    reattach,
    recover,
)
from platform_hostdev.cli import main as cli
from platform_hostdev.host.attributes import AttributeWriteError
from platform_hostdev.host.inventory import Device, load_inventory

from tests.support.fakehost import FakeHost, build_fake_host, tree_state
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

Make = Callable[..., FakeKernel]


@pytest.fixture
def make(tmp_path: Path, virt_dtb: Path) -> Make:
    def build(vfio_loaded: bool = True, noiommu: bool = True, **kernel: Any) -> FakeKernel:
        host = build_fake_host(tmp_path / "root", virt_dtb, drivers=QEMU_VIRT_DRIVERS,
                               vfio_loaded=vfio_loaded, noiommu=noiommu)
        kernel.setdefault("reset_required", False)
        return FakeKernel(host, **kernel)
    return build


def _device(kernel: FakeKernel, name: str) -> Device:
    return load_inventory(kernel.root).resolve(name)


def _detach(kernel: FakeKernel, name: str, **kw: Any) -> Any:
    return detach(kernel.as_host(), _device(kernel, name), Journal(kernel), **kw)


def _cli(kernel: FakeKernel, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ctx = cli.Context(host=kernel.as_host(), out=out, err=err)
    return cli.main(list(argv), ctx), out.getvalue(), err.getvalue()


def _host(kernel: FakeKernel) -> FakeHost:
    return kernel.host


# ---------------------------------------------------------------- pre-checks

def test_vfio_missing_names_module_and_kernel_option(make: Make) -> None:
    kernel = make(vfio_loaded=False, available=())
    before = tree_state(kernel.root / "sys")
    with pytest.raises(VfioUnavailableError) as caught:
        _detach(kernel, "a000000.virtio_mmio")
    assert "vfio-platform driver is not registered" in caught.value.what
    assert "modprobe vfio-platform exited 1: modprobe: FATAL: Module vfio-platform not found" \
        in caught.value.what
    assert "CONFIG_VFIO_PLATFORM" in caught.value.fix and "Debian" in caught.value.fix
    assert tree_state(kernel.root / "sys") == before
    assert Journal(kernel).devices() == []


def test_vfio_loaded_on_demand_through_runner(make: Make) -> None:
    kernel = make(vfio_loaded=False, noiommu=False)
    kernel.run(["modprobe", "vfio", "enable_unsafe_noiommu_mode=1"])
    result = _detach(kernel, "9030000.pl061")
    assert result.driver == "vfio-amba" and result.noiommu
    assert (kernel.root / "sys/bus/amba/drivers/vfio-amba").is_dir()


def test_no_iommu_without_noiommu_param_says_kernel_lacks_it(make: Make) -> None:
    kernel = make(vfio_loaded=True, noiommu=False)
    (kernel.root / "sys/module/vfio/parameters/enable_unsafe_noiommu_mode").unlink()
    with pytest.raises(NoIommuError) as caught:
        _detach(kernel, "a000000.virtio_mmio")
    assert "CONFIG_VFIO_NOIOMMU" in caught.value.fix
    assert kernel.writes == []


def test_iommu_group_needs_no_noiommu(make: Make) -> None:
    kernel = make(noiommu=False)
    _host(kernel).add_to_iommu_group("a000000.virtio_mmio", 7)
    result = _detach(kernel, "a000000.virtio_mmio")
    assert (result.iommu_group, result.noiommu) == ("7", False)
    assert (kernel.root / "dev/vfio/7").exists()
    reattach(kernel.as_host(), _device(kernel, "a000000.virtio_mmio"), Journal(kernel))
    assert not (kernel.root / "dev/vfio/7").exists()
    assert device_state(kernel, "platform", "a000000.virtio_mmio").iommu_group == "7"


def test_reset_required_refused_before_any_write(make: Make) -> None:
    kernel = make(reset_required=True)
    with pytest.raises(ResetRequiredError) as caught:
        _detach(kernel, "a000000.virtio_mmio")
    assert "'virtio,mmio'" in caught.value.what and "calxeda,hb-xgmac" in caught.value.what
    assert "vfio_platform.reset_required=0" in caught.value.fix
    assert "not reset between host and guest" in caught.value.fix
    assert kernel.writes == []


def test_reset_required_amba_is_not_affected(make: Make) -> None:
    kernel = make(reset_required=True)
    assert _detach(kernel, "9030000.pl061").driver == "vfio-amba"


def test_reset_required_forced_kernel_refuses_and_tool_explains(make: Make) -> None:
    kernel = make(reset_required=True)
    with pytest.raises(ProbeFailedError) as caught:
        _detach(kernel, "a000000.virtio_mmio", force=True)
    assert "no reset handler and reset_required=1" in caught.value.what
    assert "failed with error -2" in caught.value.what
    assert "vfio-platform a000000.virtio_mmio: No reset function found for device " \
           "a000000.virtio_mmio" in kernel.log
    assert device_state(kernel, "platform", "a000000.virtio_mmio").override is None
    assert Journal(kernel).devices() == []


def test_reset_handler_alias_passes(make: Make) -> None:
    kernel = make(reset_required=True, reset_handlers={"virtio,mmio"})
    modules = kernel.root / "lib/modules/6.12.0-fake-arm64"
    modules.mkdir(parents=True)
    (modules / "modules.alias").write_text(
        "alias vfio-reset:virtio,mmio vfio_platform_fake\n")
    assert _detach(kernel, "a000000.virtio_mmio").driver == "vfio-platform"


def test_debian_61_bug_is_explained_by_behaviour(make: Make) -> None:
    kernel = make(debian_61_reset_bug=True, release="6.1.0-28-arm64")
    with pytest.raises(ProbeFailedError) as caught:
        _detach(kernel, "9030000.pl061")
    assert "ENOENT although no reset is required" in caught.value.what
    assert "Debian 6.1" in caught.value.what and "6.1.0-28-arm64" in caught.value.what
    assert "6.12" in caught.value.fix
    assert device_state(kernel, "amba", "9030000.pl061").driver == "pl061_gpio"


def test_debian_61_bug_without_kernel_log(make: Make) -> None:
    kernel = make(debian_61_reset_bug=True, release="6.12.9-arm64")
    (kernel.root / "dev/kmsg").unlink()  # unreadable log: the reason comes from behaviour
    with pytest.raises(ProbeFailedError) as caught:
        _detach(kernel, "9030000.pl061")
    assert "not bound to vfio-amba after drivers_probe" in caught.value.what
    assert "6.1.0" not in caught.value.what


# ---------------------------------------------------------------- rollback, recover, in use

def test_rollback_fails_keeps_journal_then_recover(make: Make) -> None:
    kernel = make(noiommu=False)
    kernel.probe_errors["pl061_gpio"] = errno.EIO  # the original driver cannot come back
    with pytest.raises(ProbeFailedError) as caught:
        _detach(kernel, "9030000.pl061", force=True)
    assert "rolling back failed too" in caught.value.what
    assert "probe with driver pl061_gpio failed with error -5" in caught.value.what
    assert "platform-hostdev recover" in caught.value.fix
    assert Journal(kernel).devices() == ["9030000.pl061"]
    assert recover(kernel.as_host(), Journal(kernel))[0].action == "failed"
    del kernel.probe_errors["pl061_gpio"]
    assert [a.action for a in recover(kernel.as_host(), Journal(kernel))] == ["restored"]
    assert device_state(kernel, "amba", "9030000.pl061").driver == "pl061_gpio"
    assert Journal(kernel).devices() == []


def test_reattach_refused_while_group_open(make: Make) -> None:
    kernel = make()
    result = _detach(kernel, "9030000.pl061")
    fd_dir = kernel.root / "proc/4242/fd"
    fd_dir.mkdir(parents=True)
    (kernel.root / "proc/4242/comm").write_text("qemu-system-aar\n")
    os.symlink(f"/dev/vfio/noiommu-{result.iommu_group}", fd_dir / "9")
    code, out, err = _cli(kernel, "nodedev-reattach", "9030000.pl061")
    assert code == 1 and "open by qemu-system-aar (pid 4242)" in err
    with pytest.raises(DeviceInUseError):
        reattach(kernel.as_host(), _device(kernel, "9030000.pl061"), Journal(kernel))
    assert device_state(kernel, "amba", "9030000.pl061").driver == "vfio-amba"


def test_interrupted_journal_blocks_detach(make: Make) -> None:
    kernel = make()
    journal = Journal(kernel)
    _detach(kernel, "9030000.pl061")
    journal.write(journal.read("9030000.pl061").at("unbound", "reattach"))  # type: ignore[union-attr]
    code, _, err = _cli(kernel, "nodedev-detach", "9030000.pl061")
    assert code == 1 and "interrupted reattach" in err and "recover" in err
    _host(kernel).set_driver_override("9030000.pl061", None)
    journal.write(journal.read("9030000.pl061").at("override-written", "detach"))  # type: ignore[union-attr]
    with pytest.raises(InterruptedOperationError, match="recover"):
        _detach(kernel, "9030000.pl061")


def test_corrupt_journal_is_reported_by_cli(make: Make) -> None:
    kernel = make()
    journal = Journal(kernel)
    journal.path.mkdir(parents=True)
    journal.file("9030000.pl061").write_text("{")
    code, out, err = _cli(kernel, "nodedev-detach", "9030000.pl061")
    assert code == 1 and out == ""
    assert "error: journal file /run/platform-hostdev/9030000.pl061.json is corrupt" in err
    assert "hint: check 9030000.pl061's driver" in err
    assert kernel.writes == []
    copy = "/run/platform-hostdev/" + next(n for n in os.listdir(journal.path)
                                           if n.startswith(".9030000.pl061.json.damaged-"))
    assert f"set aside as {copy}" in err and not journal.file("9030000.pl061").exists()
    for _ in range(2):  # set aside at the first detach: recover reports it every time
        code, out, err = _cli(kernel, "recover")
        assert code == 1 and out.startswith(
            "9030000.pl061: damaged: journal file /run/platform-hostdev/9030000.pl061.json "
            "is corrupt (Expecting property name") and f"set aside as {copy}" in out
        assert "hint: check 9030000.pl061's driver" in out and f"delete {copy}" in out
    code, out, _ = _cli(kernel, "recover", "--json")
    [damaged] = json.loads(out)["damaged"]
    assert code == 1 and (damaged["store"], damaged["device"], damaged["path"]) == (
        "journal file", "9030000.pl061", copy)
    code, _, err = _cli(kernel, "nodedev-detach", "9030000.pl061")
    assert code == 1 and "9030000.pl061 is refused while it is there" in err
    kernel.path(copy).unlink()  # checked, as the hint says
    assert _cli(kernel, "recover")[:2] == (0, "Nothing to recover\n")


def test_bad_spec_writes_nothing(make: Make) -> None:
    kernel = make()
    code, _, err = _cli(kernel, "nodedev-detach", "../../etc")
    assert code == 1 and "not a valid sysfs device name" in err
    assert kernel.writes == [] and Journal(kernel).devices() == []


def test_cli_json_and_dt_path(make: Make) -> None:
    kernel = make()
    code, out, _ = _cli(kernel, "nodedev-detach", "/pl061@9030000", "--json")
    assert code == 0 and '"original_driver": "pl061_gpio"' in out
    code, out, _ = _cli(kernel, "nodedev-reattach", "/pl061@9030000")
    assert (code, out) == (0, "Device 9030000.pl061 re-attached\n")


def test_reattach_without_journal_probes_any_driver(make: Make) -> None:
    """A device bound to vfio by hand (no journal) gets whatever driver matches."""
    kernel = make()
    for path, value in (("/sys/bus/amba/devices/9030000.pl061/driver_override", "vfio-amba"),
                        ("/sys/bus/amba/drivers/pl061_gpio/unbind", "9030000.pl061"),
                        ("/sys/bus/amba/drivers_probe", "9030000.pl061")):
        kernel.write_attr(path, value)
    result = reattach(kernel.as_host(), _device(kernel, "9030000.pl061"), Journal(kernel))
    assert (result.driver, result.original_known) == ("pl061_gpio", False)


# ---------------------------------------------------------------- the fake kernel itself

def test_fake_kernel_driver_override_rules(make: Make) -> None:
    kernel = make()
    path = "/sys/bus/amba/devices/9030000.pl061/driver_override"
    kernel.write_attr(path, "vfio-amba\nignored")
    assert kernel.read_text(path) == "vfio-amba\n"
    kernel.write_attr(path, "")  # zero-length write: no store call
    assert kernel.read_text(path) == "vfio-amba\n"
    kernel.write_attr(path, "\n")
    assert kernel.read_text(path) == "(null)\n"
    with pytest.raises(AttributeWriteError) as caught:
        kernel.write_attr(path, "x" * 4095)
    assert caught.value.errno == errno.EINVAL


@pytest.mark.parametrize("path, value, err", [
    ("/sys/bus/amba/drivers/rtc-pl031/unbind", "9030000.pl061", errno.ENODEV),
    ("/sys/bus/amba/drivers/pl061_gpio/bind", "9030000.pl061", errno.EBUSY),
    ("/sys/bus/amba/drivers/vfio-amba/bind", "9030000.pl061", errno.ENODEV),  # no override
    ("/sys/bus/amba/drivers_probe", "nosuch.device", errno.ENODEV),
    ("/sys/bus/platform/drivers_probe", "9030000.pl061", errno.ENODEV),  # wrong bus
    ("/sys/module/vfio_platform/parameters/reset_required", "1", errno.EACCES),
    ("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "maybe", errno.EINVAL),
    ("/sys/bus/amba/devices/9030000.pl061/nosuch", "1", errno.ENOENT),
    ("/sys/bus/amba/devices/9030000.pl061/modalias", "1", errno.EACCES),
])
def test_fake_kernel_refuses_like_sysfs(make: Make, path: str, value: str, err: int) -> None:
    kernel = make()
    with pytest.raises(AttributeWriteError) as caught:
        kernel.write_attr(path, value)
    assert caught.value.errno == err


def test_fake_kernel_drivers_probe_succeeds_when_nothing_binds(make: Make) -> None:
    kernel = make(noiommu=False)
    kernel.write_attr("/sys/bus/platform/devices/a000000.virtio_mmio/driver_override",
                      "vfio-platform")
    kernel.write_attr("/sys/bus/platform/drivers_probe", "a000000.virtio_mmio")  # no error
    assert device_state(kernel, "platform", "a000000.virtio_mmio").driver is None
    assert kernel.log == ["vfio-platform a000000.virtio_mmio: probe with driver vfio-platform "
                          "failed with error -22"]
    with pytest.raises(AttributeWriteError) as caught:  # bind_store returns the probe error
        kernel.write_attr("/sys/bus/platform/drivers/vfio-platform/bind", "a000000.virtio_mmio")
    assert caught.value.errno == errno.EINVAL
