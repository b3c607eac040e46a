"""A generated guest DT booted for real: libvirtd + QEMU 10.0 + Debian's arm64 kernel.

The "host" is Arm's Corstone-1000 FVP (its DTB from Debian's kernel package):
its SMSC LAN91C111 (/ethernet@4010000) is put into an aarch64 TCG domain,
`sync` generates the guest DTB through libvirt (domxml-to-native + QEMU
dumpdtb), and the domain boots Debian's arm64 kernel directly with that DTB.
No such device exists on this x86 host, so the vfio-platform argument itself is
left out of the started domain; everything the guest sees of the device comes
from our DT. A probe initramfs prints what the guest kernel made of it.
"""
from __future__ import annotations

import io
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from platform_hostdev.cli import main as cli
from platform_hostdev.domain.hostdev import QEMU_NS, parse_xml
from platform_hostdev.domain.translate import forward, to_string
from platform_hostdev.guestdt.store import STATE_DIR, GuestDtStore
from platform_hostdev.host.inventory import load_inventory

from tests.libvirt.daemon import PrivateLibvirt
from tests.support.dtprobe import parse_console, probe_image

pytestmark = pytest.mark.libvirt

HOST_DEVICE = "40100000.ethernet"
MEMORY_MIB = 384
VCPUS = 2
DOMAIN = """<domain type='qemu'>
  <name>phd-dt-boot</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyAMA0 rdinit=/init panic=-1 quiet</cmdline>
  </os>
  <cpu mode='custom'><model>cortex-a57</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
    <hostdev mode='subsystem' type='platform' managed='yes'>
      <source><device name='{device}'/></source>
    </hostdev>
    <serial type='file'><source path='{log}'/><target port='0'/></serial>
  </devices>
</domain>
"""


def _cells(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v) for v in values)


@pytest.fixture
def world(kernel_dtbs: Path) -> Iterator[Path]:
    # QEMU runs as libvirt's QEMU user: its files must be reachable, not under /root
    base = Path(tempfile.mkdtemp(prefix="phd-dtboot-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_generated_dtb_boots_and_the_guest_kernel_sees_the_device(
        libvirtd: PrivateLibvirt, kernel_dtbs: Path, world: Path) -> None:
    image = probe_image()
    kernel = shutil.copy(image.board.vmlinuz, world / "vmlinuz")
    initrd = shutil.copy(image.initramfs, world / "probe.cpio")
    log = world / "console.log"
    inventory = load_inventory(dtb=str(kernel_dtbs / "arm" / "corstone1000-fvp.dtb"))
    conn = libvirt.open(libvirtd.uri)
    try:
        user = DOMAIN.format(memory=MEMORY_MIB, vcpus=VCPUS, kernel=kernel, initrd=initrd,
                             device=HOST_DEVICE, log=log)
        translated = forward(parse_xml(user, "boot domain"), inventory).tree
        dom = conn.defineXMLFlags(to_string(translated), 0)
        tree = parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), "defined")

        from platform_hostdev.guestdt.sync import sync_domain
        store = GuestDtStore(world / STATE_DIR.lstrip("/"))  # what the CLI uses with --root
        result = sync_domain(conn, tree, inventory, store)
        assert result.dtb_path == str(store.dtb_path(dom.UUIDString()))
        (device,) = result.devices
        assert device.guest_path == "/platform-bus@c000000/ethernet@0"
        assert [(r.host_address, r.guest_address, r.size) for r in device.regions] == \
            [(0x40100000, 0xC000000, 0x10000)]
        assert [(i.host_line, i.guest_spi, i.trigger) for i in device.irqs] == \
            [("SPI 116", 112, "level-high")]

        # leave the vfio-platform argument out (no such host device on x86), and with it
        # the memory locking VFIO needs (this sandbox may not raise RLIMIT_MEMLOCK)
        root = result.tree.getroot()
        for drop in (root.find(f"{{{QEMU_NS}}}commandline"), root.find("memoryBacking")):
            if drop is not None:
                root.remove(drop)
        for part in ("var", "var/lib", "var/lib/platform-hostdev",
                     "var/lib/platform-hostdev/guest-dt"):
            (world / part).chmod(0o755)
        dom = conn.defineXMLFlags(to_string(result.tree), 0)
        assert f"<dtb>{result.dtb_path}</dtb>" in dom.XMLDesc(0)
        dom.create()
        deadline = time.monotonic() + 240
        while dom.isActive() and time.monotonic() < deadline:
            time.sleep(0.5)
        active = dom.isActive()
        if active:
            dom.destroy()
        console = log.read_text(errors="replace") if log.exists() else ""
        assert not active, f"the guest did not power off in 240 s; console:\n{console[-3000:]}"
        facts = parse_console(console)
        assert facts.complete, console[-3000:]
        assert facts.nproc == VCPUS
        assert facts.memtotal_kb is not None
        assert MEMORY_MIB * 1024 - 96 * 1024 < facts.memtotal_kb <= MEMORY_MIB * 1024
        node = "/platform-bus@c000000/ethernet@0"
        assert node in facts.nodes
        assert facts.props[(node, "compatible")] == b"smsc,lan91c111\0"
        assert facts.props[(node, "reg")] == _cells(0, 0x10000)
        assert facts.props[(node, "interrupts")] == _cells(0, 112, 4)
        assert "c000000.ethernet" in facts.devices

        # the chain, as dumpxml and show print it
        out = io.StringIO()
        assert cli.main(["--root", str(world), "dumpxml", "phd-dt-boot", "-c", libvirtd.uri],
                        cli.Context(out=out, err=io.StringIO())) == 0
        assert ("<!-- guest: /ethernet@4010000 [region 0 0x40100000+0x10000 -> 0xc000000; "
                "irq 0 SPI 116 -> SPI 112 level-high] as /platform-bus@c000000/ethernet@0 -->"
                ) in out.getvalue()
    finally:
        for d in conn.listAllDomains():
            if d.name() == "phd-dt-boot":
                if d.isActive():
                    d.destroy()
                d.undefine()
        conn.close()


def test_define_generates_the_guest_dt_through_libvirt(libvirtd: PrivateLibvirt,
                                                       kernel_dtbs: Path, world: Path) -> None:
    src = world / "domain.xml"
    src.write_text(DOMAIN.format(memory=MEMORY_MIB, vcpus=VCPUS, kernel="/nonexistent/vmlinuz",
                                 initrd="/nonexistent/initrd", device=HOST_DEVICE,
                                 log=world / "console.log").replace("phd-dt-boot", "phd-dt-def"))
    out, err = io.StringIO(), io.StringIO()
    argv = ["--root", str(world), "--dtb", str(kernel_dtbs / "arm" / "corstone1000-fvp.dtb"),
            "define", str(src), "-c", libvirtd.uri]
    conn = libvirt.open(libvirtd.uri)
    try:
        assert cli.main(argv, cli.Context(out=out, err=err)) == 0, err.getvalue()
        dom = conn.lookupByName("phd-dt-def")
        stored = GuestDtStore(world / STATE_DIR.lstrip("/")).dtb_path(dom.UUIDString())
        assert f"Guest device tree generated: {stored}" in out.getvalue()
        assert f"<dtb>{stored}</dtb>" in dom.XMLDesc(0)
        assert stored.read_bytes()[:4] == b"\xd0\x0d\xfe\xed"
    finally:
        for d in conn.listAllDomains():
            if d.name() == "phd-dt-def":
                d.undefine()
        conn.close()
