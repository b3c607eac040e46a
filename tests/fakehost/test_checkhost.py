"""check-host on fake QEMU virt hosts: a ready host, then one defect at a time."""
from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from platform_hostdev.cli import main as cli
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import forward
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.inventory import load_inventory

from tests.support.fakehost import FakeHost, build_fake_host
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

DEV, GPIO, NIC = "a000000.virtio_mmio", "9030000.pl061", "a003c00.virtio_mmio"
HOOK = "/etc/libvirt/hooks/qemu.d/platform-hostdev"
LIMIT = "<memtune><hard_limit unit='KiB'>2097152</hard_limit></memtune>"
RULES = ("/dev/vfio/vfio rw,\n/dev/vfio/[0-9]* rw,\n/sys/bus/platform/devices/** r,\n"
         "/sys/devices/platform/** r,\n/sys/firmware/devicetree/** r,\n")



def put(host: FakeHost, host_path: str, text: str, mode: int = 0o644) -> None:
    path = host.path(host_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def acl(*extra: str) -> str:
    entries = ["/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx",
               "/dev/kvm", "/dev/userfaultfd", *extra]
    return "cgroup_device_acl = [\n" + "".join(f'  "{e}",\n' for e in entries) + "]\n"


def daemon(host: FakeHost, started_after_hook: bool) -> None:
    hook_time = host.path(HOOK).stat().st_ctime
    btime = int(hook_time) + (10 if started_after_hook else -1000)
    put(host, "/proc/stat", f"cpu 1 2 3\nbtime {btime}\n")
    put(host, "/run/libvirtd.pid", "4242\n")
    put(host, "/proc/4242/stat", "4242 (libvirtd) " + " ".join(["S"] + ["0"] * 18 + ["0"] +
                                                               ["0"] * 10) + "\n")


class Setup:
    def __init__(self, tmp_path: Path, dtb: Path, iommu: Any = "all", noiommu: bool = False,
                 reset_required: bool = False) -> None:
        self.host = build_fake_host(tmp_path / "root", dtb, drivers=QEMU_VIRT_DRIVERS,
                                    iommu=iommu, vfio_loaded=True, noiommu=noiommu)
        self.kernel = FakeKernel(self.host, reset_required=reset_required)
        self.tmp = tmp_path
        group = self.host.iommu_group_of(DEV)
        self.group = str(group) if group is not None else None
        host = self.host
        put(host, "/etc/libvirt/qemu.conf", "# stock comments\n# more\n" +
            acl("/dev/vfio/vfio", *([f"/dev/vfio/{self.group}"] if self.group else [])))
        put(host, "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nlibvirt-qemu:x:64055:993::/:/bin/false\n")
        put(host, "/etc/group", "root:x:0:\nlibvirt-qemu:x:993:\n")
        put(host, HOOK, "#!/bin/sh\n", 0o755)
        daemon(host, started_after_hook=True)
        put(host, "/sys/module/apparmor/parameters/enabled", "Y\n")
        put(host, "/etc/apparmor.d/local/abstractions/libvirt-qemu", RULES)
        self.emulator = tmp_path / "qemu-system-aarch64"
        self.emulator.write_text("fake")
        self.domain = tmp_path / "domain.xml"
        self.write_domain(f"<source><device name='{DEV}'/></source>")

    def write_domain(self, source: str, extra: str = LIMIT, arch: str = "aarch64",
                     managed: str = "yes") -> None:
        self.domain.write_text(
            f"<domain type='qemu'><name>g</name><memory unit='KiB'>1048576</memory>{extra}"
            f"<os><type arch='{arch}' machine='virt'>hvm</type></os><devices>"
            f"<emulator>{self.emulator}</emulator>"
            f"<hostdev mode='subsystem' type='platform' managed='{managed}'>{source}</hostdev>"
            "</devices></domain>")

    def runner(self, argv: Sequence[str]) -> str:
        if argv[-1] == "--version":
            return "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)\n"
        if argv[-1] == "help":
            return 'name "vfio-platform", bus System\nname "virtio-net-device", bus virtio-bus\n'
        raise HostdevError(f"{argv[0]} failed (exit 1)", "")

    def modprobe(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """``modprobe -n``: this host has none of the vfio modules."""
        return subprocess.CompletedProcess(list(argv), 1, "", "modprobe: FATAL: not found\n")

    def run(self, *argv: str, conn: Any = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        ctx = cli.Context(out=out, err=err, conn=conn,
                          env={"PLATFORM_HOSTDEV_CACHE": str(self.tmp / "cache")},
                          host=self.kernel.as_host(modprobe=self.modprobe,
                                                   qemu_probe=self.runner))
        return cli.main(["check-host", *argv], ctx), out.getvalue(), err.getvalue()

    def checks(self, *argv: str) -> tuple[int, dict[str, dict[str, str]]]:
        code, out, err = self.run(*argv, "--json")
        assert err == ""
        data = json.loads(out)
        return code, {c["check"]: c for c in data}


@pytest.fixture
def ready(tmp_path: Path, virt_dtb: Path) -> Setup:
    return Setup(tmp_path, virt_dtb)


def statuses(checks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


def test_ready_host_passes(ready: Setup) -> None:
    code, checks = ready.checks(str(ready.domain))
    assert code == 0
    bad = {k: v for k, v in statuses(checks).items() if v != "PASS"}
    assert bad == {f"{DEV} reset": "WARN", "QEMU vfio-platform": "WARN"}  # reset_required=0, 10.0
    group = ready.group
    assert checks[f"{DEV} IOMMU group"]["finding"] == f"group {group} (/dev/vfio/{group})"
    assert set(checks["vfio module"]) == {"check", "status", "finding", "fix"}


def test_text_output_format(ready: Setup) -> None:
    code, out, _ = ready.run(str(ready.domain))
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "PASS: vfio module: loaded (or built in)"
    warn = lines.index(next(line for line in lines if line.startswith("WARN: QEMU")))
    assert lines[warn + 1].startswith("      fix: ")
    assert all(line.split(":")[0] in ("PASS", "WARN", "FAIL", "      fix") for line in lines)


def test_without_domain_checks_the_host_only(ready: Setup) -> None:
    code, checks = ready.checks()
    assert code == 0
    assert "guest" not in checks and "memory locking" not in checks


def test_acl_missing_group_node_shows_the_full_list(ready: Setup) -> None:
    put(ready.host, "/etc/libvirt/qemu.conf", acl("/dev/vfio/vfio"))
    code, checks = ready.checks(str(ready.domain))
    assert code == 1
    check = checks["qemu.conf cgroup_device_acl"]
    assert check["status"] == "FAIL" and f"/dev/vfio/{ready.group} missing" in check["finding"]
    assert check["fix"].count('"/dev/') == 10 and "REPLACES" in check["fix"]


def test_broken_qemu_conf_names_the_line(ready: Setup) -> None:
    put(ready.host, "/etc/libvirt/qemu.conf", "# c\nuser = libvirt-qemu\n")
    code, checks = ready.checks()
    assert code == 1 and "line 2" in checks["qemu.conf"]["finding"]


def test_unknown_qemu_user_fails(ready: Setup) -> None:
    put(ready.host, "/etc/libvirt/qemu.conf", acl("/dev/vfio/vfio") + 'user = "nobody-here"\n')
    code, checks = ready.checks()
    assert code == 1 and checks["qemu.conf user/group"]["status"] == "FAIL"


def test_noiommu_group_fails_for_a_domain(tmp_path: Path, virt_dtb: Path) -> None:
    setup = Setup(tmp_path, virt_dtb, iommu="none", noiommu=True)
    code, checks = setup.checks(str(setup.domain))
    assert code == 1
    assert "QEMU cannot use no-IOMMU groups" in checks[f"{DEV} IOMMU group"]["finding"]


def test_reset_required_without_handler_fails(tmp_path: Path, virt_dtb: Path) -> None:
    setup = Setup(tmp_path, virt_dtb, reset_required=True)
    code, checks = setup.checks(str(setup.domain))
    assert code == 1
    assert "reset_required=0" in checks[f"{DEV} reset"]["fix"]
    assert "Risk" in checks[f"{DEV} reset"]["fix"]


def test_group_shared_with_a_bound_device_is_not_viable(tmp_path: Path, virt_dtb: Path) -> None:
    setup = Setup(tmp_path, virt_dtb, iommu={DEV: 7, GPIO: 7})
    code, checks = setup.checks(str(setup.domain))
    assert code == 1
    check = checks[f"{DEV} group viability"]
    assert f"{GPIO} (bound to pl061_gpio)" in check["finding"] and "not viable" in check["finding"]


def test_device_on_the_default_route_fails(ready: Setup) -> None:
    host = ready.host
    nic = f"{host.host_paths[NIC]}/virtio30"
    host.path(f"{nic}/net/eth0").mkdir(parents=True)
    os.symlink(os.path.relpath(host.path(nic), host.path(f"{nic}/net/eth0")),
               host.path(f"{nic}/net/eth0/device"))
    host.path("/sys/class/net").mkdir(parents=True)
    os.symlink(host.path(f"{nic}/net/eth0"), host.path("/sys/class/net/eth0"))
    put(host, "/proc/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\n")
    ready.write_domain(f"<source><device name='{NIC}'/></source>")
    code, checks = ready.checks(str(ready.domain))
    assert code == 1
    assert checks[f"{NIC} host use"]["finding"].startswith(f"{NIC} carries the host's default")


def test_unknown_and_amba_devices_fail(ready: Setup) -> None:
    ready.write_domain("<source><devicetree path='/nope@0'/></source>")
    code, checks = ready.checks(str(ready.domain))
    assert code == 1 and checks["/nope@0"]["status"] == "FAIL"
    ready.write_domain(f"<source><device name='{GPIO}'/></source>")
    code, checks = ready.checks(str(ready.domain))
    assert "AMBA" in checks[GPIO]["finding"]


def test_unmanaged_device_not_detached_fails(ready: Setup) -> None:
    ready.write_domain(f"<source><device name='{DEV}'/></source>", managed="no")
    code, checks = ready.checks(str(ready.domain))
    assert code == 1 and f"nodedev-detach {DEV}" in checks[f"{DEV} unmanaged"]["fix"]


def test_memory_locking(ready: Setup) -> None:
    ready.write_domain(f"<source><device name='{DEV}'/></source>", extra="")
    code, checks = ready.checks(str(ready.domain))
    assert checks["memory locking"]["status"] == "WARN"  # the translation adds <locked/>
    assert code == 0


def test_x86_guest_fails(ready: Setup) -> None:
    ready.write_domain(f"<source><device name='{DEV}'/></source>", arch="x86_64")
    code, checks = ready.checks(str(ready.domain))
    assert code == 1 and "aarch64" in checks["guest"]["finding"]


def test_modules_missing_or_loadable(ready: Setup) -> None:
    import shutil

    for module in ("vfio_platform", "vfio_amba"):
        shutil.rmtree(ready.host.path(f"/sys/module/{module}"))
    release = "6.12.0-fake-arm64"
    put(ready.host, f"/lib/modules/{release}/modules.dep",
        "kernel/drivers/vfio/vfio.ko.xz:\nkernel/drivers/vfio/platform/vfio-amba.ko.xz: "
        "kernel/drivers/vfio/vfio.ko.xz\n")
    code, checks = ready.checks()
    assert code == 1
    assert checks["vfio_platform module"]["status"] == "FAIL"
    assert "Debian's stock arm64 kernels" in checks["vfio_platform module"]["fix"]
    assert checks["vfio_amba module"]["finding"].startswith("loadable")


def test_apparmor_missing_rules_and_selinux(ready: Setup) -> None:
    put(ready.host, "/etc/apparmor.d/local/abstractions/libvirt-qemu", "/dev/vfio/* rw,\n")
    put(ready.host, "/sys/fs/selinux/enforce", "1")
    code, checks = ready.checks()
    assert code == 1
    apparmor = checks["AppArmor"]
    assert "/dev/vfio/vfio" not in apparmor["fix"]  # /dev/vfio/* covers both nodes
    assert "/sys/firmware/devicetree/** r," in apparmor["fix"]
    assert checks["SELinux"]["status"] == "WARN"


def test_hook_missing_or_newer_than_the_daemon(ready: Setup) -> None:
    daemon(ready.host, started_after_hook=False)
    code, checks = ready.checks()
    assert checks["libvirt hook seen"]["status"] == "WARN"
    assert "restart libvirtd" in checks["libvirt hook seen"]["fix"]
    ready.host.path(HOOK).unlink()
    code, checks = ready.checks()
    assert code == 1 and "hook install" in checks["libvirt hook"]["fix"]


class FakeDomain:
    def __init__(self, xml: str) -> None:
        self.xml = xml

    def XMLDesc(self, flags: int) -> str:  # libvirt's name
        return self.xml


class FakeConn:
    def __init__(self, xml: str) -> None:
        self.domain = FakeDomain(xml)

    def lookupByName(self, name: str) -> FakeDomain:  # libvirt's name
        assert name == "g"
        return self.domain


def test_domain_in_translated_form_from_libvirt(ready: Setup) -> None:
    tree = parse_xml(ready.domain.read_bytes(), "domain")
    translated = forward(tree, load_inventory(ready.host.root)).xml()
    assert "qemu:commandline" in translated
    code, out, err = ready.run("g", "--json", conn=FakeConn(translated))
    checks = {c["check"]: c for c in json.loads(out)}
    assert code == 0, err
    assert checks[f"{DEV} IOMMU group"]["status"] == "PASS"
    assert etree.fromstring(translated.encode()).find("memoryBacking/locked") is not None


def test_unreadable_xml_is_a_user_error(ready: Setup) -> None:
    ready.domain.write_text("<domain>")
    code, out, err = ready.run(str(ready.domain))
    assert code == 1 and out == "" and "not well-formed" in err
