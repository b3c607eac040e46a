"""Each rule on a domain's platform hostdevs has one home (domain.rules): the hook and the
commands give the same verdict and the same message on the same host.

The hook resolves devices in sysfs just before QEMU starts; the commands (translate,
define, check-host, sync and the guest-DT builder) in the inventory. They used to
carry their own copies of each rule, which drifted: the hook let two hostdevs share an
alias, the commands took a DT alias or a nodedev name as <device name> (the hook and
QEMU look the sysfs name up), and the AMBA, name-agreement, duplicate and ACPI
refusals each said something else at each place.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from platform_hostdev.binding.operations import device_state
from platform_hostdev.domain import translate
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.model import PHD_NS
from platform_hostdev.domain.validate import check_domain
from platform_hostdev.dt.fdt import read_dtb
from platform_hostdev.errors import HostdevError
from platform_hostdev.guestdt.builder import build_guest_tree
from platform_hostdev.guestdt.store import GuestDtStore
from platform_hostdev.guestdt.sync import sync_domain
from platform_hostdev.hook.qemu import HookEnv, dispatch
from platform_hostdev.host.inventory import Inventory, load_inventory
from platform_hostdev.vfio.correlate import correlate

from tests.support.domains import with_guest_dt
from tests.support.fakehost import build_fake_host
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

VIRTIO, VIRTIO2, PL061 = "a000000.virtio_mmio", "a000200.virtio_mmio", "9030000.pl061"


@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    host = build_fake_host(tmp_path / "root", virt_dtb, drivers=QEMU_VIRT_DRIVERS,
                           iommu="all", vfio_loaded=True)
    return FakeKernel(host, reset_required=False)


def _libvirt_form(hostdevs: str, features: str = "") -> bytes:
    """A translated domain whose <metadata> holds these phd:hostdev elements verbatim."""
    return (f"<domain type='qemu'><name>vm1</name>"
            f"<uuid>0b6f8a4c-7e7c-4d5e-9a59-1f1d2c3b4a50</uuid><memory>524288</memory>"
            f"<metadata><phd:hostdevs xmlns:phd='{PHD_NS}'>{hostdevs}</phd:hostdevs>"
            f"</metadata><os><type arch='aarch64' machine='virt'>hvm</type></os>{features}"
            f"<devices><emulator>/usr/bin/qemu-system-aarch64</emulator></devices>"
            f"</domain>").encode()


def _hostdev(source: str, extra: str = "") -> str:
    return (f"<phd:hostdev mode='subsystem' type='platform' managed='yes'>"
            f"<phd:source>{source}</phd:source>{extra}</phd:hostdev>")


def _name(name: str) -> str:
    return f"<phd:device name='{name}'/>"


def _path(path: str) -> str:
    return f"<phd:devicetree path='{path}'/>"


def _hook_error(kernel: FakeKernel, xml: bytes) -> str:
    """The hook's refusal of a prepare (what it printed after 'refused: ')."""
    err = io.StringIO()
    env = HookEnv(kernel.as_host(), err=err)
    assert dispatch(["vm1", "prepare", "begin", "-"], with_guest_dt(kernel.root, xml), env) == 1
    first = err.getvalue().splitlines()[0]
    assert first.startswith("platform-hostdev: prepare of domain vm1 refused: "), first
    return first.split("refused: ", 1)[1]


def _commands_error(kernel: FakeKernel, xml: bytes) -> HostdevError:
    inventory = load_inventory(str(kernel.root))
    with pytest.raises(HostdevError) as info:
        translate.forward(parse_xml(xml, "d"), inventory)
    return info.value


def _untouched(kernel: FakeKernel) -> None:
    for name, bus, driver in ((VIRTIO, "platform", "virtio-mmio"),
                              (VIRTIO2, "platform", "virtio-mmio"),
                              (PL061, "amba", "pl061_gpio")):
        assert device_state(kernel, bus, name).driver in (driver, None)
    assert not kernel.writes


def _inventory(kernel: FakeKernel) -> Inventory:
    return load_inventory(str(kernel.root))


def test_an_amba_device_is_refused_alike_by_the_hook_the_commands_and_the_builder(
        kernel: FakeKernel, virt_dtb: Path) -> None:
    xml = _libvirt_form(_hostdev(_name(PL061)))
    expected = f"{PL061} is an AMBA device (a primecell, DT node /pl061@9030000)"
    hook = _hook_error(kernel, xml)
    commands = _commands_error(kernel, xml)
    inventory = _inventory(kernel)
    correlation = correlate(inventory.tree, inventory.by_name[PL061], inventory.page_size())
    with pytest.raises(HostdevError) as info:
        build_guest_tree(read_dtb(virt_dtb), inventory.tree, [correlation])
    assert hook == commands.what
    assert expected in hook and expected in info.value.what
    assert commands.fix == info.value.fix
    _untouched(kernel)


def test_a_name_and_a_path_of_two_devices_are_refused_alike(kernel: FakeKernel) -> None:
    xml = _libvirt_form(_hostdev(_path("/virtio_mmio@a000200") + _name(VIRTIO)))
    hook, commands = _hook_error(kernel, xml), _commands_error(kernel, xml)
    assert hook == commands.what == (
        f"hostdev names two devices: device name {VIRTIO} is {VIRTIO} at DT node "
        "/virtio_mmio@a000000, but the DT path is /virtio_mmio@a000200")
    _untouched(kernel)


@pytest.mark.parametrize("hostdevs, what", [
    (_hostdev(_name(VIRTIO), "<phd:alias name='x'/>")
     + _hostdev(_name(VIRTIO2), "<phd:alias name='x'/>"),
     f"alias x appears in two platform hostdevs ({VIRTIO} and {VIRTIO2})"),
    (_hostdev(_name(VIRTIO)) + _hostdev(_path("/virtio_mmio@a000000")),
     f"device {VIRTIO} appears in two platform hostdevs ({VIRTIO} and /virtio_mmio@a000000)"),
])
def test_duplicates_are_refused_alike(kernel: FakeKernel, hostdevs: str, what: str) -> None:
    xml = _libvirt_form(hostdevs)
    hook, commands = _hook_error(kernel, xml), _commands_error(kernel, xml)
    assert hook == commands.what == what
    _untouched(kernel)


def test_device_name_is_the_sysfs_name_for_both(kernel: FakeKernel) -> None:
    nodedev = "platform_a000000_virtio_mmio"  # the inventory knows it as another name
    xml = _libvirt_form(_hostdev(_name(nodedev)))
    hook, commands = _hook_error(kernel, xml), _commands_error(kernel, xml)
    assert nodedev in hook and nodedev in commands.what
    assert f"<device name='{VIRTIO}'/>" in commands.fix
    _untouched(kernel)


def test_acpi_is_refused_alike_by_define_and_sync(kernel: FakeKernel, tmp_path: Path) -> None:
    xml = _libvirt_form(_hostdev(_name(VIRTIO)), features="<features><acpi/></features>")
    tree = parse_xml(xml, "d")
    with pytest.raises(HostdevError) as define:
        check_domain(tree.getroot())
    with pytest.raises(HostdevError) as sync:
        sync_domain(None, tree, _inventory(kernel), GuestDtStore(tmp_path / "state"))
    assert (define.value.what, define.value.fix) == (sync.value.what, sync.value.fix)
    assert "ACPI" in define.value.what
    assert not (tmp_path / "state").exists()
