"""check-host as a library: every check of a host, and of a domain when one is given.

:func:`check_host` returns the :class:`~platform_hostdev.checkhost.model.Check`
list in the order ``platform-hostdev check-host`` prints it; nothing is
printed. :func:`~platform_hostdev.checkhost.model.exit_code` turns it into
the command's exit code.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from platform_hostdev.checkhost.conf import load_qemu_conf, qemu_conf_checks, security_checks
from platform_hostdev.checkhost.devices import (
    DeviceNodes,
    device_checks,
    guest_check,
    requested_hostdevs,
)
from platform_hostdev.checkhost.iommufd import iommufd_host_checks
from platform_hostdev.checkhost.model import (
    FAIL,
    PASS,
    WARN,
    Check,
    hook_checks,
    memory_check,
    module_checks,
    qemu_check,
)
from platform_hostdev.checkhost.reservations import reservation_checks
from platform_hostdev.domain.translate import forward
from platform_hostdev.domain.validate import domain_emulator
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.boundary import Host
from platform_hostdev.host.fs import DT_BASE
from platform_hostdev.host.inventory import Inventory, load_inventory
from platform_hostdev.host.processes import QemuProbeRunner
from platform_hostdev.virt.qemu_caps import check_iommufd, probe, probe_properties

__all__ = ["check_host"]


def check_host(host: Host, tree: etree._ElementTree | None = None, *, conn: Any = None,
               cache: Path | None = None,
               inventory: Callable[[], Inventory] | None = None) -> list[Check]:
    """Every check, in the order printed; ``tree`` is a domain XML (user or libvirt form).

    ``conn`` (a libvirt connection) names the default emulator of a domain
    without <emulator>; ``cache`` keeps QEMU probe results; ``inventory``
    gives the devices to check the domain's hostdevs against (called only when
    it has some; default: the host's own, ``load_inventory(host)``).
    """
    fs = host.fs
    checks = module_checks(fs, host.modprobe)
    nodes = DeviceNodes([], [], True)
    emulator = None
    iommufd = False
    if tree is not None:
        hostdevs, parsed = requested_hostdevs(tree)
        checks += parsed
        iommufd = any(h.iommufd for h in hostdevs)
        root = tree.getroot()
        checks.append(guest_check(root))
        if not fs.path("/" + DT_BASE).is_dir():
            checks.append(Check("device tree", FAIL, f"/{DT_BASE} is missing: this host was "
                                "not booted with a device tree, so it has no platform devices "
                                "to pass through", "run check-host on the DT-booted arm64 host"))
        elif hostdevs:
            devices = inventory() if inventory is not None else load_inventory(host)
            found, nodes = device_checks(fs, devices, hostdevs)
            checks += found
            try:
                root = forward(tree, devices).tree.getroot()
            except HostdevError:
                pass  # already reported by the checks above; judge the XML as given
        if hostdevs:
            checks.append(memory_check(root))
        try:
            emulator = domain_emulator(root, conn)
        except HostdevError as exc:
            checks.append(Check("QEMU vfio-platform", FAIL, exc.what, exc.fix))
    emulator = emulator or shutil.which("qemu-system-aarch64")
    runner = host.qemu_probe
    if runner is None:
        checks.append(Check("QEMU vfio-platform", WARN, f"{emulator or 'the emulator'} was not "
                            "probed (this host has no QEMU probe)",
                            "run check-host on the host itself"))
    else:
        checks.append(qemu_check(emulator, lambda e: probe(e, runner, cache)))
        if iommufd and emulator is not None:
            checks.append(_qemu_iommufd(emulator, runner, cache))
    if tree is None or iommufd:  # the host alone: could it serve the iommufd backend?
        checks += iommufd_host_checks(fs, host.modprobe, iommufd)
    conf = load_qemu_conf(fs)
    checks += qemu_conf_checks(fs, conf, nodes.groups, tree is not None, nodes.iommufd,
                               nodes.legacy)
    checks += security_checks(fs, conf, iommufd)
    checks += hook_checks(fs)
    checks += reservation_checks(fs)
    return checks


def _qemu_iommufd(emulator: str, runner: QemuProbeRunner, cache: Path | None) -> Check:
    """vfio-platform of the emulator has the iommufd link property."""
    try:
        check_iommufd(emulator, "vfio-platform",
                      probe_properties(emulator, "vfio-platform", runner, cache))
    except HostdevError as exc:
        return Check("QEMU iommufd", FAIL, exc.what, exc.fix)
    return Check("QEMU iommufd", PASS, f"vfio-platform of {emulator} has the iommufd property")
