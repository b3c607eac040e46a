"""The VDSM before_vm_start hook run as VDSM runs it: a subprocess, a temp XML file, env."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fakehost import FakeHost, build_fake_host

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "hooks/vdsm/before_vm_start/50_platform_hostdev"
DEV, DEV2 = "a000000.virtio_mmio", "a000200.virtio_mmio"
DOMAIN = """<domain type='kvm'>
  <name>vm1</name>
  <memory unit='KiB'>1048576</memory>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
  </devices>
</domain>
"""



@pytest.fixture
def host(tmp_path: Path, virt_dtb: Path) -> FakeHost:
    return build_fake_host(tmp_path / "root", virt_dtb, iommu="all")


@pytest.fixture
def domxml(tmp_path: Path) -> Path:
    path = tmp_path / "vm1.xml"
    path.write_text(DOMAIN)
    return path


def run_hook(domxml: Path, root: Path, prop: str | None,
             pythonpath: str = str(REPO / "plugin")) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "_hook_domxml": str(domxml),
           "PLATFORM_HOSTDEV_ROOT": str(root), "PYTHONPATH": pythonpath}
    if prop is not None:
        env["platform_hostdev"] = prop
    return subprocess.run([sys.executable, str(HOOK)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_hook_is_executable() -> None:
    assert os.access(HOOK, os.X_OK)
    assert HOOK.read_text().startswith("#!/usr/bin/python3\n")


@pytest.mark.parametrize("prop", [None, "", "  , "])
def test_without_property_file_untouched_and_nothing_imported(
        tmp_path: Path, domxml: Path, host: FakeHost, prop: str | None) -> None:
    trap = tmp_path / "trap"
    for module in ("lxml", "platform_hostdev"):
        (trap / module).mkdir(parents=True)
        (trap / module / "__init__.py").write_text("raise SystemExit(99)\n")
    before = domxml.stat().st_mtime_ns, domxml.read_bytes()
    done = run_hook(domxml, host.root, prop, pythonpath=str(trap))
    assert (done.returncode, done.stderr) == (0, "")
    assert (domxml.stat().st_mtime_ns, domxml.read_bytes()) == before


def test_entries_by_path_and_name_are_translated(domxml: Path, host: FakeHost) -> None:
    done = run_hook(domxml, host.root, f"/virtio_mmio@a000000, {DEV2}")
    assert done.returncode == 0, done.stderr
    xml = domxml.read_text()
    assert f"vfio-platform,host={DEV},id=phd-0" in xml
    assert f"vfio-platform,host={DEV2},id=phd-1" in xml
    assert "<locked/>" in xml and "phd:hostdevs" in xml
    assert "type=\"platform\"" in xml  # kept in our metadata, not in <devices>
    assert "<hostdev" not in xml.split("<devices>")[1]
    assert not [p for p in domxml.parent.iterdir() if p.name.startswith(".platform_hostdev-")]


def test_second_run_adds_nothing(domxml: Path, host: FakeHost) -> None:
    assert run_hook(domxml, host.root, DEV).returncode == 0
    first = domxml.read_text()
    done = run_hook(domxml, host.root, f"{DEV} /virtio_mmio@a000000")
    assert done.returncode == 0, done.stderr
    assert domxml.read_text() == first


@pytest.mark.parametrize(("prop", "reason"), [
    ("/soc/../etc", "invalid component"),
    ("/nope@0", "no platform or amba device matches"),
    ("9030000.pl061", "AMBA"),
])
def test_bad_entry_stops_the_vm_and_keeps_the_file(domxml: Path, host: FakeHost, prop: str,
                                                   reason: str) -> None:
    done = run_hook(domxml, host.root, prop)
    assert done.returncode == 2
    assert reason in done.stderr and "Traceback" not in done.stderr
    assert domxml.read_text() == DOMAIN


def test_untranslatable_domain_stops_the_vm(domxml: Path, host: FakeHost) -> None:
    domxml.write_text(DOMAIN.replace("aarch64", "x86_64"))
    done = run_hook(domxml, host.root, DEV)
    assert done.returncode == 2 and "aarch64" in done.stderr


def test_missing_domxml_file_stops_the_vm(tmp_path: Path, host: FakeHost) -> None:
    done = run_hook(tmp_path / "absent.xml", host.root, DEV)
    assert done.returncode == 2 and "cannot read" in done.stderr
