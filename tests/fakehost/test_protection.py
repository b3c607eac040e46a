"""host_usage / refuse_if_host_uses on a fake QEMU virt host with /proc files under its root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Device, load_inventory
from platform_hostdev.host.protection import HostUseError, host_usage, refuse_if_host_uses

from tests.support.fakehost import FakeHost, build_fake_host, tree_state

CONSOLE, DISK, NIC, FREE = ("9000000.pl011", "a003e00.virtio_mmio", "a003c00.virtio_mmio",
                            "a000000.virtio_mmio")



def put(host: FakeHost, host_path: str, text: str) -> None:
    path = host.path(host_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def link(host: FakeHost, host_path: str, target_host_path: str) -> None:
    path = host.path(host_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(host.path(target_host_path), path.parent), path)


def dress(host: FakeHost) -> None:
    """A console on the pl011, root on a virtio disk, the default route on a virtio NIC."""
    pl011 = host.host_paths[CONSOLE]
    link(host, "/sys/class/tty/ttyAMA0", f"{pl011}/tty/ttyAMA0")
    link(host, f"{pl011}/tty/ttyAMA0/device", pl011)
    disk = f"{host.host_paths[DISK]}/virtio31/block/vda"
    host.path(f"{disk}/vda2").mkdir(parents=True)
    link(host, "/sys/class/block/vda", disk)
    link(host, "/sys/class/block/vda2", f"{disk}/vda2")
    link(host, "/sys/dev/block/254:2", f"{disk}/vda2")
    host.path(f"{disk}/vda3").mkdir(parents=True)
    link(host, "/sys/class/block/vda3", f"{disk}/vda3")
    nic = f"{host.host_paths[NIC]}/virtio30"
    host.path(f"{nic}/net/eth0").mkdir(parents=True)
    link(host, "/sys/class/net/eth0", f"{nic}/net/eth0")
    link(host, f"{nic}/net/eth0/device", nic)
    put(host, "/proc/cmdline", "root=/dev/vda2 console=ttyAMA0,115200 quiet\n")
    put(host, "/sys/class/tty/console/active", "ttyAMA0\n")
    put(host, "/proc/consoles", "ttyAMA0              -W- (EC p a)    204:64\n")
    put(host, "/proc/self/mountinfo",
        "22 1 254:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
        "23 22 0:21 / /proc rw shared:12 - proc proc rw\n")
    put(host, "/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n"
        "/dev/vda3 partition 1048572 0 -2\n")
    put(host, "/proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")


@pytest.fixture
def host(tmp_path: Path, virt_dtb: Path) -> FakeHost:
    fake = build_fake_host(tmp_path / "root", virt_dtb)
    dress(fake)
    return fake


def device(host: FakeHost, name: str) -> Device:
    return load_inventory(host.root).resolve(name)


def test_console_found_from_every_source(host: FakeHost) -> None:
    uses = host_usage(host.fs, device(host, CONSOLE))
    assert [u.kind for u in uses] == ["console"]
    assert "console=ttyAMA0,115200" in uses[0].detail
    assert "/proc/consoles" in uses[0].detail


def test_console_from_proc_consoles_alone(host: FakeHost) -> None:
    put(host, "/proc/cmdline", "quiet\n")
    put(host, "/sys/class/tty/console/active", "\n")
    uses = host_usage(host.fs, device(host, CONSOLE))
    assert [u.kind for u in uses] == ["console"]


def test_earlycon_by_address_and_by_stdout_path(host: FakeHost) -> None:
    for path in ("/proc/consoles", "/sys/class/tty/console/active"):
        host.path(path).unlink()
    put(host, "/proc/cmdline", "earlycon=pl011,mmio32,0x9000000\n")
    assert "earlycon=pl011" in host_usage(host.fs, device(host, CONSOLE))[0].detail
    put(host, "/proc/cmdline", "earlycon\n")  # QEMU virt: /chosen/stdout-path = /pl011@9000000
    assert host_usage(host.fs, device(host, CONSOLE))[0].detail.startswith(
        "is the host console (earlycon)")
    put(host, "/proc/cmdline", "earlycon=pl011,0x9030000\n")
    assert host_usage(host.fs, device(host, CONSOLE)) == []


def test_root_filesystem_through_partition_and_swap(host: FakeHost) -> None:
    uses = host_usage(host.fs, device(host, DISK))
    assert [u.kind for u in uses] == ["mount", "swap"]
    assert "mounted on /" in uses[0].detail and "unmount /" in uses[0].fix
    assert uses[1].fix == "swapoff /dev/vda3 first"


def test_mounts_without_mountinfo_by_source(host: FakeHost) -> None:
    host.path("/proc/self/mountinfo").unlink()
    put(host, "/proc/mounts", "/dev/vda2 /srv\\040data ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    uses = host_usage(host.fs, device(host, DISK))
    assert "mounted on /srv data" in uses[0].detail


def test_device_mapper_followed_to_its_disk(host: FakeHost) -> None:
    put(host, "/proc/self/mountinfo", "22 1 253:0 / /home rw - xfs /dev/mapper/vg-home rw\n")
    host.path("/sys/devices/virtual/block/dm-0/slaves").mkdir(parents=True)
    link(host, "/sys/dev/block/253:0", "/sys/devices/virtual/block/dm-0")
    link(host, "/sys/devices/virtual/block/dm-0/slaves/vda2", "/sys/class/block/vda2")
    uses = host_usage(host.fs, device(host, DISK))
    assert uses[0].kind == "mount" and "/home" in uses[0].detail


def test_default_route_interface(host: FakeHost) -> None:
    uses = host_usage(host.fs, device(host, NIC))
    assert [(u.kind, u.fix) for u in uses] == [("network", "move the default route off eth0 first")]


def test_free_device_has_no_uses(host: FakeHost) -> None:
    assert host_usage(host.fs, device(host, FREE)) == []
    assert refuse_if_host_uses(host.fs, device(host, FREE), force=False) == []


def test_refusal_message_and_fix_change_nothing(host: FakeHost) -> None:
    before = tree_state(host.root)
    with pytest.raises(HostUseError) as caught:
        refuse_if_host_uses(host.fs, device(host, CONSOLE), force=False)
    assert caught.value.what == ("9000000.pl011 is the host console (console=ttyAMA0,115200, "
                                 "/sys/class/tty/console/active, /proc/consoles): detaching it "
                                 "cuts off the console")
    assert caught.value.fix.startswith(
        "choose another device, or pass --force if you really mean it")
    assert tree_state(host.root) == before


def test_force_returns_the_uses(host: FakeHost) -> None:
    uses = refuse_if_host_uses(host.fs, device(host, DISK), force=True)
    assert len(uses) == 2


def test_bare_host_without_proc_files(tmp_path: Path, virt_dtb: Path) -> None:
    bare = build_fake_host(tmp_path / "bare", virt_dtb)
    assert host_usage(HostFs(bare.root), device(bare, CONSOLE)) == []


def test_nodedev_detach_refuses_the_console(host: FakeHost) -> None:
    import io

    from platform_hostdev.cli import main as cli

    before = tree_state(host.root)
    out, err = io.StringIO(), io.StringIO()
    ctx = cli.Context(root=str(host.root), out=out, err=err)
    assert cli.main(["nodedev-detach", CONSOLE], ctx) == 1
    assert err.getvalue().startswith(f"error: {CONSOLE} is the host console (console=ttyAMA0")
    assert "hint: choose another device, or pass --force" in err.getvalue()
    assert tree_state(host.root) == before
