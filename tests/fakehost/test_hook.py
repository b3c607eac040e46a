"""The libvirt qemu hook on a fake host: every phase, ownership, groups, rollback.

In-process with the fake kernel (which models driver_override, unbind and
drivers_probe); the installed executable as a subprocess is in
test_hook_process.py; fault injection and races in test_hook_faults.py.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.hook.qemu import HookEnv, dispatch

from tests.support.domains import libvirt_domain, synced_domain, with_guest_dt
from tests.support.fakehost import build_fake_host
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

VIRTIO = "a000000.virtio_mmio"
VIRTIO2 = "a000200.virtio_mmio"
QEMU_UID = 64055


def make_kernel(root: Path, dtb: Path, iommu: Any = "all", noiommu: bool = False) -> FakeKernel:
    host = build_fake_host(root, dtb, drivers=QEMU_VIRT_DRIVERS, iommu=iommu,
                           vfio_loaded=True, noiommu=noiommu)
    kernel = FakeKernel(host, reset_required=False)
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\n"
                                f"libvirt-qemu:x:{QEMU_UID}:{QEMU_UID}::/:/bin/false\n")
    (etc / "group").write_text(f"root:x:0:\nlibvirt-qemu:x:{QEMU_UID}:\n")
    return kernel


@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    return make_kernel(tmp_path / "root", virt_dtb)


def run_hook(kernel: FakeKernel, domain: str, op: str, xml: bytes, *, synced: bool = True,
             allow_noiommu: bool = False, **boundaries: Any) -> tuple[int, str]:
    """One hook call on the fake kernel. ``synced``: the domain is given its guest DT
    first (:func:`with_guest_dt`), as 'platform-hostdev sync' does; the guest-DT check's
    own tests pass ``synced=False`` and the XML as they mean it. ``boundaries`` replace
    the Host's (e.g. ``clock=``)."""
    err = io.StringIO()
    if synced:
        xml = with_guest_dt(kernel.root, xml)
    hook_env = HookEnv(kernel.as_host(**boundaries), err=err, allow_noiommu=allow_noiommu)
    sub = {"prepare": "begin", "release": "end", "reconnect": "begin",
           "migrate": "begin", "restore": "begin"}.get(op, "begin")
    code = dispatch([domain, op, sub, "-"], xml, hook_env)
    return code, err.getvalue()


def mark_running(kernel: FakeKernel, domain: str, pid: int = 4242, start: int = 5000) -> None:
    """libvirt's pid file for ``domain`` and a QEMU process ``pid`` that started at clock
    tick ``start`` (/proc/PID/cmdline and stat, as the kernel writes them)."""
    run = kernel.path("/run/libvirt/qemu")
    run.mkdir(parents=True, exist_ok=True)
    (run / f"{domain}.pid").write_text(f"{pid}\n")
    proc = kernel.path(f"/proc/{pid}")
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "cmdline").write_bytes(b"/usr/bin/qemu-system-aarch64\0-name\0" + domain.encode())
    # fs/proc/array.c do_task_stat: "pid (comm) state" then fields 4.., starttime is 22
    middle = [1, pid, pid, 0, -1, 4194560, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0]
    (proc / "stat").write_text(f"{pid} (qemu-system-aar) S {' '.join(map(str, middle))} "
                               f"{start} 1000000 2000 18446744073709551615\n")


def stop_running(kernel: FakeKernel, domain: str, pid: int = 4242) -> None:
    """QEMU exited: libvirt removes its pid file, the kernel its /proc entry."""
    kernel.path(f"/run/libvirt/qemu/{domain}.pid").unlink(missing_ok=True)
    proc = kernel.path(f"/proc/{pid}")
    for entry in proc.iterdir() if proc.exists() else ():
        entry.unlink()
    proc.rmdir() if proc.exists() else None


def test_prepare_detaches_hands_over_the_node_and_release_restores(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [VIRTIO])
    code, err = run_hook(kernel, "vm1", "prepare", xml)
    assert (code, err) == (0, "")
    state = device_state(kernel, "platform", VIRTIO)
    assert state.driver == "vfio-platform"
    node = kernel.path(f"/dev/vfio/{state.iommu_group}")
    assert (node.stat().st_uid, node.stat().st_gid) == (QEMU_UID, QEMU_UID)
    record = Owners(kernel).read(VIRTIO)
    assert record is not None and record.domain == "vm1" and record.state == "prepared"
    assert record.detached_by_us

    code, err = run_hook(kernel, "vm1", "release", xml)
    assert (code, err) == (0, "")
    state = device_state(kernel, "platform", VIRTIO)
    assert state.driver is None and state.override is None
    assert Owners(kernel).all() == []


def test_an_owner_record_under_another_device_name_is_refused_not_acted_on(
        kernel: FakeKernel) -> None:
    """Owners check the record's device against its file, as the journal does: a record
    moved to B.json naming device A is not taken for A's (once A was given back under
    it and B.json was never removed). It is set aside and reported; A, whose only record
    it is, is refused to another domain until the copy is dealt with."""
    xml = libvirt_domain("vm1", [VIRTIO])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    owners = Owners(kernel)
    os.rename(owners.file(VIRTIO), owners.file(VIRTIO2))
    _, err = run_hook(kernel, "vm1", "release", xml)
    [copy] = [n for n in os.listdir(owners.path) if n.startswith(f".{VIRTIO2}.json.damaged-")]
    copy = f"/run/platform-hostdev/owners/{copy}"
    # on the hook's stderr: libvirt logs it
    assert f"{VIRTIO2}.json describes device '{VIRTIO}'; set aside as {copy}" in err
    assert device_state(kernel, "platform", VIRTIO).driver == "vfio-platform"  # not touched
    assert not owners.file(VIRTIO2).exists()
    code, err = run_hook(kernel, "vm2", "prepare", libvirt_domain("vm2", [VIRTIO]))
    assert code == 1 and f"{VIRTIO} is refused while it is there" in err
    assert f"move {copy} back to /run/platform-hostdev/owners/{VIRTIO}.json" in err
    os.rename(kernel.path(copy), owners.file(VIRTIO))  # as the hint says
    assert run_hook(kernel, "vm1", "release", xml) == (0, "")
    assert device_state(kernel, "platform", VIRTIO).driver is None and owners.all() == []


def test_amba_device_is_refused_before_anything_changes(kernel: FakeKernel) -> None:
    code, err = run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", ["9030000.pl061"]))
    assert code == 1
    assert "AMBA device" in err and "hint:" in err
    assert device_state(kernel, "amba", "9030000.pl061").driver == "pl061_gpio"
    assert Owners(kernel).all() == []


def test_second_domain_is_refused_while_the_first_runs(kernel: FakeKernel) -> None:
    assert run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO]))[0] == 0
    mark_running(kernel, "vm1")
    code, err = run_hook(kernel, "vm2", "prepare", libvirt_domain("vm2", [VIRTIO2, VIRTIO]))
    assert code == 1
    assert f"device {VIRTIO} is in use by domain vm1" in err
    # vm2's first device was detached in that call and given back by the rollback
    assert device_state(kernel, "platform", VIRTIO2).driver is None
    assert device_state(kernel, "platform", VIRTIO).driver == "vfio-platform"
    assert [r.domain for r in Owners(kernel).all()] == ["vm1"]


def test_device_of_a_vanished_owner_is_released_then_taken(kernel: FakeKernel) -> None:
    clock = [1000.0]
    assert run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO]),
                    clock=lambda: clock[0])[0] == 0
    # vm1 never started and libvirtd died before release: past the grace period
    clock[0] += 10_000
    code, err = run_hook(kernel, "vm2", "prepare", libvirt_domain("vm2", [VIRTIO]),
                         clock=lambda: clock[0])
    assert (code, err) == (0, "")
    assert Owners(kernel).read(VIRTIO).domain == "vm2"  # type: ignore[union-attr]


def test_unmanaged_device_must_already_be_on_vfio(kernel: FakeKernel) -> None:
    code, err = run_hook(kernel, "vm1", "prepare",
                         libvirt_domain("vm1", [VIRTIO], managed=False))
    assert code == 1 and "must be manually detached" in err
    assert f"nodedev-detach {VIRTIO}" in err


def test_group_with_a_host_bound_member_is_not_viable(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make_kernel(tmp_path / "r", virt_dtb,
                         iommu={VIRTIO: 5, "9010000.pl031": 5, VIRTIO2: 6})
    code, err = run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO]))
    assert code == 1
    assert "IOMMU group 5" in err and "9010000.pl031 (driver rtc-pl031)" in err
    assert device_state(kernel, "platform", VIRTIO).driver is None  # rolled back
    assert Owners(kernel).all() == []


def test_noiommu_group_is_refused_unless_allowed(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make_kernel(tmp_path / "r", virt_dtb, iommu="none", noiommu=True)
    xml = libvirt_domain("vm1", [VIRTIO])
    code, err = run_hook(kernel, "vm1", "prepare", xml)
    assert code == 1 and "no-IOMMU group" in err
    assert device_state(kernel, "platform", VIRTIO).driver is None
    code, err = run_hook(kernel, "vm1", "prepare", xml, allow_noiommu=True)
    assert (code, err) == (0, "")
    record = Owners(kernel).read(VIRTIO)
    assert record is not None and record.node is not None and "noiommu-" in record.node
    assert run_hook(kernel, "vm1", "release", xml, allow_noiommu=True)[0] == 0
    assert not kernel.path(record.node).exists()


def test_reconnect_adopts_and_never_fails(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [VIRTIO])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    for record in Owners(kernel).all():
        Owners(kernel).remove(record.device)  # /run was lost with the daemon's state
    mark_running(kernel, "vm1")
    assert run_hook(kernel, "vm1", "reconnect", xml) == (0, "")
    assert Owners(kernel).read(VIRTIO).domain == "vm1"  # type: ignore[union-attr]
    # a domain whose device is gone: reported, exit 0 (non-zero would kill the guest)
    code, err = run_hook(kernel, "vm3", "reconnect", libvirt_domain("vm3", ["ffff.nothing"]))
    assert code == 0 and "no platform or amba device named ffff.nothing" in err


@pytest.mark.parametrize("op", ["migrate", "restore"])
def test_migrate_and_restore_are_refused_with_the_reason(kernel: FakeKernel, op: str) -> None:
    code, err = run_hook(kernel, "vm1", op, libvirt_domain("vm1", [VIRTIO]))
    assert code == 1 and "not migratable" in err


def test_release_of_a_domain_that_never_prepared_changes_nothing(kernel: FakeKernel) -> None:
    before = sorted(os.listdir(kernel.path("/sys/bus/platform/devices")))
    assert run_hook(kernel, "vm9", "release", libvirt_domain("vm9", [VIRTIO])) == (0, "")
    assert sorted(os.listdir(kernel.path("/sys/bus/platform/devices"))) == before
    assert device_state(kernel, "platform", VIRTIO).driver is None


def test_failed_detach_leaves_no_record_and_the_device_as_it_was(tmp_path: Path,
                                                                 virt_dtb: Path) -> None:
    # no IOMMU and no-IOMMU mode off: vfio-platform's probe cannot succeed
    kernel = make_kernel(tmp_path / "r", virt_dtb, iommu="none", noiommu=False)
    code, err = run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO]))
    assert code == 1 and VIRTIO in err
    state = device_state(kernel, "platform", VIRTIO)
    assert state.driver is None and state.override is None
    assert Owners(kernel).all() == []


def test_recover_command_gives_back_devices_of_vanished_domains(kernel: FakeKernel) -> None:
    from platform_hostdev.cli import main as cli

    xml = libvirt_domain("vm1", [VIRTIO])
    # prepared at the epoch: far past the start grace, and vm1 has no QEMU running
    assert run_hook(kernel, "vm1", "prepare", xml, clock=lambda: 0.0)[0] == 0
    out = io.StringIO()
    ctx = cli.Context(out=out, host=kernel.as_host())
    assert cli.main(["--root", str(kernel.root), "recover"], ctx) == 0
    assert f"{VIRTIO}: released from domain vm1" in out.getvalue()
    assert device_state(kernel, "platform", VIRTIO).driver is None
    assert Owners(kernel).all() == []


def test_device_carrying_the_default_route_is_not_taken(kernel: FakeKernel) -> None:
    from tests.fakehost.test_protection import dress

    dress(kernel.host)  # the default route's NIC sits on a003c00.virtio_mmio
    nic = "a003c00.virtio_mmio"
    code, err = run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO2, nic]))
    assert code == 1 and "default route" in err and "eth0" in err
    for name in (VIRTIO2, nic):
        assert device_state(kernel, "platform", name).driver is None
    assert Owners(kernel).all() == []


def test_domain_without_its_guest_dt_is_refused_with_the_fix(kernel: FakeKernel) -> None:
    code, err = run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO]),
                         synced=False)
    assert code == 1 and "has no guest device tree" in err
    assert "run 'platform-hostdev sync vm1'" in err
    assert device_state(kernel, "platform", VIRTIO).driver is None


def test_synced_domain_passes_and_a_changed_one_is_refused(kernel: FakeKernel) -> None:
    xml = synced_domain(kernel.root, "vm1", [VIRTIO], memory_mib=512)
    assert run_hook(kernel, "vm1", "prepare", xml, synced=False) == (0, "")
    assert run_hook(kernel, "vm1", "release", xml)[0] == 0
    grown = xml.replace(b'<memory unit="MiB">512</memory>', b'<memory unit="MiB">1024</memory>')
    assert grown != xml
    code, err = run_hook(kernel, "vm1", "prepare", grown, synced=False)
    assert code == 1 and "is out of date (memory: 536870912 -> 1073741824)" in err
    more = synced_domain(kernel.root, "vm1", [VIRTIO])  # the same, synced again
    assert run_hook(kernel, "vm1", "prepare", more.replace(
        VIRTIO.encode(), VIRTIO2.encode()), synced=False)[0] == 1  # device changed


def test_a_memory_size_libvirt_would_refuse_is_out_of_date_not_a_traceback(
        kernel: FakeKernel) -> None:
    xml = synced_domain(kernel.root, "vm1", [VIRTIO], memory_mib=512)
    odd = xml.replace(b'<memory unit="MiB">512</memory>', b'<memory unit="MiB">lots</memory>')
    assert odd != xml
    code, err = run_hook(kernel, "vm1", "prepare", odd, synced=False)
    assert code == 1 and "is out of date (memory: 536870912 -> 'lots')" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("encoding", ["bogus-enc", "rot13", "utf-32"])
def test_an_xml_encoding_expat_cannot_read_is_a_clean_refusal(kernel: FakeKernel,
                                                              encoding: str) -> None:
    """libvirt always sends UTF-8; a hand-edited file may declare anything: a clear
    refusal naming the fix, no traceback, nothing changed."""
    xml = libvirt_domain("vm1", [VIRTIO])
    assert xml.startswith(b"<domain")
    odd = f'<?xml version="1.0" encoding="{encoding}"?>\n'.encode() + xml
    before = device_state(kernel, "platform", VIRTIO)
    code, err = run_hook(kernel, "vm1", "prepare", odd, synced=False)
    assert code == 1 and "Traceback" not in err
    assert "refused: the domain XML declares an encoding expat cannot read" in err
    assert "hint: write the XML in UTF-8 and drop encoding=" in err
    assert device_state(kernel, "platform", VIRTIO) == before and Owners(kernel).all() == []


def test_a_domain_with_its_own_dtb_is_left_to_its_owner(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [VIRTIO]).replace(
        b"</os>", b"<dtb>/srv/boards/handmade.dtb</dtb></os>")
    assert run_hook(kernel, "vm1", "prepare", xml, synced=False) == (0, "")
