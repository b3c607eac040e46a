"""The qemu hook installed in a real libvirtd 11.3 (its own daemon: hooks load at start)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from platform_hostdev.cli.hook import HOOK_NAME, render_hook

from tests.libvirt.daemon import DaemonError, PrivateLibvirt, private_libvirtd
from tests.support.domains import libvirt_domain

pytestmark = pytest.mark.libvirt

PLAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <cpu mode='custom'><model>cortex-a57</model></cpu>
  <devices><emulator>/usr/bin/qemu-system-aarch64</emulator><console type='pty'/></devices>
</domain>
"""


@pytest.fixture(scope="module")
def hooked() -> Iterator[PrivateLibvirt]:
    try:
        with private_libvirtd(hooks={f"qemu.d/{HOOK_NAME}": render_hook("/")}) as daemon:
            yield daemon
    except DaemonError as exc:
        pytest.fail(f"libvirt tier: {exc}", pytrace=False)


@pytest.fixture
def conn(hooked: PrivateLibvirt) -> Iterator[Any]:
    c = libvirt.open(hooked.uri)
    try:
        yield c
    finally:
        for dom in c.listAllDomains():
            if dom.name().startswith("phd-hook"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        c.close()


def test_domain_without_platform_devices_starts_and_stops(conn: Any,
                                                          hooked: PrivateLibvirt) -> None:
    dom = conn.defineXMLFlags(PLAIN.format(name="phd-hook-plain"), 0)
    dom.create()
    try:
        assert dom.isActive()
        # What the hook's liveness check reads: libvirt's pid file names QEMU.
        pid = (hooked.base / "run" / "qemu" / "phd-hook-plain.pid").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"qemu-system-aarch64" in cmdline
    finally:
        dom.destroy()
    assert not dom.isActive()


def test_refused_device_stops_the_start_with_our_reason(conn: Any,
                                                        hooked: PrivateLibvirt) -> None:
    xml = libvirt_domain("phd-hook-refused", ["ff0e0000.ethernet"]).decode()
    dom = conn.defineXMLFlags(xml, 0)
    with pytest.raises(libvirt.libvirtError) as info:
        dom.create()
    message = str(info.value.get_error_message())
    assert "Hook script execution failed" in message
    assert "no platform or amba device named ff0e0000.ethernet on this host" in message
    assert "hint: check the name with 'platform-hostdev nodedev-list'" in message
    assert not dom.isActive()
    log = (hooked.base / "libvirtd.log").read_text(errors="replace")
    assert "no platform or amba device named ff0e0000.ethernet" in log


def test_path_trick_in_a_device_name_is_refused_by_the_hook(conn: Any) -> None:
    xml = libvirt_domain("phd-hook-trick", ["ff0e0000.ethernet"]).decode().replace(
        "ff0e0000.ethernet", "..")
    dom = conn.defineXMLFlags(xml, 0)
    with pytest.raises(libvirt.libvirtError) as info:
        dom.create()
    assert "is not a valid sysfs device name" in str(info.value.get_error_message())
