"""Checks before a detach, and the reasons of a failed probe.

Each check predicts a refusal of the kernel and says how to fix it before
anything is written:

* the vfio driver of the bus is registered (``modprobe`` through an injected
  process runner if not); Debian's stock arm64 kernels lack VFIO_PLATFORM,
  VFIO_AMBA and VFIO_NOIOMMU;
* the device has an IOMMU group, or vfio's no-IOMMU mode is on (else the probe
  fails with EINVAL: drivers/vfio/group.c vfio_group_find_or_alloc());
* vfio-platform with reset_required=1 has a reset handler for the device's
  first compatible (module alias ``vfio-reset:<compatible>``; else ENOENT:
  drivers/vfio/platform/vfio_platform_common.c vfio_platform_get_reset());
* no process holds the device's VFIO group open (an unbind would block:
  drivers/vfio/vfio_main.c vfio_unregister_group_dev() waits for the users).

A probe that fails anyway is explained from the kernel log and, failing that,
from the device's state; Debian 6.1's reset bug is recognised by behaviour
(ENOENT with reset_required off), the kernel version is only a hint.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.attributes import read_bool_param
from platform_hostdev.host.fs import HostFs, is_noiommu, read_driver_override
from platform_hostdev.host.kmsg import probe_failure
from platform_hostdev.host.processes import ModprobeRunner
from platform_hostdev.vfio.uapi import VFIO_DRIVERS, VFIO_MODULES

__all__ = [
    "NOIOMMU_PARAM",
    "RESET_REQUIRED_PARAM",
    "UPSTREAM_RESET_HANDLERS",
    "RESET_RISK",
    "RESET_REQUIRED_FIX",
    "Target",
    "DeviceState",
    "device_state",
    "node_holders",
    "BindingError",
    "VfioUnavailableError",
    "NoIommuError",
    "ResetRequiredError",
    "DeviceInUseError",
    "ProbeFailedError",
    "ensure_vfio_driver",
    "check_iommu",
    "check_reset",
    "has_reset_handler",
    "kernel_release",
    "vfio_holders",
    "is_noiommu",
    "explain_probe_failure",
]

NOIOMMU_PARAM = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"
RESET_REQUIRED_PARAM = "/sys/module/vfio_platform/parameters/reset_required"
UPSTREAM_RESET_HANDLERS = ("calxeda,hb-xgmac", "amd,xgbe-seattle-v1a", "brcm,iproc-flexrm-mbox")
"""First compatibles with a vfio-platform reset module upstream (alias vfio-reset:<compat>)."""
RESET_RISK = ("the device is then not reset between host and guest use, so its state and any "
              "DMA it has set up carry over")
"""What reset_required=0 costs (said wherever it is suggested)."""
RESET_REQUIRED_FIX = (
    "load vfio-platform with reset_required=0 (modprobe -r vfio-platform; modprobe "
    "vfio-platform reset_required=0, or vfio_platform.reset_required=0 on the kernel "
    f"command line). Risk: {RESET_RISK}")
"""The fix for a device vfio-platform refuses for want of a reset handler (reset_required=1:
drivers/vfio/platform/vfio_platform_common.c vfio_platform_probe_common())."""

class Target(Protocol):
    """What binding needs of a device (inventory.Device has it)."""

    @property
    def name(self) -> str: ...
    @property
    def bus(self) -> str: ...
    @property
    def compatible(self) -> Sequence[str]: ...



class BindingError(HostdevError):
    """A detach/reattach that was refused or failed."""

    code = "host-state"


class VfioUnavailableError(BindingError):
    """The kernel has no vfio-platform / vfio-amba driver."""

    code = "vfio-unavailable"


class NoIommuError(BindingError):
    """No IOMMU group and vfio's no-IOMMU mode is off."""

    code = "no-iommu"


class ResetRequiredError(BindingError):
    """vfio-platform requires a reset handler the device has not."""

    code = "reset-required"


class DeviceInUseError(BindingError):
    """A process holds the device's VFIO group open."""

    code = "device-in-use"


class ProbeFailedError(BindingError):
    """drivers_probe left the device without the expected driver."""

    code = "probe-failed"


class DeviceState(NamedTuple):
    """A device's binding as sysfs shows it now."""

    driver: str | None
    override: str | None
    iommu_group: str | None



def device_dir(bus: str, name: str) -> str:
    return f"/sys/bus/{bus}/devices/{name}"


def device_state(fs: HostFs, bus: str, name: str) -> DeviceState:
    """Driver, driver_override and IOMMU group of a device, read now."""
    ddir = device_dir(bus, name)
    return DeviceState(
        driver=fs.link_name(ddir + "/driver"),
        override=read_driver_override(fs, ddir),
        iommu_group=fs.link_name(ddir + "/iommu_group"),
    )


def ensure_vfio_driver(fs: HostFs, bus: str, modprobe: ModprobeRunner | None) -> None:
    """Load the bus's vfio module (through ``modprobe``) unless its driver is registered."""
    driver, module = VFIO_DRIVERS[bus], VFIO_MODULES[bus]
    drivers_dir = f"/sys/bus/{bus}/drivers/{driver}"
    if fs.path(drivers_dir).is_dir():
        return
    detail = "no modprobe attempted (no process runner)"
    if modprobe is not None:
        import subprocess

        try:
            done = modprobe(["modprobe", module])
        except (OSError, subprocess.SubprocessError) as exc:
            detail = f"modprobe {module} could not run: {exc}"
        else:
            if done.returncode == 0 and fs.path(drivers_dir).is_dir():
                return
            detail = (f"modprobe {module} exited {done.returncode}"
                      + (f": {done.stderr.strip()}" if done.stderr and done.stderr.strip() else ""))
    config = "CONFIG_VFIO_PLATFORM" if bus == "platform" else "CONFIG_VFIO_AMBA"
    raise VfioUnavailableError(
        f"the {driver} driver is not registered on the {bus} bus ({drivers_dir} is missing; "
        f"{detail})",
        f"load the {module} module; if it does not exist the kernel lacks {config} "
        "(Debian's stock arm64 kernels do not enable VFIO_PLATFORM, VFIO_AMBA or "
        "VFIO_NOIOMMU): use a kernel that has them or build the modules out of tree",
        bus=bus, driver=driver, module=module)


def check_iommu(fs: HostFs, name: str, state: DeviceState) -> None:
    if state.iommu_group is not None:
        return
    noiommu = read_bool_param(fs, NOIOMMU_PARAM)
    if noiommu:
        return
    if noiommu is None:
        tail = ("this kernel's vfio has no no-IOMMU mode (CONFIG_VFIO_NOIOMMU is off, "
                f"{NOIOMMU_PARAM} is missing)")
    else:
        tail = (f"or, for tests and trusted user-space drivers only: echo 1 > {NOIOMMU_PARAM} "
                "(unsafe: no DMA isolation, taints the kernel, and QEMU cannot use "
                "no-IOMMU groups)")
    raise NoIommuError(
        f"{name} has no IOMMU group (no iommu_group link) and vfio's no-IOMMU mode is off: "
        "vfio would refuse it (probe fails with EINVAL)",
        "put the device behind an enabled IOMMU (an 'iommus' property to an SMMU); " + tail,
        device=name)


def kernel_release(fs: HostFs) -> str | None:
    text = fs.read_text("/proc/sys/kernel/osrelease")
    return text.strip() if text else None


def has_reset_handler(fs: HostFs, compatible: str) -> bool:
    """Whether a vfio-reset:<compatible> module alias exists (loadable or built in)."""
    release = kernel_release(fs)
    if not release:
        return False
    needle = f"alias vfio-reset:{compatible} "
    for table in ("modules.alias", "modules.builtin.alias"):
        text = fs.read_text(f"/lib/modules/{release}/{table}") or ""
        if any(line.startswith(needle) for line in text.splitlines()):
            return True
    return False


def check_reset(fs: HostFs, target: Target) -> None:
    if target.bus != "platform" or read_bool_param(fs, RESET_REQUIRED_PARAM) is not True:
        return
    first = target.compatible[0] if target.compatible else ""
    if first and has_reset_handler(fs, first):
        return
    raise ResetRequiredError(
        f"vfio-platform requires a reset handler (reset_required=1) and there is none for "
        f"{target.name} (first compatible {first!r}; upstream handlers exist only for "
        f"{', '.join(UPSTREAM_RESET_HANDLERS)})",
        RESET_REQUIRED_FIX, device=target.name, compatible=first)


def vfio_holders(fs: HostFs, group: str) -> list[tuple[int, str]]:
    """(pid, command) of processes with /dev/vfio/<group> or noiommu-<group> open."""
    return node_holders(fs, {f"/dev/vfio/{group}", f"/dev/vfio/noiommu-{group}"})


def node_holders(fs: HostFs, nodes: set[str]) -> list[tuple[int, str]]:
    """(pid, command) of processes with one of ``nodes`` (host paths) open."""
    proc = fs.path("/proc")
    holders = []
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            targets = {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}
        except OSError:
            continue
        if targets & nodes:
            comm = (fs.read_text(f"/proc/{pid}/comm") or "?").strip()
            holders.append((pid, comm))
    return holders



def _suppliers_not_ready(fs: HostFs, target: Target) -> list[str]:
    """Suppliers whose managed link keeps the device from probing (not "available")."""
    from platform_hostdev.host.devlinks import device_links  # the hook imports preflight

    suppliers, _ = device_links(fs, device_dir(target.bus, target.name))
    return [f"{lk.name} ({lk.status})" for lk in suppliers
            if lk.managed and not lk.sync_state_only and lk.status not in ("available", "active")]


def explain_probe_failure(fs: HostFs, target: Target, messages: list[str],
                           state: DeviceState) -> ProbeFailedError:
    vfio = VFIO_DRIVERS[target.bus]
    failure = probe_failure(messages, target.name)
    err = failure[1] if failure else None
    logged = f"kernel: probe with driver {vfio} failed with error -{err}" if err else \
        "the kernel log gave no reason"
    reset_required = read_bool_param(fs, RESET_REQUIRED_PARAM) and target.bus == "platform"
    no_reset_line = any("No reset function found" in m and target.name in m for m in messages)
    release = kernel_release(fs) or ""
    if no_reset_line or (err == errno.ENOENT and reset_required):
        what = f"{vfio} refused {target.name}: no reset handler and reset_required=1 ({logged})"
        fix = RESET_REQUIRED_FIX
    elif err == errno.ENOENT:
        hint = f" (this kernel is {release})" if release.startswith("6.1.") else ""
        what = (f"{vfio} refused {target.name} with ENOENT although no reset is required "
                f"({logged}): the vfio-platform reset bug of Debian 6.1 kernels{hint}")
        fix = "use a 6.12 or newer kernel (the bug is fixed there)"
    elif err == errno.EINVAL or (err is None and state.iommu_group is None
                                 and not read_bool_param(fs, NOIOMMU_PARAM)):
        what = (f"{vfio} refused {target.name}: it has no IOMMU group and vfio's no-IOMMU "
                f"mode is off ({logged})")
        fix = ("put the device behind an IOMMU, or for tests only: echo 1 > "
               f"{NOIOMMU_PARAM} (unsafe)")
    elif err is not None:
        what = f"{vfio} refused {target.name}: {os.strerror(err)} ({logged})"
        fix = "see dmesg for the driver's messages about the device"
    elif waiting := _suppliers_not_ready(fs, target):
        what = (f"the kernel deferred {target.name}'s probe with {vfio} (EPROBE_DEFER, not "
                f"logged): its supplier{'s' if len(waiting) > 1 else ''} "
                f"{', '.join(waiting)} {'have' if len(waiting) > 1 else 'has'} no driver "
                "(device links, drivers/base/core.c device_links_check_suppliers)")
        fix = "bind the supplier first, or choose a device whose suppliers are bound"
    else:
        what = (f"{target.name} is not bound to {vfio} after drivers_probe "
                f"(driver now: {state.driver or 'none'}; {logged})")
        fix = "see dmesg; check that driver_override reads the vfio driver"
    return ProbeFailedError(what + "; the device was put back as it was", fix,
                            device=target.name, driver=vfio, errno=err)


