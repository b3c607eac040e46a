"""Host safety from the kernel's dependency graph, on the fake raspi3b host.

The fake kernel unbinds active consumers of an unbound supplier and re-probes
deferred consumers as Linux 6.12 does (tests/support/fakekernel.py); these
tests check that the tool refuses before writing anything, names every chain,
applies the host protection to the whole set, lets --force through on the
command line only, and gives the consumers back.
"""
from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import (
    PARKED,
    DeviceInUseError,
    detach,
    device_state,
    recover,
)
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.checkhost.devices import device_checks, requested_hostdevs
from platform_hostdev.cli import main as cli
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.hook.qemu import HookEnv, dispatch
from platform_hostdev.host.devlinks import UnbindForbiddenError
from platform_hostdev.host.inventory import Device, load_inventory
from platform_hostdev.host.protection import (
    ConsumerWouldUnbindError,
    host_usage,
    refuse_if_host_uses,
)

from tests.contract.conftest import SimulatedKill, kill_at
from tests.support.domains import libvirt_domain, user_domain, with_guest_dt
from tests.support.fakehost import build_fake_host, tree_state
from tests.support.fakekernel import FakeKernel
from tests.support.raspi import MINI_UART, RASPI3B_DRIVERS, build_raspi3b, dress_raspi3b

CPRMAN, GPIO, MAILBOX, AUX = "3f101000.cprman", "3f200000.gpio", "3f00b880.mailbox", \
    "3f215000.aux"
FWGPIO, PWRSEQ = "soc:firmware:gpio", "wifi-pwrseq"


@pytest.fixture
def kernel(tmp_path: Path, raspi3b_dtb: Path) -> FakeKernel:
    return build_raspi3b(tmp_path / "root", raspi3b_dtb)


def run(kernel: FakeKernel, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ctx = cli.Context(host=kernel.as_host(), out=out, err=err)
    return cli.main(list(argv), ctx), out.getvalue(), err.getvalue()


def device(kernel: FakeKernel, name: str) -> Device:
    return load_inventory(kernel.root).resolve(name)


def drivers(kernel: FakeKernel) -> dict[str, str | None]:
    return {name: kernel.host.driver_of(name) for name in kernel.host.devices}


class Untouched:
    """Asserts that an operation wrote nothing: no sysfs write, same tree, empty journal."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.before = tree_state(kernel.root)

    def check(self) -> None:
        assert self.kernel.writes == []
        assert tree_state(self.kernel.root) == self.before
        assert Journal(self.kernel).devices() == []


def test_cprman_detach_is_refused_with_every_chain(kernel: FakeKernel) -> None:
    untouched = Untouched(kernel)
    code, out, err = run(kernel, "nodedev-detach", CPRMAN)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == (f"error: detaching {CPRMAN} makes the kernel unbind 5 devices that "
                        "depend on it (device links, /sys/class/devlink):")
    assert sorted(line.strip() for line in lines[1:6]) == sorted([
        f"{CPRMAN} -> 3f201000.serial (uart-pl011) -> the host console (console=ttyAMA0, "
        "/sys/class/tty/console/active, /proc/consoles)",
        f"{CPRMAN} -> 3f202000.mmc (sdhost-bcm2835) -> /dev/mmcblk0 mounted on /mnt",
        f"{CPRMAN} -> {AUX} (bcm2835-aux-clk)",
        f"{CPRMAN} -> {AUX} (bcm2835-aux-clk) -> {MINI_UART} (bcm2835-aux-uart)",
        f"{CPRMAN} -> 3f100000.watchdog (bcm2835-pm)"])
    # every reason in the one refusal: the console's driver also forbids unbinding
    assert lines[6] == ("  uart-pl011 (on 3f201000.serial) forbids unbinding (suppress_bind_attrs:"
                        " /sys/bus/amba/drivers/uart-pl011 has no unbind file): --force cannot "
                        "override this")
    assert lines[7].startswith("hint: the host uses them: choose another device; uart-pl011 "
                               "cannot be unbound at run time: uart-pl011 is built into the "
                               "kernel")
    assert lines[7].endswith("or choose a device 3f201000.serial does not depend on")
    untouched.check()


def test_json_errors_carry_the_codes_and_chains(kernel: FakeKernel) -> None:
    code, out, _ = run(kernel, "nodedev-detach", MAILBOX, "--json")
    error = json.loads(out)["error"]
    assert (code, error["code"], error["device"]) == (1, "consumer-would-unbind", MAILBOX)
    assert error["consumers"] == ["soc:firmware"]
    assert error["chains"] == [[MAILBOX, "soc:firmware"]]
    code, out, _ = run(kernel, "nodedev-detach", GPIO, "--json")
    error = json.loads(out)["error"]
    assert (code, error["code"], error["device"], error["driver"]) == \
        (1, "unbind-forbidden", GPIO, "pinctrl-bcm2835")
    assert kernel.writes == []


def test_mailbox_detach_is_refused_naming_the_firmware(kernel: FakeKernel) -> None:
    untouched = Untouched(kernel)
    code, out, err = run(kernel, "nodedev-detach", MAILBOX)
    assert code == 1
    assert err == (
        f"error: detaching {MAILBOX} makes the kernel unbind 1 device that depends on it "
        "(device links, /sys/class/devlink):\n"
        f"  {MAILBOX} -> soc:firmware (raspberrypi-firmware)\n"
        "hint: pass --force on the command line to let it lose its driver ('platform-hostdev "
        f"nodedev-reattach {MAILBOX}' gives it back; the libvirt hook never does this), or "
        "choose a device nothing depends on\n")
    untouched.check()


@pytest.mark.parametrize("force", [False, True])
def test_pinctrl_forbids_unbinding_nothing_written(kernel: FakeKernel, force: bool) -> None:
    untouched = Untouched(kernel)
    code, out, err = run(kernel, "nodedev-detach", GPIO, *(["--force"] if force else []))
    assert code == 1
    assert err.startswith(
        f"error: {GPIO} is bound to pinctrl-bcm2835, which forbids unbinding "
        "(suppress_bind_attrs: /sys/bus/platform/drivers/pinctrl-bcm2835 has no unbind "
        "file): the kernel cannot release this device at run time; nothing was written\n"
        "hint: pinctrl-bcm2835 is built into the kernel (listed in modules.builtin as "
        "kernel/drivers/pinctrl/bcm/pinctrl-bcm2835.ko): to keep it off the device, boot with "
        "initcall_blacklist=bcm2835_pinctrl_driver_init")
    assert "ENOENT" not in err
    assert device_state(kernel, "platform", GPIO).override is None  # driver_override as it was
    untouched.check()


def test_binding_api_refuses_as_well(kernel: FakeKernel) -> None:
    """detach() itself refuses, whoever calls it (the CLI, the hook, a script)."""
    untouched = Untouched(kernel)
    journal = Journal(kernel)
    with pytest.raises(UnbindForbiddenError) as forbidden:
        detach(kernel.as_host(), device(kernel, GPIO), journal)
    assert forbidden.value.code == "unbind-forbidden"
    with pytest.raises(ConsumerWouldUnbindError) as consumers:
        detach(kernel.as_host(), device(kernel, FWGPIO), journal, force=True)
    assert consumers.value.code == "consumer-would-unbind"
    assert [d.name for d in consumers.value.dependents] == [PWRSEQ]
    assert kernel.writes == [] and tree_state(kernel.root / "sys") == \
        {k[4:]: v for k, v in untouched.before.items() if k.startswith("sys/")}


def test_force_unbinds_the_consumers_and_reattach_gives_them_back(kernel: FakeKernel) -> None:
    original = drivers(kernel)
    code, out, err = run(kernel, "nodedev-detach", FWGPIO, "--force")
    assert code == 0, err
    assert out == (f"Device {FWGPIO} detached\nLost their driver with it: {PWRSEQ} "
                   f"('nodedev-reattach {FWGPIO}' gives them back)\n")
    assert err == (f"warning: --force: {PWRSEQ} (pwrseq_simple) loses its driver: "
                   f"{FWGPIO} -> {PWRSEQ} (pwrseq_simple)\n")
    assert kernel.host.driver_of(FWGPIO) == "vfio-platform"
    assert kernel.host.driver_of(PWRSEQ) is None            # really unbound
    # parked: nothing may bind it while its supplier is on vfio (the kernel re-probes it
    # when the supplier binds vfio), and the override says why
    assert kernel.host.driver_override(PWRSEQ) == PARKED
    assert PWRSEQ not in kernel.deferred
    record = Journal(kernel).read(FWGPIO)
    assert record is not None and record.consumers == (("platform", PWRSEQ, "pwrseq_simple"),)
    stored = json.loads(Journal(kernel).file(FWGPIO).read_text())
    assert stored["consumers"] == [["platform", PWRSEQ, "pwrseq_simple"]]

    code, out, err = run(kernel, "nodedev-reattach", FWGPIO)
    assert (code, err) == (0, "")
    assert out == f"Device {FWGPIO} re-attached\nGiven their driver back: {PWRSEQ}\n"
    assert drivers(kernel) == original
    assert Journal(kernel).devices() == []


def test_reattach_reprobes_consumers_the_kernel_would_not(kernel: FakeKernel) -> None:
    """Links without DL_FLAG_AUTOPROBE_CONSUMER (or removed on supplier unbind) leave the
    consumer unbound after the supplier is back: the tool re-probes it itself."""
    for link in kernel.host.links:
        link.autoprobe = False
    original = drivers(kernel)
    assert run(kernel, "nodedev-detach", FWGPIO, "--force")[0] == 0
    kernel.writes.clear()
    code, out, _ = run(kernel, "nodedev-reattach", FWGPIO)
    assert code == 0 and f"Given their driver back: {PWRSEQ}" in out
    assert ("/sys/bus/platform/drivers_probe", PWRSEQ) in kernel.writes
    assert drivers(kernel) == original


def test_json_results_list_the_consumers(kernel: FakeKernel) -> None:
    code, out, _ = run(kernel, "nodedev-detach", FWGPIO, "--force", "--json")
    assert code == 0 and json.loads(out)["unbound_consumers"] == [PWRSEQ]
    code, out, _ = run(kernel, "nodedev-reattach", FWGPIO, "--json")
    assert code == 0 and json.loads(out)["reprobed_consumers"] == [PWRSEQ]


def test_a_consumer_that_does_not_come_back_keeps_the_journal(kernel: FakeKernel) -> None:
    assert run(kernel, "nodedev-detach", FWGPIO, "--force")[0] == 0
    kernel.probe_errors["pwrseq_simple"] = errno.EIO
    code, _, err = run(kernel, "nodedev-reattach", FWGPIO)
    assert code == 1
    assert f"error: {FWGPIO} is back with its driver, but not every device that lost its " \
           f"driver with it: {PWRSEQ} did not get pwrseq_simple back (driver: none) (kernel: " \
           "probe with driver pwrseq_simple failed with error -5)" in err
    assert "hint: see dmesg" in err and "platform-hostdev recover" in err
    assert kernel.host.driver_of(FWGPIO) == "raspberrypi-exp-gpio"
    record = Journal(kernel).read(FWGPIO)
    assert record is not None and record.op == "reattach" and record.consumers
    del kernel.probe_errors["pwrseq_simple"]
    code, out, err = run(kernel, "recover")
    assert code == 0, err
    assert out.startswith(f"{FWGPIO}: restored: interrupted reattach")
    assert kernel.host.driver_of(PWRSEQ) == "pwrseq_simple"
    assert Journal(kernel).devices() == []


def test_recover_after_a_kill_gives_back_device_and_consumers(kernel: FakeKernel) -> None:
    original = drivers(kernel)
    journal = Journal(kernel)
    with pytest.raises(SimulatedKill):
        detach(kernel.as_host(observer=kill_at("unbound", "detach")), device(kernel, FWGPIO),
               journal, unbind_consumers=True)
    assert kernel.host.driver_of(PWRSEQ) is None and kernel.host.driver_of(FWGPIO) is None
    # nothing on the kernel's side brings wifi-pwrseq back: its supplier is unbound
    actions = recover(kernel.as_host(), journal)
    assert [(a.device, a.action) for a in actions] == [(FWGPIO, "restored")]
    assert drivers(kernel) == original
    assert journal.devices() == []


def test_recover_reprobes_consumers_of_a_device_given_back_by_hand(kernel: FakeKernel) -> None:
    for link in kernel.host.links:
        link.autoprobe = False  # nothing in the kernel re-probes wifi-pwrseq
    assert run(kernel, "nodedev-detach", FWGPIO, "--force")[0] == 0
    base = f"/sys/bus/platform/devices/{FWGPIO}"
    kernel.write_attr(base + "/driver_override", "\n")
    kernel.write_attr("/sys/bus/platform/drivers/vfio-platform/unbind", FWGPIO)
    kernel.write_attr("/sys/bus/platform/drivers_probe", FWGPIO)
    assert (kernel.host.driver_of(FWGPIO), kernel.host.driver_of(PWRSEQ)) == \
        ("raspberrypi-exp-gpio", None)
    code, out, err = run(kernel, "recover")
    assert (code, err) == (0, "")
    assert out == (f"{FWGPIO}: stale-removed: no longer bound to vfio-platform (driver: "
                   f"raspberrypi-exp-gpio); re-probed {PWRSEQ}\n")
    assert kernel.host.driver_of(PWRSEQ) == "pwrseq_simple"
    assert Journal(kernel).devices() == []


def test_a_probe_deferred_for_a_missing_supplier_is_explained(kernel: FakeKernel) -> None:
    code, _, err = run(kernel, "nodedev-detach", "3f980000.usb")
    assert code == 1
    assert err.startswith("error: the kernel deferred 3f980000.usb's probe with vfio-platform "
                          "(EPROBE_DEFER, not logged): its supplier phy (dormant) has no driver")
    assert "; the device was put back as it was\nhint: bind the supplier first" in err
    assert kernel.host.driver_of("3f980000.usb") is None
    assert device_state(kernel, "platform", "3f980000.usb").override is None
    assert Journal(kernel).devices() == []
    assert "3f980000.usb" in kernel.deferred  # the kernel keeps retrying it, with no override


def test_a_leaf_detaches_and_reattaches_quietly(kernel: FakeKernel) -> None:
    code, out, err = run(kernel, "nodedev-detach", MINI_UART)
    assert (code, out, err) == (0, f"Device {MINI_UART} detached\n", "")
    assert kernel.host.driver_of(MINI_UART) == "vfio-platform"
    record = Journal(kernel).read(MINI_UART)
    assert record is not None and record.consumers == ()
    code, out, err = run(kernel, "nodedev-reattach", MINI_UART)
    assert (code, out, err) == (0, f"Device {MINI_UART} re-attached\n", "")
    assert kernel.host.driver_of(MINI_UART) == "bcm2835-aux-uart"


def test_a_consumer_whose_driver_forbids_unbinding_is_refused_even_forced(
        tmp_path: Path, raspi3b_dtb: Path) -> None:
    host = build_fake_host(tmp_path / "root", raspi3b_dtb, drivers=RASPI3B_DRIVERS,
                           vfio_loaded=True, noiommu=True,
                           suppress_bind_attrs=("pinctrl-bcm2835", "bcm2835-aux-uart"))
    kernel = FakeKernel(host, drivers=RASPI3B_DRIVERS, reset_required=False)
    untouched = Untouched(kernel)
    code, _, err = run(kernel, "nodedev-detach", AUX, "--force")
    assert code == 1
    assert err.startswith(
        f"error: unbinding {AUX} makes the kernel release {MINI_UART} ({AUX} -> {MINI_UART} "
        f"(bcm2835-aux-uart)), and bcm2835-aux-uart (on {MINI_UART}) forbids unbinding")
    assert f"or choose a device {MINI_UART} does not depend on" in err
    untouched.check()


def test_a_dependent_held_through_vfio_is_refused(kernel: FakeKernel) -> None:
    assert run(kernel, "nodedev-detach", PWRSEQ)[0] == 0      # the consumer to vfio first
    group = device_state(kernel, "platform", PWRSEQ).iommu_group
    fd_dir = kernel.path("/proc/777/fd")
    fd_dir.mkdir(parents=True)
    os.symlink(f"/dev/vfio/noiommu-{group}", fd_dir / "5")
    kernel.path("/proc/777/comm").write_text("qemu-system-aar\n")
    with pytest.raises(DeviceInUseError) as caught:
        detach(kernel.as_host(), device(kernel, FWGPIO), Journal(kernel), unbind_consumers=True)
    assert f"makes the kernel unbind {PWRSEQ} from vfio-platform, and its VFIO group {group} " \
           "is open by qemu-system-aar (pid 777)" in caught.value.what
    assert kernel.host.driver_of(FWGPIO) == "raspberrypi-exp-gpio"


def test_host_protection_covers_the_whole_set(tmp_path: Path, raspi3b_dtb: Path) -> None:
    # uart-pl011 as a module (CONFIG_SERIAL_AMBA_PL011=m): it has bind/unbind files, so
    # --force gets as far as the host checks
    host = build_fake_host(tmp_path / "root", raspi3b_dtb, drivers=RASPI3B_DRIVERS,
                           vfio_loaded=True, noiommu=True,
                           suppress_bind_attrs=("pinctrl-bcm2835",))
    kernel = FakeKernel(host, drivers=RASPI3B_DRIVERS, reset_required=False)
    dress_raspi3b(host)
    uses = refuse_if_host_uses(kernel, device(kernel, CPRMAN), force=True)
    assert sorted(u.kind for u in uses) == ["console", "mount"]
    with pytest.raises(ConsumerWouldUnbindError):
        refuse_if_host_uses(kernel, device(kernel, CPRMAN), force=False)
    assert refuse_if_host_uses(kernel, device(kernel, MINI_UART), force=False) == []


def test_the_hook_never_unbinds_consumers(kernel: FakeKernel) -> None:
    etc = kernel.path("/etc")
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    err = io.StringIO()
    env = HookEnv(kernel.as_host(), err=err)
    xml = with_guest_dt(kernel.root, libvirt_domain("vm1", [FWGPIO]))
    untouched = Untouched(kernel)  # the guest DT record written above is not the hook's
    code = dispatch(["vm1", "prepare", "begin", "-"], xml, env)
    assert code == 1
    assert f"detaching {FWGPIO} makes the kernel unbind 1 device that depends on it" \
        in err.getvalue()
    assert f"{FWGPIO} -> {PWRSEQ} (pwrseq_simple)" in err.getvalue()
    assert Owners(kernel).all() == []
    assert kernel.writes == []
    # the hook's own state (locks, records) lives in /run; nothing else changed
    after = tree_state(kernel.root)
    assert {k: v for k, v in after.items() if k != "run" and not k.startswith("run/")} == \
        untouched.before


def test_show_lists_suppliers_consumers_and_what_an_unbind_takes(kernel: FakeKernel) -> None:
    code, out, err = run(kernel, "show", AUX)
    assert code == 0, err
    section = out[out.index("Device links (/sys/class/devlink):"):]
    assert f"supplier  {CPRMAN}" in section and "bcm2835-clk" in section
    assert f"consumer  {MINI_UART}" in section and "bcm2835-aux-uart" in section
    assert f"Unbinding it makes the kernel unbind:\n  {AUX} -> {MINI_UART} (bcm2835-aux-uart)" \
        in out
    code, out, _ = run(kernel, "show", "leds")
    assert "sync-state-only" in out and "Unbinding it" not in out
    code, out, _ = run(kernel, "show", AUX, "--json")
    links = json.loads(out)["device_links"]
    assert [(s["name"], s["driver"], s["status"]) for s in links["suppliers"]] == \
        [(CPRMAN, "bcm2835-clk", "active")]
    assert [(c["name"], c["driver"]) for c in links["consumers"]] == \
        [(MINI_UART, "bcm2835-aux-uart")]
    assert links["unbinds"] == [{"bus": "platform", "name": MINI_UART,
                                 "driver": "bcm2835-aux-uart", "chain": [AUX, MINI_UART],
                                 "driver_allows_unbind": True}]


def test_nodedev_dumpxml_lists_the_links(kernel: FakeKernel) -> None:
    code, out, err = run(kernel, "nodedev-dumpxml", AUX)
    assert code == 0, err
    root = parse_xml(out.encode(), "dumpxml").getroot()
    links = root.find("capability/devlinks")
    assert links is not None
    assert [(e.tag, dict(e.attrib)) for e in links] == [
        ("supplier", {"name": "platform_3f101000_cprman", "device": CPRMAN, "bus": "platform",
                      "driver": "bcm2835-clk", "status": "active"}),
        ("consumer", {"name": "platform_3f215040_serial", "device": MINI_UART,
                      "bus": "platform", "driver": "bcm2835-aux-uart", "status": "active"}),
        ("unbinds", {"name": "platform_3f215040_serial", "device": MINI_UART, "bus": "platform",
                     "driver": "bcm2835-aux-uart", "via": AUX}),
    ]
    code, out, _ = run(kernel, "nodedev-dumpxml", "leds")
    leds = parse_xml(out.encode(), "dumpxml").getroot().find("capability/devlinks/supplier")
    assert leds is not None and leds.get("syncStateOnly") == "yes" and leds.get("driver") == \
        "raspberrypi-exp-gpio"
    code, out, _ = run(kernel, "nodedev-dumpxml", "3f007000.dma-controller")
    assert "<devlinks" not in out  # dmas makes no link unless fw_devlink.strict=1
    code, out, _ = run(kernel, "nodedev-dumpxml", AUX, "--json")
    assert json.loads(out)["device_links"]["unbinds"][0]["name"] == MINI_UART


def test_dtb_mode_has_no_device_links(kernel: FakeKernel, raspi3b_dtb: Path) -> None:
    code, out, _ = run(kernel, "--dtb", str(raspi3b_dtb), "show", AUX, "--json")
    assert code == 0 and json.loads(out)["device_links"] is None
    code, out, _ = run(kernel, "--dtb", str(raspi3b_dtb), "nodedev-dumpxml", AUX)
    assert code == 0 and "<devlinks" not in out


def _device_checks(kernel: FakeKernel, name: str) -> dict[str, Any]:
    tree = parse_xml(user_domain("g", [name]), "domain")
    hostdevs, _ = requested_hostdevs(tree)
    checks, _ = device_checks(kernel, load_inventory(kernel.root), hostdevs)
    return {c.check: c for c in checks}


def test_check_host_reports_links(kernel: FakeKernel) -> None:
    checks = _device_checks(kernel, FWGPIO)
    links = checks[f"{FWGPIO} device links"]
    assert links.status == "FAIL"
    assert f"{FWGPIO} -> {PWRSEQ} (pwrseq_simple)" in links.finding
    assert "the hook refuses such a detach" in links.finding
    assert f"nodedev-detach --force {FWGPIO}" in links.fix
    checks = _device_checks(kernel, GPIO)
    assert checks[f"{GPIO} device links"].status == "FAIL"
    assert "forbids unbinding" in checks[f"{GPIO} device links"].finding
    assert "initcall_blacklist=bcm2835_pinctrl_driver_init" in checks[f"{GPIO} device links"].fix
    checks = _device_checks(kernel, MINI_UART)
    leaf = checks[f"{MINI_UART} device links"]
    assert leaf.status == "PASS"
    assert leaf.finding == (f"no device loses its driver with it; suppliers: {GPIO} "
                            f"(pinctrl-bcm2835, active), {AUX} (bcm2835-aux-clk, active); "
                            "consumers: none")


def test_cprman_forced_detach_is_still_refused_for_the_console_driver(kernel: FakeKernel) -> None:
    untouched = Untouched(kernel)
    code, out, err = run(kernel, "nodedev-detach", CPRMAN, "--force")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: unbinding {CPRMAN} makes the kernel release 3f201000.serial "
                          f"({CPRMAN} -> 3f201000.serial (uart-pl011)), and uart-pl011 (on "
                          "3f201000.serial) forbids unbinding (suppress_bind_attrs: "), err
    assert "--force cannot override this; nothing was written" in err
    untouched.check()


def test_dma_engine_forced_detach_warns_about_its_dt_users(kernel: FakeKernel) -> None:
    dma = "3f007000.dma-controller"
    code, out, err = run(kernel, "nodedev-detach", dma, "--force")
    assert code == 0, err
    assert err == ("warning: --force: 3f202000.mmc (sdhost-bcm2835) keeps its driver but loses "
                   f"what it uses through dmas: {dma} <- 3f202000.mmc (sdhost-bcm2835) through "
                   "dmas -> /dev/mmcblk0 mounted on /mnt\n")
    assert kernel.host.driver_of(dma) == "vfio-platform"
    assert kernel.host.driver_of("3f202000.mmc") == "sdhost-bcm2835"  # no link: not unbound
    assert run(kernel, "nodedev-reattach", dma)[0] == 0
    assert kernel.host.driver_of(dma) == "bcm2835-dma"


def test_json_refusal_of_a_dt_user(kernel: FakeKernel) -> None:
    code, out, _ = run(kernel, "nodedev-detach", "3f007000.dma-controller", "--json")
    error = json.loads(out)["error"]
    assert (code, error["code"], error["users"], error["properties"]) == \
        (1, "dt-user-would-lose", ["3f202000.mmc"], [["dmas"]])
    assert kernel.writes == []


def test_a_console_without_a_tty_device_is_found_from_stdout_path(kernel: FakeKernel) -> None:
    # as on the real board: serdev owns the PL011 (Bluetooth), so no ttyAMA0 device exists,
    # yet the console prints on it; its DT alias serial0 names the port
    os.unlink(kernel.path("/sys/class/tty/ttyAMA0"))
    uses = host_usage(kernel, device(kernel, "3f201000.serial"))
    assert [u.kind for u in uses] == ["console"]
    assert "aliases/serial0" in uses[0].subject
    assert host_usage(kernel, device(kernel, MINI_UART)) == []


def test_check_host_fails_a_device_used_through_the_dt_alone(kernel: FakeKernel) -> None:
    """The hook refuses to detach the DMA engine (the SD host uses it through dmas, with
    no device link); check-host must say so before the start, not PASS it."""
    dma = "3f007000.dma-controller"
    links = _device_checks(kernel, dma)[f"{dma} device links"]
    assert links.status == "FAIL", links
    assert f"{dma} <- 3f202000.mmc (sdhost-bcm2835) through dmas" in links.finding
    assert "the hook refuses such a detach" in links.finding
    assert links.fix == "the host uses 3f202000.mmc: choose another device"  # mounted
    code, err = _hook_prepare(kernel, dma)
    assert code == 1 and "3f202000.mmc" in err  # the hook's verdict, for the same reason


def _hook_prepare(kernel: FakeKernel, name: str) -> tuple[int, str]:
    err = io.StringIO()
    xml = with_guest_dt(kernel.root, libvirt_domain("g", [name]))
    code = dispatch(["g", "prepare", "begin", "-"], xml, HookEnv(kernel.as_host(), err=err))
    return code, err.getvalue()
