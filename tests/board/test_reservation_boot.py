"""Boot-time reservation on a real kernel: the virt board booted twice with the same state.

Debian's 6.12 kernel on QEMU virt, real systemd-udevd (Debian's udev 252) and the
shipped 60-platform-hostdev.rules, coldplug by ``udevadm trigger --action=add`` as a
real boot does it (tests/board/reserve_boot.sh). The device is 9020000.fw-cfg
(/fw-cfg@9020000), whose host driver fw_cfg is the module qemu_fw_cfg
(CONFIG_FW_CFG_SYSFS=m): /init does not load it, udev's kmod builtin does on the
device's MODALIAS. The module creates /sys/firmware/qemu_fw_cfg at init and its
probe adds ``rev`` there (drivers/firmware/qemu_fw_cfg.c fw_cfg_sysfs_init,
fw_cfg_sysfs_probe): ``rev`` missing with the module loaded means fw_cfg never
probed the device.

Boot 1, nothing reserved: the module binds the device; ``nodedev-detach
--persistent`` moves it to vfio-platform and writes the reservation into a host
directory that boot 2 mounts on /etc/platform-hostdev again. Boot 2: the rule
binds vfio-platform during coldplug, the module loads and leaves the device alone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from board.run import run_in_guest

pytestmark = pytest.mark.board

DEVICE, DT_PATH = "9020000.fw-cfg", "/fw-cfg@9020000"
TIMEOUT = float(os.environ.get("PLATFORM_HOSTDEV_BOARD_TIMEOUT", "600"))


def boot(out: Path, phase: int) -> dict[str, str]:
    result = run_in_guest(["sh", "tests/board/reserve_boot.sh", str(phase)], TIMEOUT,
                          out_dir=out, machine="virt")
    facts_file = out / f"boot{phase}" / "facts"
    assert result.exit_code == 0 and facts_file.is_file(), result.output[-4000:]
    facts = dict(line.split("=", 1) for line in facts_file.read_text().splitlines())
    print(f"boot {phase}: coldplug (trigger + settle) {facts['coldplug_seconds']} s, "
          f"boot to /init {result.boot_time:.1f} s")
    return facts


def listing(out: Path, phase: int) -> dict[str, dict[str, object]]:
    return {d["name"]: d for d in json.loads((out / f"boot{phase}/list.json").read_text())}


def test_a_reserved_device_comes_up_on_vfio_and_its_module_never_probes_it(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = boot(out, 1)
    # without a reservation, udev's coldplug loads qemu_fw_cfg and it binds the device
    assert first["reserved_before"] == "" and first["module_before_udev"] == "absent"
    assert first["driver_before_udev"] == ""
    assert (first["module"], first["driver"], first["fw_cfg_probed"]) == \
        ("loaded", "fw_cfg", "yes")
    assert first["detach_rc"] == "0", (out / "boot1/detach.err").read_text()
    detached = json.loads((out / "boot1/detach.json").read_text())
    assert (detached["device"], detached["driver"], detached["reserved"]) == \
        (DEVICE, "vfio-platform", DT_PATH)
    assert detached["original_driver"] == "fw_cfg"
    assert listing(out, 1)[DEVICE]["reserved"] is True
    reserved = (out / "etc-platform-hostdev/reserved").read_text()
    assert [line for line in reserved.splitlines() if not line.startswith("#")] == [DT_PATH]

    second = boot(out, 2)
    assert second["reserved_before"].split() == [DT_PATH]
    assert second["driver_before_udev"] == "" and second["module_before_udev"] == "absent"
    assert second.get("settle") is None
    # the rule bound vfio-platform; udev loaded the module, whose driver never probed it
    assert (second["driver"], second["driver_override"]) == ("vfio-platform", "vfio-platform")
    assert (second["module"], second["fw_cfg_driver"], second["fw_cfg_probed"]) == \
        ("loaded", "registered", "no")
    assert second["journal"] == "0"  # bound by the rule, not moved by a detach
    # udevd ran the rule's program on the device's add event, before it loaded the module
    log = [line for line in (out / "boot2/udevd.log").read_text().splitlines()
           if line.startswith(f"{DEVICE}:") or "Loading module: of:Nfw-cfg" in line]
    ran = [i for i, line in enumerate(log) if "60-platform-hostdev.rules" in line
           and "platform-hostdev reserve-apply --udev" in line]
    loads = [i for i, line in enumerate(log) if "Loading module: of:Nfw-cfg" in line]
    assert ran and loads and ran[0] < loads[0], "\n".join(log)
    assert "PLATFORM_HOSTDEV_RESERVED=1" in "\n".join(log[ran[0]:loads[0]])
    dmesg = (out / "boot2/dmesg").read_text()
    assert "vfio-noiommu" in dmesg or "noiommu" in dmesg
    device = listing(out, 2)[DEVICE]
    assert (device["driver"], device["reserved"]) == ("vfio-platform", True)
    checks = {c["check"]: c for c in json.loads((out / "boot2/check-host.json").read_text())}
    assert checks[f"boot reservation {DT_PATH}"]["status"] == "PASS", checks
