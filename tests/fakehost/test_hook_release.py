"""Release, reconnect and the stale sweep work from our records, on a fake host.

Each test reproduces one way a device used to be stranded: a device that
vanished before release, metadata removed from the live XML, a running
domain whose name starts with ".", a stale device of another domain that
cannot be given back, an OSError half-way through a give-back.
"""
from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import START_GRACE, Owners, process_start
from platform_hostdev.hook.giveback import recover_host
from platform_hostdev.hook.qemu import HookEnv, dispatch

from tests.fakehost.test_hook import make_kernel, mark_running, run_hook, stop_running
from tests.support.domains import libvirt_domain
from tests.support.fakekernel import FakeKernel

A, B = "a000000.virtio_mmio", "a000200.virtio_mmio"
LATER = 1e12  # a clock far past every start grace


ORIGINAL: dict[str, Any] = {}  # each device's state before the test (no driver, no override)


@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    kernel = make_kernel(tmp_path / "root", virt_dtb)
    ORIGINAL.update((name, device_state(kernel, "platform", name)) for name in (A, B))
    assert ORIGINAL[A].driver != "vfio-platform"
    return kernel


def without_metadata(xml: bytes) -> bytes:
    """The domain XML after 'virsh metadata --live --remove' of our namespace."""
    root = etree.fromstring(xml)
    for element in root.findall("metadata"):
        root.remove(element)
    return etree.tostring(root)


def given_back(kernel: FakeKernel, name: str) -> bool:
    """Back as it was: its original driver (none here), no override, the same group."""
    return device_state(kernel, "platform", name) == ORIGINAL[name]


def node_of(kernel: FakeKernel, name: str) -> Path:
    group = device_state(kernel, "platform", name).iommu_group
    return kernel.path(f"/dev/vfio/{group}")


def refuse_chown_of(monkeypatch: pytest.MonkeyPatch, node: Path) -> None:
    """chown of ``node`` fails with EPERM (as on a /dev that refuses it); others work."""
    real_chown = os.chown

    def chown(path: Any, uid: int, gid: int) -> None:
        if Path(path) == node:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        real_chown(path, uid, gid)
    monkeypatch.setattr(os, "chown", chown)


def records(kernel: FakeKernel) -> dict[str, Any]:
    return {r.device: r for r in Owners(kernel).all()}


def test_a_vanished_device_does_not_keep_its_domain_mate_stranded(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A, B])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    node_b = node_of(kernel, B)
    assert node_b.stat().st_uid != 0
    kernel.remove_device(A)  # hot-unplug, overlay removal, module unload
    code, err = run_hook(kernel, "vm1", "release", xml)
    assert code == 0, err
    assert f"{A} is no longer on the host" in err
    assert given_back(kernel, B)
    assert not node_b.exists() or node_b.stat().st_uid == 0
    assert records(kernel) == {}
    assert Journal(kernel).devices() == []


def invalid_metadata(xml: bytes) -> bytes:
    """Our metadata edited into something off its grammar (an unknown element)."""
    edited = xml.replace(b"<phd:device ", b"<phd:gadget ")
    assert edited != xml
    return edited


@pytest.mark.parametrize("edit", [without_metadata, invalid_metadata],
                         ids=["removed", "invalid"])
def test_release_works_from_the_records_when_the_metadata_is_gone(kernel: FakeKernel,
                                                                   edit: Any) -> None:
    xml = libvirt_domain("vm1", [A, B])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    if edit is invalid_metadata:  # what a prepare would make of it: a refusal
        assert run_hook(kernel, "vm9", "prepare", edit(xml), synced=False)[0] == 1
    code, err = run_hook(kernel, "vm1", "release", edit(xml), synced=False)
    assert (code, err) == (0, "")
    assert given_back(kernel, A) and given_back(kernel, B)
    assert records(kernel) == {}


def test_started_records_qemus_pid_and_start_time(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    mark_running(kernel, "vm1", pid=777, start=123456)
    assert run_hook(kernel, "vm1", "started", xml) == (0, "")
    record = records(kernel)[A]
    assert (record.state, record.qemu_pid, record.qemu_start) == ("started", 777, 123456)
    assert process_start(kernel, 777) == 123456


@pytest.mark.parametrize("name", [".hidden", "..", ". space"])
def test_a_running_domain_whose_name_starts_with_a_dot_keeps_its_device(
        kernel: FakeKernel, name: str) -> None:
    xml = libvirt_domain(name, [A])
    assert run_hook(kernel, name, "prepare", xml)[0] == 0
    mark_running(kernel, name)
    # ten minutes later another domain starts with another device
    code, err = run_hook(kernel, "other", "prepare", libvirt_domain("other", [B]),
                         clock=lambda: LATER)
    assert (code, err) == (0, "")
    assert records(kernel)[A].domain == name
    assert device_state(kernel, "platform", A).driver == "vfio-platform"
    assert node_of(kernel, A).stat().st_uid != 0


def test_a_dead_qemu_whose_pid_was_reused_does_not_keep_the_device(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    mark_running(kernel, "vm1", pid=900, start=1000)
    assert run_hook(kernel, "vm1", "started", xml)[0] == 0
    stop_running(kernel, "vm1", pid=900)       # libvirtd was down when QEMU died
    mark_running(kernel, "vm9", pid=900, start=2000)  # pid 900 is another QEMU now
    assert records(kernel)[A].qemu_pid == 900
    done = recover_host(kernel.as_host(clock=lambda: LATER), err=io.StringIO())
    assert done.released == [f"{A}: released from domain vm1, which is no longer running"]
    assert given_back(kernel, A)


def test_a_started_domain_is_live_past_the_grace_without_its_pid_file(
        kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    mark_running(kernel, "vm1", pid=901, start=55)
    assert run_hook(kernel, "vm1", "started", xml)[0] == 0
    kernel.path("/run/libvirt/qemu/vm1.pid").unlink()  # what we recorded is what counts
    done = recover_host(kernel.as_host(clock=lambda: LATER + START_GRACE), err=io.StringIO())
    assert (done.released, done.failed) == ([], [])
    assert records(kernel)[A].state == "started"


def test_a_device_whose_vfio_node_is_open_is_kept(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    group = device_state(kernel, "platform", A).iommu_group
    fd_dir = kernel.path("/proc/3333/fd")
    fd_dir.mkdir(parents=True)
    (fd_dir / "7").symlink_to(f"/dev/vfio/{group}")
    kernel.path("/proc/3333/comm").write_text("qemu-system-aar\n")
    done = recover_host(kernel.as_host(clock=lambda: LATER), err=io.StringIO())
    assert done.kept == [f"{A}: kept for domain vm1: its VFIO node is open by "
                         "qemu-system-aar (pid 3333)"]
    assert done.released == []
    assert device_state(kernel, "platform", A).driver == "vfio-platform"


def test_reconnect_records_qemu_and_adopts_from_the_records(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    mark_running(kernel, "vm1", pid=902, start=77)
    # the daemon restarted; the live XML's metadata was removed meanwhile
    assert run_hook(kernel, "vm1", "reconnect", without_metadata(xml), synced=False)[0] == 0
    assert (records(kernel)[A].qemu_pid, records(kernel)[A].qemu_start) == (902, 77)


def test_a_stale_device_that_cannot_be_given_back_does_not_refuse_another_domain(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_hook(kernel, "old", "prepare", libvirt_domain("old", [A]))[0] == 0
    node_a = node_of(kernel, A)
    refuse_chown_of(monkeypatch, node_a)
    code, err = run_hook(kernel, "new", "prepare", libvirt_domain("new", [B]),
                         clock=lambda: LATER)
    assert code == 0, err
    assert "warning: could not give back a device of a stopped domain" in err
    assert f"/dev/vfio/{node_a.name}" in err and "EPERM" in err
    assert records(kernel)[B].domain == "new"
    assert records(kernel)[A].domain == "old"  # kept for the next try
    monkeypatch.undo()
    done = recover_host(kernel.as_host(clock=lambda: LATER), err=io.StringIO())
    assert done.failed == []
    assert given_back(kernel, A)


def test_an_oserror_on_one_device_does_not_stop_the_give_back_of_the_next(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = libvirt_domain("vm1", [A, B])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    node_a = node_of(kernel, A)
    real_chmod = os.chmod

    def chmod(path: Any, mode: int) -> None:
        if Path(path) == node_a:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real_chmod(path, mode)
    monkeypatch.setattr(os, "chmod", chmod)
    code, err = run_hook(kernel, "vm1", "release", xml)
    assert code == 1
    assert "Traceback" not in err
    assert f"could not give back {A}: restoring the owner of /dev/vfio/" in err
    assert "EROFS" in err and "platform-hostdev recover" in err
    assert given_back(kernel, B) and B not in records(kernel)
    assert records(kernel)[A].state == "released"  # what is left is still recorded
    monkeypatch.undo()
    # right away, within the start grace: the domain is gone, recover finishes it
    assert recover_host(kernel.as_host(), err=io.StringIO()).failed == []
    assert given_back(kernel, A) and records(kernel) == {}


def test_an_unwritable_state_directory_is_a_clean_refusal(kernel: FakeKernel) -> None:
    kernel.path("/run/platform-hostdev").mkdir(parents=True, exist_ok=True)
    owners = kernel.path("/run/platform-hostdev/owners")
    owners.write_text("not a directory\n")
    code, err = run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [A]))
    assert code == 1
    assert "Traceback" not in err and "/run/platform-hostdev/owners" in err
    assert given_back(kernel, A)


def test_dispatch_turns_a_stray_oserror_into_a_refusal(kernel: FakeKernel,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import platform_hostdev.hook.qemu as hook

    def broken(*_: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/run/platform-hostdev/x")
    monkeypatch.setattr(hook, "check_guest_dt", broken)
    err = io.StringIO()
    code = dispatch(["vm1", "prepare", "begin", "-"], libvirt_domain("vm1", [A]),
                    HookEnv(kernel.as_host(), err=err))
    assert code == 1
    assert "/run/platform-hostdev/x failed: No space left on device (ENOSPC)" in err.getvalue()


def test_recover_reports_what_it_could_not_give_back_and_exits_1(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    from platform_hostdev.cli import main as cli

    assert run_hook(kernel, "old", "prepare", libvirt_domain("old", [A]))[0] == 0
    node_a = node_of(kernel, A)
    refuse_chown_of(monkeypatch, node_a)
    out, err = io.StringIO(), io.StringIO()
    ctx = cli.Context(out=out, err=err, host=kernel.as_host(clock=lambda: LATER))
    assert cli.main(["recover"], ctx) == 1
    assert f"error: could not give back {A} (domain old): restoring the owner of " \
           f"/dev/vfio/{node_a.name}" in err.getvalue()
    assert "hint: fix the cause" in err.getvalue()


@pytest.mark.parametrize("argv", [["nodedev-detach", A], ["recover"]])
@pytest.mark.parametrize("in_the_way", ["file", "read-only"])
def test_an_unusable_state_directory_is_a_clean_command_error(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, argv: list[str],
        in_the_way: str) -> None:
    import json

    from platform_hostdev.cli import main as cli

    assert run_hook(kernel, "old", "prepare", libvirt_domain("old", [B]))[0] == 0
    state = kernel.path("/run/platform-hostdev")
    if in_the_way == "file":  # a file where the state directory should be
        for entry in sorted(state.rglob("*"), reverse=True):
            entry.rmdir() if entry.is_dir() else entry.unlink()
        state.rmdir()
        state.write_text("in the way\n")
    else:  # writes refused as on a read-only /run
        real_open = os.open

        def read_only(path: Any, flags: int, *args: Any, **kw: Any) -> int:
            if str(path).startswith(str(state)) and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kw)
        monkeypatch.setattr(os, "open", read_only)
    for extra in ([], ["--json"]):
        out, err = io.StringIO(), io.StringIO()
        ctx = cli.Context(host=kernel.as_host(clock=lambda: LATER), out=out, err=err)
        code = cli.main([*argv, *extra], ctx)
        assert code == 1, (out.getvalue(), err.getvalue())
        text = out.getvalue() + err.getvalue()
        assert "Traceback" not in text and "/run/platform-hostdev" in text, text
        if extra:  # an error, or recover's report of what it could not do
            report = json.loads(out.getvalue())
            assert report.get("failed") or \
                report["error"]["code"] == "state-unwritable", text
    monkeypatch.undo()
    assert given_back(kernel, A)


def test_a_release_says_when_a_damaged_record_is_set_aside(kernel: FakeKernel) -> None:
    xml = libvirt_domain("vm1", [A, B])
    assert run_hook(kernel, "vm1", "prepare", xml)[0] == 0
    Owners(kernel).file(A).write_bytes(b"\xff\xfe not json")
    code, err = run_hook(kernel, "vm1", "release", xml)
    assert code == 0, err
    assert given_back(kernel, B)
    assert f"warning: ownership record /run/platform-hostdev/owners/{A}.json" in err, err
    assert "stays refused until it is removed" in err
    # A's record cannot be read: A is not given back blindly, and not handed on either
    assert device_state(kernel, "platform", A).driver == "vfio-platform"
    code, err = run_hook(kernel, "vm2", "prepare", libvirt_domain("vm2", [A]))
    assert code == 1 and "refused while it is there" in err, err
