"""host/devlinks.py on hand-written sysfs trees: reading links, the unbind set, drivers' origin."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from platform_hostdev.host.devlinks import (
    Dependent,
    UnbindForbiddenError,
    device_links,
    driver_origin,
    refuse_forbidden_unbind,
    render_dependent,
    reprobe_order,
    unbind_dependents,
)
from platform_hostdev.host.fs import HostFs


class Sysfs:
    """A minimal sysfs: devices, drivers (with or without unbind), links with any status."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fs = HostFs(root)

    def _p(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def _ln(self, link: str, target: str) -> None:
        path = self._p(link)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(self._p(target), path.parent), path)

    def device(self, name: str, bus: str = "platform", driver: str | None = None,
               unbind: bool = True, parent: str = "/sys/devices/platform") -> str:
        real = f"{parent}/{name}"
        self._p(real).mkdir(parents=True)
        self._ln(f"/sys/bus/{bus}/devices/{name}", real)
        if driver is not None:
            ddir = f"/sys/bus/{bus}/drivers/{driver}"
            self._p(ddir).mkdir(parents=True, exist_ok=True)
            if unbind:
                (self._p(ddir) / "unbind").touch()
            self._ln(f"{real}/driver", ddir)
        return real

    def link(self, supplier: tuple[str, str, str], consumer: tuple[str, str, str],
             status: str, sync_state_only: bool = False) -> None:
        """(bus, name, /sys/devices path) of each end."""
        name = f"{supplier[0]}:{supplier[1]}--{consumer[0]}:{consumer[1]}"
        directory = f"/sys/devices/virtual/devlink/{name}"
        self._p(directory).mkdir(parents=True)
        for attr, value in (("status", status), ("sync_state_only", int(sync_state_only)),
                            ("auto_remove_on", "never"), ("runtime_pm", 1)):
            (self._p(directory) / attr).write_text(f"{value}\n")
        self._ln(f"{directory}/supplier", supplier[2])
        self._ln(f"{directory}/consumer", consumer[2])
        self._ln(f"/sys/class/devlink/{name}", directory)
        self._ln(f"{supplier[2]}/consumer:{consumer[0]}:{consumer[1]}", directory)
        self._ln(f"{consumer[2]}/supplier:{supplier[0]}:{supplier[1]}", directory)


@pytest.fixture
def sysfs(tmp_path: Path) -> Sysfs:
    return Sysfs(tmp_path)


def test_links_read_from_both_ends(sysfs: Sysfs) -> None:
    clk = sysfs.device("clk", driver="clk-drv")
    fw = sysfs.device("soc:firmware:gpio", driver="fw-gpio")
    uart = sysfs.device("uart", bus="amba", driver="pl011")
    sysfs.link(("platform", "clk", clk), ("amba", "uart", uart), "active")
    sysfs.link(("platform", "soc:firmware:gpio", fw), ("platform", "clk", clk), "available",
               sync_state_only=True)
    suppliers, consumers = device_links(sysfs.fs, "/sys/bus/platform/devices/clk")
    assert [(lk.role, lk.bus, lk.name, lk.driver, lk.status) for lk in consumers] == \
        [("consumer", "amba", "uart", "pl011", "active")]
    assert consumers[0].holds_consumer and consumers[0].runtime_pm
    assert consumers[0].devlink == "/sys/class/devlink/platform:clk--amba:uart"
    assert consumers[0].sysfs_path == "/sys/devices/platform/uart"
    (supplier,) = suppliers
    assert (supplier.name, supplier.sync_state_only, supplier.holds_consumer) == \
        ("soc:firmware:gpio", True, False)  # the name keeps its colons


@pytest.mark.parametrize(("status", "sync_state_only", "unbinds"), [
    ("active", False, True),
    ("consumer probing", False, True),      # waited for, then released if it became active
    ("available", False, False),
    ("dormant", False, False),
    ("supplier unbinding", False, False),
    ("not tracked", False, False),          # stateless: not DL_FLAG_MANAGED
    ("active", True, False),                # SYNC_STATE_ONLY links are skipped
])
def test_which_links_release_the_consumer(sysfs: Sysfs, status: str, sync_state_only: bool,
                                          unbinds: bool) -> None:
    sup = sysfs.device("sup", driver="s")
    con = sysfs.device("con", driver="c")
    sysfs.link(("platform", "sup", sup), ("platform", "con", con), status, sync_state_only)
    found = unbind_dependents(sysfs.fs, "platform", "sup")
    assert [d.name for d in found] == (["con"] if unbinds else [])


def test_dependents_are_transitive_with_shortest_chains(sysfs: Sysfs) -> None:
    a = sysfs.device("a", driver="da")
    b = sysfs.device("b", driver="db")
    c = sysfs.device("c", driver="dc")
    d = sysfs.device("d", driver="dd")
    unbound = sysfs.device("e")              # no driver: nothing to release
    for sup, con in ((("a", a), ("b", b)), (("b", b), ("c", c)), (("a", a), ("c", c)),
                     (("c", c), ("d", d)), (("d", d), ("a", a)), (("a", a), ("e", unbound))):
        sysfs.link(("platform", *sup), ("platform", *con), "active")
    found = unbind_dependents(sysfs.fs, "platform", "a")
    assert [(x.name, x.chain, x.suppliers) for x in found] == [
        ("b", ("a", "b"), ("a",)),
        ("c", ("a", "c"), ("a", "b")),      # found through a first, b also supplies it
        ("d", ("a", "c", "d"), ("c",)),     # the cycle back to a stops there
    ]
    assert render_dependent(found[2], ["the host console"]) == \
        "a -> c (dc) -> d (dd) -> the host console"
    assert [x.name for x in reprobe_order(found)] == ["b", "c", "d"]


def test_reprobe_order_puts_suppliers_first() -> None:
    def dep(name: str, suppliers: tuple[str, ...]) -> Dependent:
        return Dependent("platform", name, "drv", f"/sys/devices/platform/{name}", None,
                         ("x", name), ("drv",), suppliers, True)

    given = [dep("c", ("x", "b")), dep("b", ("x",)), dep("d", ("c", "b"))]
    assert [d.name for d in reprobe_order(given)] == ["b", "c", "d"]
    cycle = [dep("p", ("q",)), dep("q", ("p",))]
    assert [d.name for d in reprobe_order(cycle)] == ["p", "q"]  # a cycle: as found


def test_forbidden_unbind_of_the_device(sysfs: Sysfs) -> None:
    sysfs.device("gpio", driver="pinctrl-x", unbind=False)
    (sysfs.root / "proc").mkdir()
    (sysfs.root / "proc/kallsyms").write_text(
        "ffff0001 t x_pinctrl_probe\nffff0002 t x_pinctrl_driver_init\nffff0003 T pinctrl_init\n"
        "ffff0004 t x_pinctrl_gpio_init [x_pinctrl_mod]\n")
    with pytest.raises(UnbindForbiddenError) as caught:
        refuse_forbidden_unbind(sysfs.fs, "platform", "gpio", "pinctrl-x", [])
    error = caught.value
    assert error.code == "unbind-forbidden"
    assert "gpio is bound to pinctrl-x, which forbids unbinding (suppress_bind_attrs: " \
           "/sys/bus/platform/drivers/pinctrl-x has no unbind file)" in error.what
    assert "nothing was written" in error.what
    assert "built into the kernel (no /sys/bus/platform/drivers/pinctrl-x/module link)" \
        in error.fix
    assert "initcall_blacklist=x_pinctrl_driver_init" in error.fix


def test_forbidden_unbind_of_a_dependent_names_the_chain(sysfs: Sysfs) -> None:
    sup = sysfs.device("clk", driver="clk-drv")
    con = sysfs.device("pins", driver="pinctrl-y", unbind=False)
    sysfs.link(("platform", "clk", sup), ("platform", "pins", con), "active")
    dependents = unbind_dependents(sysfs.fs, "platform", "clk")
    assert [d.can_unbind for d in dependents] == [False]
    refuse_forbidden_unbind(sysfs.fs, "platform", "pins", None, [])  # unbound: nothing to do
    with pytest.raises(UnbindForbiddenError) as caught:
        refuse_forbidden_unbind(sysfs.fs, "platform", "clk", "clk-drv", dependents)
    assert "unbinding clk makes the kernel release pins (clk -> pins (pinctrl-y)), and " \
           "pinctrl-y (on pins) forbids unbinding" in caught.value.what
    # no kallsyms: the fix says how to find the init function
    assert "X_init" in caught.value.fix and "initcall_debug" in caught.value.fix


def test_driver_origin_module_and_builtin(sysfs: Sysfs) -> None:
    sysfs.device("mmc", driver="sdhost-bcm2835")
    module = sysfs.root / "sys/module/bcm2835"
    module.mkdir(parents=True)
    os.symlink(os.path.relpath(module, sysfs.root / "sys/bus/platform/drivers/sdhost-bcm2835"),
               sysfs.root / "sys/bus/platform/drivers/sdhost-bcm2835/module")
    origin = driver_origin(sysfs.fs, "platform", "sdhost-bcm2835")
    assert (origin.module, origin.builtin, origin.init_functions) == ("bcm2835", None, ())

    sysfs.device("gpio", driver="pinctrl-bcm2835", unbind=False)
    (sysfs.root / "proc/sys/kernel").mkdir(parents=True)
    (sysfs.root / "proc/sys/kernel/osrelease").write_text("6.12.0-test\n")
    (sysfs.root / "lib/modules/6.12.0-test").mkdir(parents=True)
    (sysfs.root / "lib/modules/6.12.0-test/modules.builtin").write_text(
        "kernel/drivers/pinctrl/pinctrl-other.ko\nkernel/drivers/pinctrl/bcm/pinctrl-bcm2835.ko\n")
    origin = driver_origin(sysfs.fs, "platform", "pinctrl-bcm2835")
    assert origin.module is None
    assert origin.builtin == "kernel/drivers/pinctrl/bcm/pinctrl-bcm2835.ko"
    with pytest.raises(UnbindForbiddenError) as caught:
        refuse_forbidden_unbind(sysfs.fs, "platform", "gpio", "pinctrl-bcm2835", [])
    assert "listed in modules.builtin as kernel/drivers/pinctrl/bcm/pinctrl-bcm2835.ko" \
        in caught.value.fix


def test_forbidden_module_driver_suggests_blacklisting(sysfs: Sysfs) -> None:
    sysfs.device("dev", driver="foo-drv", unbind=False)
    module = sysfs.root / "sys/module/foo"
    module.mkdir(parents=True)
    os.symlink(os.path.relpath(module, sysfs.root / "sys/bus/platform/drivers/foo-drv"),
               sysfs.root / "sys/bus/platform/drivers/foo-drv/module")
    with pytest.raises(UnbindForbiddenError) as caught:
        refuse_forbidden_unbind(sysfs.fs, "platform", "dev", "foo-drv", [])
    fix = caught.value.fix
    assert "the loadable module foo" in fix
    assert "blacklist foo" in fix and "install foo /bin/false" in fix
    assert "module_blacklist=foo" in fix and "modprobe -r foo" in fix


def test_unreadable_or_odd_entries_are_ignored(sysfs: Sysfs) -> None:
    real = sysfs.device("odd", driver="d")
    base = sysfs.root / real.lstrip("/")
    (base / "consumer:nobus").mkdir()           # no second ':'
    (base / "supplier:platform:gone").symlink_to("/nonexistent/devlink")
    (base / "consumers").mkdir()                  # not "consumer:"
    assert device_links(sysfs.fs, "/sys/bus/platform/devices/odd") == ([], [])
    assert device_links(sysfs.fs, "/sys/bus/platform/devices/missing") == ([], [])
