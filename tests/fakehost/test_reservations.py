"""Boot-time reservations on fake hosts: the file, the CLI, the udev rule, the unit, the hook.

The rule (debian/udev/60-platform-hostdev.rules) is read by tests/support/
udevrules.py as systemd-udevd 252 reads it (this machine's udev has no
``udevadm verify``); its IMPORT program runs the CLI in-process against the
fake kernel, and the host driver's module then registers as udev's kmod
builtin would load it (FakeKernel.register_driver).
"""
from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.binding.reservations import (
    RESERVED_FILE,
    ReservationError,
    Reservations,
    parse_reservations,
)
from platform_hostdev.checkhost.reservations import reservation_checks
from platform_hostdev.cli import main as cli

from tests.fakehost.test_hook import libvirt_domain, make_kernel, run_hook
from tests.fakehost.test_protection import dress
from tests.support.fakehost import build_fake_host, tree_state
from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel
from tests.support.raspi import build_raspi3b
from tests.support.udevrules import RulesError, parse_rules, process

REPO = Path(__file__).resolve().parents[2]
RULE = REPO / "debian/udev/60-platform-hostdev.rules"
UNIT = REPO / "debian/systemd/platform-hostdev-reserve.service"
VIRTIO, VIRTIO_PATH = "a000000.virtio_mmio", "/virtio_mmio@a000000"
PL061, PL061_PATH = "9030000.pl061", "/pl061@9030000"
DRIVERS = {**QEMU_VIRT_DRIVERS, "virtio,mmio": "virtio-mmio"}


def virt(root: Path, dtb: Path, **kw: Any) -> FakeKernel:
    """The virt host at boot: virtio-mmio is a module not loaded yet (CONFIG_VIRTIO_MMIO=m),
    the pl0xx drivers built in and bound; vfio loaded (no-IOMMU, reset_required=0)."""
    host = build_fake_host(root, dtb, drivers=QEMU_VIRT_DRIVERS, vfio_loaded=True,
                           noiommu=True, **kw)
    return FakeKernel(host, drivers=DRIVERS, reset_required=False)


@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    return virt(tmp_path / "root", virt_dtb)


def run(kernel: FakeKernel, *argv: str, env: dict[str, str] | None = None) \
        -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ctx = cli.Context(host=kernel.as_host(), out=out, err=err, env=env or {})
    return cli.main(list(argv), ctx), out.getvalue(), err.getvalue()


def reserved(kernel: FakeKernel) -> tuple[str, ...]:
    return Reservations(kernel).paths()


def events(kernel: FakeKernel) -> list[dict[str, str]]:
    """The add events coldplug replays (udevadm trigger --action=add): one per device, its
    uevent file's keys plus ACTION, SUBSYSTEM and DEVPATH, in the kernel's device order."""
    found = []
    for name, path in kernel.host.host_paths.items():
        props = dict(line.split("=", 1) for line in
                     (kernel.host.device_dir(name) / "uevent").read_text().splitlines())
        props.update(ACTION="add", SUBSYSTEM=kernel.host.buses[name],
                     DEVPATH=path.removeprefix("/sys"))
        found.append(props)
    return found


def coldplug(kernel: FakeKernel) -> dict[str, tuple[str, ...]]:
    """Every add event through the shipped rule; returns the programs each device's event
    imported (by DEVPATH)."""
    rules = parse_rules(RULE.read_text())

    def program(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        assert argv[0] == "/usr/bin/platform-hostdev"
        return run(kernel, *argv[1:], env=env)[:2]

    return {e["DEVPATH"]: process(rules, e, kernel.root, program).imported
            for e in events(kernel)}


# ---------------------------------------------------------------- the file

def test_the_file_is_one_dt_path_a_line_and_checked_on_read(tmp_path: Path) -> None:
    text = "# comment\n\n/soc/serial@7e215040\n  /virtio_mmio@a000000  \n"
    assert parse_reservations(text) == ("/soc/serial@7e215040", "/virtio_mmio@a000000")
    for bad, problem in (("soc/uart@1\n", "is not a DT path"), ("/soc/../x\n", "invalid"),
                         ("/a@1\n/a@1\n", "listed twice"), ("/\n", "DT root"),
                         ("/a b\n", "invalid component")):
        with pytest.raises(ReservationError) as caught:
            parse_reservations("# x\n" + bad, "/etc/platform-hostdev/reserved")
        assert caught.value.code == "reservation-corrupt"
        line = 1 + bad.count("\n")
        assert f"reserved line {line}: " in caught.value.what and problem in caught.value.what
        assert "nodedev-reattach --persistent" in caught.value.fix


def test_a_reservation_is_written_atomically_readable_by_all(kernel: FakeKernel) -> None:
    reservations = Reservations(kernel)
    with reservations.locked():
        assert reservations.add(VIRTIO_PATH) and not reservations.add(VIRTIO_PATH)
        assert reservations.add(PL061_PATH)
    path = kernel.path(RESERVED_FILE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert reserved(kernel) == (VIRTIO_PATH, PL061_PATH)
    assert path.read_text().startswith("# Devices platform-hostdev binds")
    assert not [n for n in os.listdir(path.parent) if n != "reserved"]  # no temp file left
    with reservations.locked():
        assert reservations.remove(VIRTIO_PATH) and not reservations.remove(VIRTIO_PATH)
    assert reserved(kernel) == (PL061_PATH,)


# ---------------------------------------------------------------- nodedev-detach --persistent

def test_persistent_detach_moves_the_device_and_records_its_dt_path(kernel: FakeKernel) -> None:
    code, out, err = run(kernel, "nodedev-detach", "--persistent", PL061)
    assert (code, err) == (0, "")
    assert out == (f"Device {PL061} detached\n"
                   f"Device {PL061_PATH} reserved for vfio at boot ({RESERVED_FILE})\n")
    assert device_state(kernel, "amba", PL061).driver == "vfio-amba"
    assert reserved(kernel) == (PL061_PATH,)
    # again: already on vfio, already reserved, nothing else written
    code, out, _ = run(kernel, "nodedev-detach", "--persistent", PL061, "--json")
    data = json.loads(out)
    assert code == 0 and data["reserved"] == PL061_PATH and "already bound" in data["note"]
    assert reserved(kernel) == (PL061_PATH,)


def test_nodedev_list_shows_the_reserved_devices(kernel: FakeKernel) -> None:
    assert run(kernel, "nodedev-detach", "--persistent", VIRTIO)[0] == 0
    code, out, _ = run(kernel, "nodedev-list")
    assert code == 0 and out.splitlines()[0].split()[-1] == "RESERVED"
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]}
    assert rows[VIRTIO] == "yes" and rows["a000200.virtio_mmio"] == "-" and rows[PL061] == "-"
    listing = {d["name"]: d for d in json.loads(run(kernel, "nodedev-list", "--json")[1])}
    assert listing[VIRTIO]["reserved"] is True and listing[PL061]["reserved"] is False
    assert json.loads(run(kernel, "nodedev-dumpxml", VIRTIO, "--json")[1])["reserved"] is True


@pytest.fixture
def dressed(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    """The virt host with a console on the pl011, root on a virtio disk, the default route
    on a virtio NIC (tests/fakehost/test_protection.py)."""
    kernel = virt(tmp_path / "root", virt_dtb)
    dress(kernel.host)
    return kernel


@pytest.mark.parametrize("name, needs", [("9000000.pl011", "console"),
                                         ("a003e00.virtio_mmio", "mounted on /"),
                                         ("a003c00.virtio_mmio", "default route")])
def test_a_device_the_host_needs_is_not_reserved(dressed: FakeKernel, name: str,
                                                 needs: str) -> None:
    before = tree_state(dressed.root)
    code, out, err = run(dressed, "nodedev-detach", "--persistent", name, "--json")
    body = json.loads(out)["error"]
    assert code == 1 and body["code"] == "host-uses-device" and needs in body["what"]
    assert "--force" in body["fix"]
    assert tree_state(dressed.root) == before and not dressed.path(RESERVED_FILE).exists()


def test_a_device_others_depend_on_is_not_reserved(tmp_path: Path, raspi3b_dtb: Path) -> None:
    kernel = build_raspi3b(tmp_path / "root", raspi3b_dtb)
    before = tree_state(kernel.root)
    code, _, err = run(kernel, "nodedev-detach", "--persistent", "3f101000.cprman")
    assert code == 1
    assert "3f101000.cprman -> 3f202000.mmc (sdhost-bcm2835) -> /dev/mmcblk0 mounted on /mnt" \
        in err
    assert "reserved for vfio at boot, they would not get their drivers at any boot" in err
    assert tree_state(kernel.root) == before and kernel.writes == []


def test_a_corrupt_file_is_refused_before_the_device_moves(kernel: FakeKernel) -> None:
    path = kernel.path(RESERVED_FILE)
    path.parent.mkdir(parents=True)
    path.write_text("virtio_mmio@a000000\n")
    code, out, _ = run(kernel, "nodedev-detach", "--persistent", VIRTIO, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "reservation-corrupt"
    assert device_state(kernel, "platform", VIRTIO).driver is None and kernel.writes == []
    assert path.read_text() == "virtio_mmio@a000000\n"


def test_a_driver_that_forbids_unbinding_is_reserved_for_the_next_boot(
        tmp_path: Path, virt_dtb: Path) -> None:
    # a module (the reservation keeps it off from the next boot) and a built-in driver
    # (it probes before udev: initcall_blacklist is the way)
    host = build_fake_host(tmp_path / "root", virt_dtb,
                           drivers={**QEMU_VIRT_DRIVERS, "virtio,mmio": "virtio-mmio"},
                           vfio_loaded=True, noiommu=True,
                           suppress_bind_attrs=("virtio-mmio", "pl061_gpio"),
                           modules={"virtio-mmio": "virtio_mmio"})
    kernel = FakeKernel(host, drivers=DRIVERS, reset_required=False)
    kernel.path("/proc/kallsyms").write_text("ffff800080d0c000 t pl061_gpio_driver_init\n")
    code, out, err = run(kernel, "nodedev-detach", "--persistent", VIRTIO)
    assert (code, err) == (0, "")
    assert f"Device {VIRTIO_PATH} reserved" in out
    assert "virtio-mmio forbids unbinding, so a000000.virtio_mmio stays with it until the " \
        "next boot; the reservation sets its driver_override before virtio_mmio loads" in out
    assert device_state(kernel, "platform", VIRTIO).driver == "virtio-mmio"
    code, out, _ = run(kernel, "nodedev-detach", "--persistent", PL061)
    assert code == 0 and "is built into the kernel" in out
    assert "initcall_blacklist=pl061_gpio_driver_init" in out
    assert reserved(kernel) == (VIRTIO_PATH, PL061_PATH)


# ---------------------------------------------------------------- nodedev-reattach --persistent

def test_persistent_reattach_gives_back_and_forgets(kernel: FakeKernel) -> None:
    assert run(kernel, "nodedev-detach", "--persistent", PL061)[0] == 0
    code, out, err = run(kernel, "nodedev-reattach", "--persistent", PL061_PATH)
    assert (code, err) == (0, "")
    assert out == (f"Device {PL061} re-attached\n"
                   f"Device {PL061_PATH} no longer reserved for vfio at boot\n")
    assert device_state(kernel, "amba", PL061).driver == "pl061_gpio"
    assert reserved(kernel) == ()
    code, out, _ = run(kernel, "nodedev-reattach", "--persistent", PL061, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not-detached"


def test_a_reserved_path_no_device_has_is_forgotten(kernel: FakeKernel) -> None:
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add("/soc/gone@1000")
    code, out, _ = run(kernel, "nodedev-reattach", "--persistent", "/soc/gone@1000")
    assert code == 0 and "no device has DT path /soc/gone@1000 on this boot" in out
    assert reserved(kernel) == ()


# ---------------------------------------------------------------- the udev rule

def test_the_rule_parses_as_udev_reads_it() -> None:
    rules = parse_rules(RULE.read_text())
    programs = [t.value for r in rules for t in r.tokens if t.key == "IMPORT"]
    assert programs == ["/usr/bin/platform-hostdev reserve-apply --udev"]
    with pytest.raises(RulesError):
        parse_rules('ACTION=="add", GOTO="nowhere"\n')
    with pytest.raises(RulesError):
        parse_rules('OF_FULLNAME=="/x"\n')  # not a udev key: ENV{OF_FULLNAME} is


def test_without_a_reservation_file_the_rule_runs_nothing(kernel: FakeKernel) -> None:
    assert not any(coldplug(kernel).values())
    assert kernel.writes == []


def test_coldplug_binds_the_reserved_device_before_its_module_loads(kernel: FakeKernel) -> None:
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add(VIRTIO_PATH)
    imported = coldplug(kernel)
    # the program runs for DT devices of the two buses only, never for others
    platform = {p for p, progs in imported.items() if progs}
    assert f"/devices/platform/{VIRTIO}" in platform
    assert all(kernel.host.buses[p.rsplit("/", 1)[1]] in ("platform", "amba") for p in platform)
    assert device_state(kernel, "platform", VIRTIO).driver == "vfio-platform"
    assert device_state(kernel, "platform", VIRTIO).override == "vfio-platform"
    # kmod load (80-drivers.rules) registers virtio-mmio: every transport but ours
    bound = kernel.register_driver("platform", "virtio-mmio", "virtio_mmio")
    assert VIRTIO not in bound and "a000200.virtio_mmio" in bound and len(bound) == 31
    assert device_state(kernel, "platform", VIRTIO).driver == "vfio-platform"
    assert not any(VIRTIO in line for line in kernel.log if "virtio-mmio" in line)
    assert Journal(kernel).devices() == []  # no original driver to remember


def test_the_udev_helper_matches_the_full_dt_path_only(kernel: FakeKernel) -> None:
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add(VIRTIO_PATH)
    base = {"ACTION": "add", "SUBSYSTEM": "platform",
            "DEVPATH": "/devices/platform/a000200.virtio_mmio"}
    for full in ("/virtio_mmio@a000200", "/virtio_mmio@a00000", "/virtio_mmio@a0000000",
                 "virtio_mmio@a000000"):
        assert run(kernel, "reserve-apply", "--udev", env={**base, "OF_FULLNAME": full}) \
            == (0, "", "")
    for other in ({"ACTION": "bind"}, {"SUBSYSTEM": "virtio"}):
        env = {**base, "DEVPATH": f"/devices/platform/{VIRTIO}", "OF_FULLNAME": VIRTIO_PATH,
               **other}
        assert run(kernel, "reserve-apply", "--udev", env=env) == (0, "", "")
    assert kernel.writes == []
    env = {**base, "DEVPATH": f"/devices/platform/{VIRTIO}", "OF_FULLNAME": VIRTIO_PATH}
    assert run(kernel, "reserve-apply", "--udev", env=env) == \
        (0, "PLATFORM_HOSTDEV_RESERVED=1\nPLATFORM_HOSTDEV_DRIVER=vfio-platform\n", "")


def test_a_renamed_device_is_matched_by_its_dt_path(tmp_path: Path, raspi3b_dtb: Path) -> None:
    """The mini UART is 3f215040.serial in sysfs (the CPU address, through the soc's
    ranges) and /soc/serial@7e215040 in the DT (the bus address): the reservation holds
    the path, and the event is matched on OF_FULLNAME whatever DEVPATH calls the device."""
    kernel = build_raspi3b(tmp_path / "root", raspi3b_dtb)
    uart = "3f215040.serial"
    kernel.host.unbind(uart)  # as at boot before its driver registers
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add("/soc/serial@7e215040")
    host_path = kernel.host.host_paths[uart]
    env = {"ACTION": "add", "SUBSYSTEM": "platform", "DEVPATH": host_path.removeprefix("/sys"),
           "OF_FULLNAME": "/soc/serial@7e215040"}
    code, out, _ = run(kernel, "reserve-apply", "--udev", env=env)
    assert (code, out) == (0, "PLATFORM_HOSTDEV_RESERVED=1\n"
                              "PLATFORM_HOSTDEV_DRIVER=vfio-platform\n")
    assert device_state(kernel, "platform", uart).driver == "vfio-platform"


def test_a_device_bound_before_udev_is_left_to_the_unit(kernel: FakeKernel) -> None:
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add(PL061_PATH)
    coldplug(kernel)
    assert device_state(kernel, "amba", PL061).driver == "pl061_gpio" and kernel.writes == []


# ---------------------------------------------------------------- the unit, check-host

def test_the_unit_moves_built_in_bound_devices_and_check_host_names_the_initcall(
        kernel: FakeKernel) -> None:
    kernel.path("/proc/kallsyms").write_text("ffff800080d0c000 t pl061_gpio_driver_init\n"
                                             "ffff800080d0c100 t pl061_gpio_probe\n")
    reservations = Reservations(kernel)
    with reservations.locked():
        for path in (PL061_PATH, VIRTIO_PATH, "/soc/gone@1000"):
            reservations.add(path)
    checks = {c.check: c for c in reservation_checks(kernel)}
    assert checks["boot reservation"].status == "WARN"  # the rule is not installed
    assert "60-platform-hostdev.rules" in checks["boot reservation"].finding
    pl061 = checks[f"boot reservation {PL061_PATH}"]
    assert pl061.status == "WARN" and "built into the kernel" in pl061.finding
    assert "initcall_blacklist=pl061_gpio_driver_init" in pl061.fix
    code, out, err = run(kernel, "reserve-apply")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"{PL061} ({PL061_PATH}): moved to vfio-amba from pl061_gpio",
        f"{VIRTIO} ({VIRTIO_PATH}): bound to vfio-platform",
        "/soc/gone@1000: not present (no platform or amba device has this DT path)"]
    record = Journal(kernel).read(PL061)
    assert record is not None and record.original_driver == "pl061_gpio"
    rule = kernel.path("/usr/lib/udev/rules.d/60-platform-hostdev.rules")
    rule.parent.mkdir(parents=True)
    rule.write_text(RULE.read_text())
    checks = {c.check: c for c in reservation_checks(kernel)}
    assert checks["boot reservation"].status == "PASS"
    assert checks[f"boot reservation {VIRTIO_PATH}"].status == "PASS"
    moved = checks[f"boot reservation {PL061_PATH}"]
    assert moved.status == "WARN" and "moved there after boot from pl061_gpio" in moved.finding
    assert "initcall_blacklist=pl061_gpio_driver_init" in moved.fix
    assert checks["boot reservation /soc/gone@1000"].status == "WARN"
    assert run(kernel, "reserve-apply")[1].splitlines()[:2] == [
        f"{PL061} ({PL061_PATH}): already on vfio-amba",
        f"{VIRTIO} ({VIRTIO_PATH}): already on vfio-platform"]
    # the built-in driver comes back with the re-attach the journal allows
    assert run(kernel, "nodedev-reattach", "--persistent", PL061)[0] == 0
    assert device_state(kernel, "amba", PL061).driver == "pl061_gpio"


def test_the_unit_refuses_a_device_the_host_now_needs(dressed: FakeKernel) -> None:
    reservations = Reservations(dressed)
    with reservations.locked():
        reservations.add("/pl011@9000000")
    code, out, err = run(dressed, "reserve-apply")
    assert code == 1 and out == ""
    assert err.startswith("9000000.pl011 (/pl011@9000000): failed: 9000000.pl011 is the "
                          "host console")
    assert device_state(dressed, "amba", "9000000.pl011").driver == "uart-pl011"
    check = {c.check: c for c in reservation_checks(dressed)}["boot reservation /pl011@9000000"]
    assert check.status == "FAIL" and "the host needs 9000000.pl011" in check.finding


def test_the_unit_file_applies_after_coldplug_and_is_opt_in() -> None:
    text = UNIT.read_text()
    assert "ConditionPathExists=/etc/platform-hostdev/reserved" in text
    assert "After=systemd-udev-trigger.service" in text
    assert "ExecStart=/usr/bin/platform-hostdev reserve-apply\n" in text
    assert "WantedBy=multi-user.target" in text


# ---------------------------------------------------------------- the hook

def test_release_leaves_a_reserved_device_on_vfio(tmp_path: Path, virt_dtb: Path) -> None:
    kernel = make_kernel(tmp_path / "root", virt_dtb)
    xml = libvirt_domain("vm1", [VIRTIO, "a000200.virtio_mmio"])
    assert run_hook(kernel, "vm1", "prepare", xml) == (0, "")
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add(VIRTIO_PATH)
    assert run_hook(kernel, "vm1", "release", xml) == (0, "")
    assert device_state(kernel, "platform", VIRTIO).driver == "vfio-platform"
    assert device_state(kernel, "platform", "a000200.virtio_mmio").driver is None
    assert Owners(kernel).all() == []
    # forgotten and given back, the next domain's release gives it back as before
    assert run(kernel, "nodedev-reattach", "--persistent", VIRTIO)[0] == 0
    assert device_state(kernel, "platform", VIRTIO).driver is None
    assert run_hook(kernel, "vm1", "prepare", xml) == (0, "")
    assert run_hook(kernel, "vm1", "release", xml) == (0, "")
    assert device_state(kernel, "platform", VIRTIO).driver is None


def test_the_udev_call_for_an_unreserved_device_stays_light(kernel: FakeKernel) -> None:
    """The rule runs the helper on the add event of every DT device once a host has
    reservations: for the others it reads the file and exits, loading no binding code."""
    import subprocess
    import sys

    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add(VIRTIO_PATH)
    code = ("import sys, io; from platform_hostdev.cli import main as cli; "
            "from platform_hostdev.host.boundary import host_at; "
            f"ctx = cli.Context(host=host_at({str(kernel.root)!r}), out=io.StringIO(), "
            "env={'ACTION': 'add', 'SUBSYSTEM': 'platform', 'OF_FULLNAME': '/pl011@9000000', "
            "'DEVPATH': '/devices/platform/9000000.pl011'}); "
            "rc = cli.main(['reserve-apply', '--udev'], ctx); "
            "print(rc, repr(ctx.out.getvalue())); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('platform_hostdev') "
            "or m in ('lxml', 'pyudev', 'subprocess'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    first, modules = done.stdout.splitlines()
    assert first == "0 ''"
    loaded = set(modules.split())
    assert "platform_hostdev.binding.reservations" in loaded
    heavy = {"platform_hostdev.binding.operations", "platform_hostdev.binding.preflight",
             "platform_hostdev.host.protection", "platform_hostdev.host.inventory",
             "platform_hostdev.cli.binding", "lxml", "pyudev", "subprocess"}
    assert not loaded & heavy, loaded


def test_check_host_names_a_module_that_bound_a_reserved_device_first(
        tmp_path: Path, virt_dtb: Path) -> None:
    """A module loaded before udev applied the reservation (by the initramfs, or by hand)
    holds the device: check-host says so, and the unit moves it."""
    host = build_fake_host(tmp_path / "root", virt_dtb, drivers=DRIVERS, vfio_loaded=True,
                           noiommu=True, modules={"virtio-mmio": "virtio_mmio"})
    kernel = FakeKernel(host, drivers=DRIVERS, reset_required=False)
    reservations = Reservations(kernel)
    with reservations.locked():
        reservations.add(VIRTIO_PATH)
    check = {c.check: c for c in reservation_checks(kernel)}[f"boot reservation {VIRTIO_PATH}"]
    assert check.status == "WARN"
    assert "bound to virtio-mmio (module virtio_mmio), loaded before the reservation" \
        in check.finding
    assert "initramfs" in check.fix
    assert run(kernel, "reserve-apply")[1] == \
        f"{VIRTIO} ({VIRTIO_PATH}): moved to vfio-platform from virtio-mmio\n"
