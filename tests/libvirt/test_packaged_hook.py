"""The hook as the Debian package installs it, in a real libvirtd 11.3, under Debian's python3.

The .deb built from this tree (tests/support/debpackage.py) is unpacked with
``dpkg -x``; in the private daemon's mount namespace only, its
/etc/libvirt/hooks is bound over /etc/libvirt/hooks, and its
/usr/lib/python3/dist-packages is laid over the host's (a read-only overlay:
the package's files first, then the host's python3-lxml, python3-pyudev,
python3-libvirt). So libvirtd runs the packaged hook file, whose
``#!/usr/bin/python3 -S`` and empty PACKAGE_PATH make Debian's python3 import
the module from where the package put it, with Debian's lxml: nothing of the
virtualenv or the source tree is on that path. Nothing on the host changes,
so a second run starts from the same state.
"""
from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.libvirt.daemon import DaemonError, PrivateLibvirt, private_libvirtd
from tests.support.debpackage import PackageError, built_deb
from tests.support.domains import libvirt_domain

pytestmark = pytest.mark.libvirt

SITE = "/usr/lib/python3/dist-packages"
HOOK = "/etc/libvirt/hooks/qemu.d/platform-hostdev"
DEPENDENCIES = ("python3-lxml", "python3-pyudev", "python3-libvirt")
PLAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <cpu mode='custom'><model>cortex-a57</model></cpu>
  <devices><emulator>/usr/bin/qemu-system-aarch64</emulator><console type='pty'/></devices>
</domain>
"""
WHERE = ("import hashlib, platform_hostdev.hook.qemu as q, lxml.etree as e; "
         "print(q.__file__); print(e.__file__); print('.'.join(map(str, e.LIBXML_VERSION))); "
         "print(hashlib.sha256(open(q.__file__, 'rb').read()).hexdigest())")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        deb = built_deb()
    except PackageError as exc:
        pytest.fail(f"libvirt tier (packaged hook): {exc}", pytrace=False)
    status = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n",
                             *DEPENDENCIES], capture_output=True, text=True, check=False)
    installed = {line.split()[0] for line in status.stdout.splitlines()
                 if line.split()[1:2] == ["ii"]}
    if installed != set(DEPENDENCIES):
        pytest.fail("libvirt tier (packaged hook): the package's dependencies "
                    f"{', '.join(sorted(set(DEPENDENCIES) - installed))} are not installed: "
                    f"apt-get install {' '.join(DEPENDENCIES)} (or run scripts/setup-host)",
                    pytrace=False)
    root = tmp_path_factory.mktemp("deb") / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    return root


@pytest.fixture(scope="module")
def packaged(unpacked: Path) -> Iterator[PrivateLibvirt]:
    mounts = [["--bind", f"{unpacked}/etc/libvirt/hooks", "/etc/libvirt/hooks"],
              ["-t", "overlay", "overlay", "-o", f"lowerdir={unpacked}{SITE}:{SITE}", SITE]]
    try:
        with private_libvirtd(mounts=mounts) as daemon:
            yield daemon
    except DaemonError as exc:
        pytest.fail(f"libvirt tier (packaged hook): {exc}", pytrace=False)


@pytest.fixture
def conn(packaged: PrivateLibvirt) -> Iterator[Any]:
    c = libvirt.open(packaged.uri)
    try:
        yield c
    finally:
        for dom in c.listAllDomains():
            if dom.name().startswith("phd-pkg"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        c.close()


def _in_daemon_namespace(daemon: PrivateLibvirt, argv: list[str]) -> str:
    pid = daemon.pids()[0]  # libvirtd's
    done = subprocess.run(["nsenter", "--target", str(pid), "--mount", *argv],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_daemon_runs_the_packaged_hook_with_debians_python(packaged: PrivateLibvirt,
                                                               unpacked: Path) -> None:
    seen = _in_daemon_namespace(packaged, ["stat", "-c", "%a %U:%G", HOOK])
    assert seen.split() == ["755", "root:root"]
    text = _in_daemon_namespace(packaged, ["cat", HOOK])
    assert text == (unpacked / HOOK.lstrip("/")).read_text()
    assert text.startswith("#!/usr/bin/python3 -S\n") and 'PACKAGE_PATH = ""' in text
    # What the hook's interpreter imports there: the package's module, Debian's lxml.
    module, lxml, libxml2, digest = _in_daemon_namespace(
        packaged, ["env", "-i", "PATH=/usr/bin:/bin", "/usr/bin/python3", "-c", WHERE]).split()
    assert module == f"{SITE}/platform_hostdev/hook/qemu.py"
    assert lxml.startswith(f"{SITE}/lxml/")
    assert libxml2.startswith("2.9.")  # bookworm's libxml2, not a wheel's bundled one
    packaged_file = unpacked / SITE.lstrip("/") / "platform_hostdev/hook/qemu.py"
    assert digest == hashlib.sha256(packaged_file.read_bytes()).hexdigest()


def test_unknown_platform_device_is_refused_with_our_reason(conn: Any,
                                                            packaged: PrivateLibvirt) -> None:
    xml = libvirt_domain("phd-pkg-refused", ["ff0e0000.ethernet"]).decode()
    dom = conn.defineXMLFlags(xml, 0)
    with pytest.raises(libvirt.libvirtError) as info:
        dom.create()
    message = str(info.value.get_error_message())
    assert "Hook script execution failed" in message
    assert "no platform or amba device named ff0e0000.ethernet on this host" in message
    assert "hint: check the name with 'platform-hostdev nodedev-list'" in message
    assert "Traceback" not in message
    assert not dom.isActive()
    log = (packaged.base / "libvirtd.log").read_text(errors="replace")
    assert "no platform or amba device named ff0e0000.ethernet" in log
    assert "/etc/libvirt/hooks/qemu.d/platform-hostdev" in log


def test_domain_without_platform_devices_starts_and_stops(conn: Any,
                                                          packaged: PrivateLibvirt) -> None:
    dom = conn.defineXMLFlags(PLAIN.format(name="phd-pkg-plain"), 0)
    dom.create()
    try:
        assert dom.isActive()
        pid = (packaged.base / "run" / "qemu" / "phd-pkg-plain.pid").read_text().strip()
        assert b"qemu-system-aarch64" in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        dom.destroy()
    assert not dom.isActive()
    dom.create()  # and again: the hook's stopped/release phases left nothing behind
    dom.destroy()
    assert not dom.isActive()
