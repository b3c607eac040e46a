"""The installed hook executable, run as libvirt runs it: a subprocess, XML on stdin.

The fake host here is plain files (no fake kernel in the subprocess), so the
device under test is unmanaged and already bound to vfio-platform, as an
administrator would leave it after 'nodedev-detach'; managed binding is
proven in-process (test_hook.py) and on the real kernel (tests/guest).
"""
from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.cli import main as cli
from platform_hostdev.hook.install import render_hook

from tests.support.domains import libvirt_domain, synced_domain
from tests.support.fakehost import FakeHost, build_fake_host, tree_state
from tests.support.fakekernel import QEMU_VIRT_DRIVERS

VIRTIO = "a000000.virtio_mmio"
PLUGIN = Path(__file__).resolve().parents[2] / "plugin"
HOOK = "etc/libvirt/hooks/qemu.d/platform-hostdev"
QEMU_UID = 64055
ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "HOME": "/root", "USER": "root",
       "LOGNAME": "root"}  # what libvirt passes, nothing more


@pytest.fixture
def host(tmp_path: Path, virt_dtb: Path) -> FakeHost:
    root = tmp_path / "root"
    host = build_fake_host(root, virt_dtb, drivers=QEMU_VIRT_DRIVERS, iommu="all",
                           vfio_loaded=True)
    host.set_driver_override(VIRTIO, "vfio-platform")
    host.bind(VIRTIO, "vfio-platform")
    group = host.iommu_group_of(VIRTIO)
    node = root / "dev" / "vfio" / str(group)
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_text("")
    os.chmod(node, 0o600)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text(f"libvirt-qemu:x:{QEMU_UID}:{QEMU_UID}::/:/bin/false\n")
    (root / "etc/group").write_text(f"libvirt-qemu:x:{QEMU_UID}:\n")
    out = io.StringIO()
    assert cli.main(["--root", str(root), "hook", "install"], cli.Context(out=out)) == 0
    assert "restart" in out.getvalue()
    return host


def run(host: FakeHost, op: str, xml: bytes,
        domain: str = "vm1") -> subprocess.CompletedProcess[str]:
    sub = "end" if op in ("release", "stopped") else "begin"
    return subprocess.run([str(host.root / HOOK), domain, op, sub, "-"], input=xml.decode(),
                          capture_output=True, text=True, env=ENV, timeout=60)


def test_domain_without_platform_hostdevs_touches_nothing(host: FakeHost) -> None:
    before = tree_state(host.root)
    plain = b"<domain type='kvm'><name>web</name><uuid>1-2</uuid><devices/></domain>"
    for op in ("prepare", "start", "started", "stopped", "release", "migrate", "reconnect"):
        done = run(host, op, plain, "web")
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert tree_state(host.root) == before


def test_every_phase_of_an_unmanaged_device(host: FakeHost) -> None:
    xml = synced_domain(host.root, "vm1", [VIRTIO], managed=False)
    group = host.iommu_group_of(VIRTIO)
    node = host.root / "dev" / "vfio" / str(group)
    done = run(host, "prepare", xml)
    assert (done.returncode, done.stderr) == (0, "")
    assert (node.stat().st_uid, node.stat().st_mode & 0o777) == (QEMU_UID, 0o660)
    record = host.root / "run/platform-hostdev/owners" / f"{VIRTIO}.json"
    assert '"domain": "vm1"' in record.read_text()
    for op in ("start", "started"):
        assert run(host, op, xml).returncode == 0
    assert run(host, "stopped", xml).returncode == 0
    done = run(host, "release", xml)
    assert (done.returncode, done.stderr) == (0, "")
    assert not record.exists()
    assert (node.stat().st_uid, node.stat().st_mode & 0o777) == (0, 0o600)
    assert host.driver_of(VIRTIO) == "vfio-platform"  # unmanaged: left as we found it


# What keeps a prepare cheap (benchmarks/bench_hook.py has the figures): none of these
# is needed while no driver has to move.
HEAVY = ("lxml", "dataclasses", "inspect", "pyudev", "subprocess", "tempfile", "hashlib",
         "importlib.resources", "platform_hostdev.binding.operations",
         "platform_hostdev.domain.translate",
         "platform_hostdev.host.inventory", "platform_hostdev.dt.tree")


def test_prepare_and_release_of_an_unmanaged_device_import_nothing_heavy(host: FakeHost) -> None:
    xml = synced_domain(host.root, "vm1", [VIRTIO], managed=False)
    for op in ("prepare", "release"):
        # the interpreter and -S of the hook's own first line, with an import log
        interpreter = (host.root / HOOK).read_text().splitlines()[0][2:].split()[0]
        done = subprocess.run([interpreter, "-S", "-X", "importtime", str(host.root / HOOK),
                               "vm1", op, "begin", "-"], input=xml.decode(),
                              capture_output=True, text=True, env=ENV, timeout=60)
        assert done.returncode == 0, done.stderr
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "platform_hostdev.hook.qemu" in imported  # the log works: the slow path ran
        assert "platform_hostdev.domain.domainxml" in imported
        assert sorted(imported & set(HEAVY)) == [], op


def test_migrate_is_refused_with_the_reason_on_stderr(host: FakeHost) -> None:
    done = run(host, "migrate", libvirt_domain("vm1", [VIRTIO], managed=False))
    assert done.returncode == 1
    assert "not migratable" in done.stderr and "hint:" in done.stderr


def test_a_package_directory_whose_name_holds_a_colon_is_kept_whole(
        host: FakeHost, tmp_path: Path, mocker: Any) -> None:
    """'hook install' writes the import directories and the hook reads them by one rule
    (a tuple literal): a ':' or os.pathsep in a directory name does not split it."""
    odd = tmp_path / f"site{os.pathsep}packages:x"
    odd.symlink_to(PLUGIN, target_is_directory=True)  # the only place platform_hostdev is
    mocker.patch("platform_hostdev.hook.install.package_paths", return_value=[str(odd)])
    rendered = render_hook(str(host.root))
    assert f"PACKAGE_PATH = ({str(odd)!r},)" in rendered  # this checkout's hook, filled in
    (host.root / HOOK).write_text(rendered)
    done = run(host, "migrate", libvirt_domain("vm1", [VIRTIO], managed=False))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1 and "migrate of domain vm1 refused" in done.stderr


@pytest.mark.parametrize("xml,message", [
    (b"<domain><metadata><x xmlns='http://platform-hostdev.org/schemas/domain/1.0'>",
     "not well-formed"),
    (b"<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/shadow'>]><domain>&e;"
     b"<!-- platform-hostdev.org/schemas/domain --></domain>", "DOCTYPE"),
])
def test_bad_xml_is_refused_and_nothing_is_written(host: FakeHost, xml: bytes,
                                                    message: str) -> None:
    before = tree_state(host.root)
    done = run(host, "prepare", xml)
    assert done.returncode == 1 and message in done.stderr
    assert "Traceback" not in done.stderr
    assert tree_state(host.root) == before


@pytest.mark.parametrize("name", ["../../../etc", "..", "a/b"])
def test_path_tricks_in_device_names_are_refused(host: FakeHost, name: str) -> None:
    xml = libvirt_domain("vm1", [VIRTIO], managed=False).replace(
        VIRTIO.encode(), name.encode())
    before = tree_state(host.root)
    done = run(host, "prepare", xml)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert tree_state(host.root) == before


def test_uninstall_removes_only_our_hook(host: FakeHost) -> None:
    out = io.StringIO()
    assert cli.main(["--root", str(host.root), "hook", "uninstall"], cli.Context(out=out)) == 0
    assert not (host.root / HOOK).exists()
    (host.root / HOOK).write_text("#!/bin/sh\nexit 0\n")
    err = io.StringIO()
    assert cli.main(["--root", str(host.root), "hook", "install"],
                    cli.Context(out=out, err=err)) == 1
    assert "not ours" in err.getvalue()
    assert (host.root / HOOK).read_text() == "#!/bin/sh\nexit 0\n"


def test_release_without_metadata_is_still_ours_while_a_record_names_the_uuid(
        host: FakeHost) -> None:
    from tests.fakehost.test_hook_release import without_metadata

    xml = synced_domain(host.root, "vm1", [VIRTIO], managed=False)
    node = host.root / "dev" / "vfio" / str(host.iommu_group_of(VIRTIO))
    assert run(host, "prepare", xml).returncode == 0
    record = host.root / "run/platform-hostdev/owners" / f"{VIRTIO}.json"
    # another domain, without platform devices, stops meanwhile: the fast path, untouched
    plain = b"<domain type='kvm'><name>web</name><uuid>1-2</uuid><devices/></domain>"
    done = run(host, "release", plain, "web")
    assert (done.returncode, done.stderr) == (0, "") and record.exists()
    # 'virsh metadata --live --remove' left vm1 without our metadata: its release still runs
    stripped = without_metadata(xml)
    assert b"platform-hostdev.org" not in stripped
    done = run(host, "release", stripped)
    assert (done.returncode, done.stderr) == (0, "")
    assert not record.exists()
    assert (node.stat().st_uid, node.stat().st_mode & 0o777) == (0, 0o600)
