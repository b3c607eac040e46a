"""Translated domains on a real libvirtd 11.3 + QEMU 10.0 (aarch64 TCG, machine virt)."""
from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from platform_hostdev.cli import main as cli
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import forward, to_string

from tests.libvirt.daemon import PrivateLibvirt

pytestmark = pytest.mark.libvirt

QEMU_VFIO_ERROR = ("vfio ff0e0000.ethernet: vfio /sys/bus/platform/devices/ff0e0000.ethernet: "
                   "no such host device")
DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
  </os>
  <cpu mode='custom'>
    <model>cortex-a57</model>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
    <hostdev mode='subsystem' type='platform' managed='yes'>
      <source>
        <devicetree path='/soc/ethernet@ff0e0000'/>
        <device name='ff0e0000.ethernet'/>
      </source>
    </hostdev>
    <console type='pty'/>
  </devices>
</domain>
"""
GPIO = "<hostdev type='platform'><source><device name='fe000000.gpio'/></source></hostdev>"


@pytest.fixture
def conn(libvirtd: PrivateLibvirt) -> Iterator[Any]:
    c = libvirt.open(libvirtd.uri)
    try:
        yield c
    finally:
        for dom in c.listAllDomains():
            if dom.name().startswith("phd-real"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        c.close()


def _run(conn: Any, argv: list[str], tmp_path: Path, **env: str) -> tuple[int, str, str]:
    ctx = cli.Context(out=io.StringIO(), err=io.StringIO(), conn=conn,
                      env={"PLATFORM_HOSTDEV_CACHE": str(tmp_path / "cache"), **env})
    code = cli.main(argv, ctx)
    return code, ctx.out.getvalue(), ctx.err.getvalue()  # type: ignore[attr-defined]


def _define(conn: Any, tmp_path: Path, name: str) -> Path:
    src = tmp_path / f"{name}.xml"
    src.write_text(DOMAIN.format(name=name))
    code, out, err = _run(conn, ["define", str(src)], tmp_path)
    assert code == 0, err
    assert f"Domain '{name}' defined" in out
    assert "deprecates vfio-platform" in err  # QEMU 10.0
    return src


def test_versions(conn: Any) -> None:
    assert conn.getLibVersion() >= 11_003_000
    assert conn.getVersion() // 1_000_000 == 10  # QEMU 10.x: still has vfio-platform


def test_define_dumpxml_and_native_argv(conn: Any, libvirtd: PrivateLibvirt,
                                        tmp_path: Path) -> None:
    _define(conn, tmp_path, "phd-real-define")
    code, out, _ = _run(conn, ["dumpxml", "phd-real-define"], tmp_path)
    assert code == 0
    user = parse_xml(out, "dumpxml").getroot()
    assert user.find("devices/hostdev[@type='platform']/source/device").get(  # type: ignore
        "name") == "ff0e0000.ethernet"
    assert "qemu:commandline" not in out and "phd:" not in out
    code, raw, _ = _run(conn, ["dumpxml", "phd-real-define", "--raw"], tmp_path)
    assert "vfio-platform,host=ff0e0000.ethernet,id=phd-0" in raw and "<locked/>" in raw
    argv = subprocess.run(["virsh", "-c", libvirtd.uri, "domxml-to-native", "qemu-argv",
                           "--domain", "phd-real-define"], capture_output=True, text=True,
                          check=True).stdout
    assert "-device vfio-platform,host=ff0e0000.ethernet,id=phd-0" in argv
    assert "mem-lock=on" in argv


def test_virt_xml_validate_accepts_translation(tmp_path: Path) -> None:
    out = tmp_path / "libvirt-form.xml"
    out.write_text(forward(parse_xml(DOMAIN.format(name="phd-real-v"), "d"), None).xml())
    done = subprocess.run(["virt-xml-validate", str(out), "domain"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


def _start_error(conn: Any, libvirtd: PrivateLibvirt, name: str) -> str:
    dom = conn.lookupByName(name)
    with pytest.raises(libvirt.libvirtError) as info:
        dom.create()
    return str(info.value.get_error_message()) + "\n" + libvirtd.domain_log(name)


def test_start_reaches_qemu_vfio_platform(conn: Any, libvirtd: PrivateLibvirt,
                                          tmp_path: Path) -> None:
    # Without <locked/>: libvirt execs QEMU whatever RLIMIT_MEMLOCK it may raise,
    # so QEMU's own vfio-platform realize runs and finds no such host device.
    xml = forward(parse_xml(DOMAIN.format(name="phd-real-start"), "d"), None)
    root = xml.tree.getroot()
    backing = root.find("memoryBacking")
    assert backing is not None
    root.remove(backing)
    conn.defineXMLFlags(to_string(xml.tree), 0)
    text = _start_error(conn, libvirtd, "phd-real-start")
    assert QEMU_VFIO_ERROR in text
    assert "-device vfio-platform is deprecated" in text


def _can_raise_memlock() -> bool:
    caps = int(next(line.split()[1] for line in Path("/proc/self/status").read_text()
                    .splitlines() if line.startswith("CapEff:")), 16)
    return bool(caps & (1 << 24))  # CAP_SYS_RESOURCE


def test_start_with_locked_memory(conn: Any, libvirtd: PrivateLibvirt, tmp_path: Path) -> None:
    _define(conn, tmp_path, "phd-real-locked")
    text = _start_error(conn, libvirtd, "phd-real-locked")
    if _can_raise_memlock():
        assert QEMU_VFIO_ERROR in text
    else:
        # libvirt sets RLIMIT_MEMLOCK to "unlimited" for <locked/> without
        # <memtune><hard_limit> and fails before exec without CAP_SYS_RESOURCE.
        assert "cannot limit locked memory" in text and "9007199254740991" in text


def test_attach_detach_edit_round_trips(conn: Any, tmp_path: Path) -> None:
    _define(conn, tmp_path, "phd-real-edit")
    gpio = tmp_path / "gpio.xml"
    gpio.write_text(GPIO)
    code, out, err = _run(conn, ["attach-device", "phd-real-edit", str(gpio), "--config"],
                          tmp_path)
    assert code == 0, err
    raw = conn.lookupByName("phd-real-edit").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "vfio-platform,host=fe000000.gpio,id=phd-1" in raw
    code, _, err = _run(conn, ["attach-device", "phd-real-edit", str(gpio), "--live"], tmp_path)
    assert code == 1 and "hot-plug" in err
    code, _, err = _run(conn, ["attach-device", "phd-real-edit", str(gpio)], tmp_path)
    assert code == 1 and "appears in two" in err

    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/fe000000.gpio/fe001000.gpio/' \"$1\"\n")
    editor.chmod(0o755)
    code, out, err = _run(conn, ["edit", "phd-real-edit"], tmp_path, EDITOR=str(editor))
    assert code == 0, err
    assert "XML configuration edited" in out
    raw = conn.lookupByName("phd-real-edit").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "host=fe001000.gpio" in raw and "host=fe000000.gpio" not in raw
    code, out, _ = _run(conn, ["edit", "phd-real-edit"], tmp_path, EDITOR="true")
    assert code == 0 and "not changed" in out

    gone = tmp_path / "gone.xml"
    gone.write_text(GPIO.replace("fe000000", "fe001000"))
    code, _, err = _run(conn, ["detach-device", "phd-real-edit", str(gone), "--config"], tmp_path)
    assert code == 0, err
    code, out, _ = _run(conn, ["dumpxml", "phd-real-edit", "--inactive"], tmp_path)
    assert "fe001000.gpio" not in out and "ff0e0000.ethernet" in out
    raw = conn.lookupByName("phd-real-edit").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert raw.count("vfio-platform") == 1


# An x86 host's own platform device (drivers/tty/serial/8250/8250_core.c registers
# "serial8250"): it exists in sysfs, so QEMU gets past vfio-platform's "no such host
# device" and into its iommufd code (hw/vfio/iommufd.c iommufd_cdev_getfd()), which
# looks for the device's vfio cdev below its sysfs directory.
X86_PLATFORM_DEVICE = "serial8250"
QEMU_IOMMUFD_ERROR = (f"vfio {X86_PLATFORM_DEVICE}: vfio /sys/bus/platform/devices/"
                      f"{X86_PLATFORM_DEVICE}/vfio-dev: couldn't open directory "
                      f"/sys/bus/platform/devices/{X86_PLATFORM_DEVICE}/vfio-dev: "
                      "No such file or directory")
IOMMUFD_HOSTDEVS = f"""
    <hostdev mode='subsystem' type='platform' managed='yes'>
      <source><device name='{X86_PLATFORM_DEVICE}'/></source>
      <driver name='vfio' iommufd='yes'/>
    </hostdev>
    <hostdev mode='subsystem' type='platform'>
      <source><device name='ff0f0000.serial'/></source>
    </hostdev>"""


def _iommufd_domain(name: str) -> str:
    user = DOMAIN.format(name=name)
    start = user.index("    <hostdev")
    end = user.index("</hostdev>") + len("</hostdev>")
    return user[:start] + IOMMUFD_HOSTDEVS.lstrip("\n") + user[end:]


def test_iommufd_backend_native_argv_and_start_reaches_qemu_iommufd(
        conn: Any, libvirtd: PrivateLibvirt) -> None:
    assert Path(f"/sys/bus/platform/devices/{X86_PLATFORM_DEVICE}").exists(), \
        f"this x86 host has no platform device {X86_PLATFORM_DEVICE} to start the domain with"
    xml = forward(parse_xml(_iommufd_domain("phd-real-iommufd"), "d"), None)
    root = xml.tree.getroot()
    backing = root.find("memoryBacking")
    assert backing is not None
    root.remove(backing)  # as test_start_reaches_qemu_vfio_platform: QEMU is exec'd
    conn.defineXMLFlags(to_string(xml.tree), 0)
    argv = subprocess.run(["virsh", "-c", libvirtd.uri, "domxml-to-native", "qemu-argv",
                           "--domain", "phd-real-iommufd"], capture_output=True, text=True,
                          check=True).stdout
    assert argv.count("-object iommufd,id=phd-iommufd0") == 1
    assert (f"-device vfio-platform,host={X86_PLATFORM_DEVICE},id=phd-0,"
            "iommufd=phd-iommufd0 ") in argv
    assert "-device vfio-platform,host=ff0f0000.serial,id=phd-1" in argv  # legacy stays
    assert argv.index("-object iommufd,id=phd-iommufd0") < argv.index("vfio-platform")
    text = _start_error(conn, libvirtd, "phd-real-iommufd")
    assert QEMU_IOMMUFD_ERROR in text
