"""platform-hostdev: device-tree platform/AMBA device passthrough for libvirt.

The public API: everything a program (the oVirt VDSM hook, the command line,
your own tools) needs, importable from the package itself::

    import platform_hostdev as phd

    host = phd.host_at("/")                       # the live host (or a root below)
    inventory = phd.load_inventory(host)          # every platform/amba device
    device = inventory.resolve("ethernet0")       # DT path, sysfs name, alias
    print(phd.correlate(inventory.tree, device, inventory.page_size()).verdict)
    result = phd.detach(host, device)             # bound to vfio-platform
    phd.reattach(host, device)                    # back to its driver

* **The host boundary**: :class:`Host` (filesystem root, uevent waiter,
  modprobe, the QEMU runners, clocks, pid check), :func:`host_at`,
  :func:`live_host`.
* **Inventory**: :func:`load_inventory`, :class:`Inventory`, :class:`Device`,
  :func:`check_spec`.
* **Correlation**: :func:`correlate`, :class:`Correlation` (VFIO region/IRQ i
  <-> the DT ``reg``/``interrupts`` entry).
* **Translation** both ways: :func:`forward` (the user form with
  ``<hostdev type='platform'>`` -> what libvirt accepts), :func:`backward`,
  :class:`Translation`, :func:`parse_xml`, :func:`to_string`,
  :class:`PlatformHostdev`, :func:`platform_hostdev_elements`,
  :func:`is_platform_hostdev`, :func:`add_device`, :func:`remove_device`.
* **Define and sync**: :func:`prepare_domain`, :func:`define_domain`,
  :func:`sync` (a defined domain's guest device tree), :func:`sync_domain`
  (the guest DT of a domain XML, not defined), :class:`DefineResult`,
  :class:`SyncResult`.
* **Binding**: :func:`detach`, :func:`reattach`, :func:`recover` (the journal
  of interrupted operations), :func:`recover_host` (that, then the devices of
  domains that are gone), :func:`refuse_if_host_uses`, :func:`host_usage`,
  :func:`refuse_unsafe_detach` and :class:`UnbindImpact` (what an unbind
  takes with it through the kernel's device links), :func:`link_view`,
  :class:`LinkView`.
* **Boot-time reservations**: :class:`Reservations` (the DT paths in
  /etc/platform-hostdev/reserved), :func:`refuse_unsafe_reservation`,
  :func:`apply_reservations` (what the boot unit does) and
  :class:`AppliedReservation`, :class:`ReservationError`.
* **check-host**: :func:`check_host`, :class:`Check`.
* **Errors**: :class:`HostdevError` and its subclasses, each with a stable
  ``code`` (:data:`CODES`).

The names load lazily (module ``__getattr__``): ``import platform_hostdev``
costs nothing, and ``import platform_hostdev.hook.qemu`` (the libvirt hook, on
every domain start) loads none of this.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_H = "platform_hostdev."
_EXPORTS: dict[str, str] = {
    # the host boundary
    "Host": "host.boundary",
    "host_at": "host.boundary",
    "live_host": "host.boundary",
    # inventory
    "load_inventory": "host.inventory",
    "Inventory": "host.inventory",
    "Device": "host.inventory",
    "check_spec": "host.specs",
    # correlation
    "correlate": "vfio.correlate",
    "Correlation": "vfio.correlate",
    # translation
    "forward": "domain.translate",
    "backward": "domain.translate",
    "Translation": "domain.translate",
    "to_string": "domain.translate",
    "platform_hostdev_elements": "domain.translate",
    "add_device": "domain.translate",
    "remove_device": "domain.translate",
    "parse_xml": "domain.hostdev",
    "PlatformHostdev": "domain.hostdev",
    "is_platform_hostdev": "domain.hostdev",
    # define and sync
    "prepare_domain": "guestdt.define",
    "define_domain": "guestdt.define",
    "sync": "guestdt.define",
    "Prepared": "guestdt.define",
    "DefineResult": "guestdt.define",
    "sync_domain": "guestdt.sync",
    "SyncResult": "guestdt.sync",
    # binding
    "DEFAULT_TIMEOUT": "binding.operations",
    "detach": "binding.operations",
    "reattach": "binding.operations",
    "recover": "binding.operations",
    "DetachResult": "binding.operations",
    "ReattachResult": "binding.operations",
    "RecoverAction": "binding.operations",
    "recover_host": "hook.qemu",
    "StaleRelease": "hook.qemu",
    "refuse_if_host_uses": "host.protection",
    "host_usage": "host.protection",
    "HostUse": "host.protection",
    "refuse_unsafe_detach": "host.protection",
    "refuse_unsafe_reservation": "host.protection",
    "Reservations": "binding.reservations",
    "ReservationError": "binding.reservations",
    "apply_reservations": "binding.boot",
    "AppliedReservation": "binding.boot",
    "UnbindImpact": "host.protection",
    "link_view": "host.devlinks",
    "LinkView": "host.devlinks",
    # check-host
    "check_host": "checkhost.run",
    "Check": "checkhost.model",
    # errors
    "CODES": "errors",
    "HostdevError": "errors",
    "DeviceTreeError": "errors",
    "DeviceNotFoundError": "errors",
    "InvalidDeviceSpecError": "errors",
    "HostError": "errors",
    "XmlError": "errors",
    "BindingError": "binding.preflight",
    "VfioUnavailableError": "binding.preflight",
    "NoIommuError": "binding.preflight",
    "ResetRequiredError": "binding.preflight",
    "DeviceInUseError": "binding.preflight",
    "ProbeFailedError": "binding.preflight",
    "AlreadyDetachedError": "binding.operations",
    "NotDetachedError": "binding.operations",
    "RestoreError": "binding.operations",
    "InterruptedOperationError": "binding.operations",
    "HostUseError": "host.protection",
    "ConsumerWouldUnbindError": "host.protection",
    "UnbindForbiddenError": "host.devlinks",
    "UeventTimeoutError": "host.uevents",
    "LibvirtError": "virt.connection",
    "VfioError": "vfio.client",
}

__all__ = [
    "AlreadyDetachedError", "AppliedReservation", "BindingError", "CODES", "Check",
    "ConsumerWouldUnbindError", "Correlation", "DEFAULT_TIMEOUT", "DefineResult", "DetachResult",
    "Device", "DeviceInUseError", "DeviceNotFoundError", "DeviceTreeError", "Host", "HostError",
    "HostUse", "HostUseError", "HostdevError", "InterruptedOperationError",
    "InvalidDeviceSpecError", "Inventory", "LibvirtError", "LinkView", "NoIommuError",
    "NotDetachedError", "PlatformHostdev", "Prepared", "ProbeFailedError", "ReattachResult",
    "RecoverAction", "ReservationError", "Reservations", "ResetRequiredError", "RestoreError",
    "StaleRelease", "SyncResult", "Translation", "UeventTimeoutError", "UnbindForbiddenError",
    "UnbindImpact", "VfioError", "VfioUnavailableError", "XmlError", "add_device",
    "apply_reservations", "backward", "check_host", "check_spec", "correlate", "define_domain",
    "detach", "forward", "host_at", "host_usage", "is_platform_hostdev", "link_view", "live_host",
    "load_inventory", "parse_xml", "platform_hostdev_elements", "prepare_domain", "reattach",
    "recover", "recover_host", "refuse_if_host_uses", "refuse_unsafe_detach",
    "refuse_unsafe_reservation", "remove_device", "sync", "sync_domain", "to_string",
]
"""The public names (``_EXPORTS`` says where each lives)."""

if TYPE_CHECKING:  # what mypy and pdoc see; at run time __getattr__ loads each on first use
    from platform_hostdev.binding.boot import AppliedReservation, apply_reservations
    from platform_hostdev.binding.operations import (
        DEFAULT_TIMEOUT,
        AlreadyDetachedError,
        DetachResult,
        InterruptedOperationError,
        NotDetachedError,
        ReattachResult,
        RecoverAction,
        RestoreError,
        detach,
        reattach,
        recover,
    )
    from platform_hostdev.binding.preflight import (
        BindingError,
        DeviceInUseError,
        NoIommuError,
        ProbeFailedError,
        ResetRequiredError,
        VfioUnavailableError,
    )
    from platform_hostdev.binding.reservations import ReservationError, Reservations
    from platform_hostdev.checkhost.model import Check
    from platform_hostdev.checkhost.run import check_host
    from platform_hostdev.domain.hostdev import PlatformHostdev, is_platform_hostdev, parse_xml
    from platform_hostdev.domain.translate import (
        Translation,
        add_device,
        backward,
        forward,
        platform_hostdev_elements,
        remove_device,
        to_string,
    )
    from platform_hostdev.errors import (
        CODES,
        DeviceNotFoundError,
        DeviceTreeError,
        HostdevError,
        HostError,
        InvalidDeviceSpecError,
        XmlError,
    )
    from platform_hostdev.guestdt.define import (
        DefineResult,
        Prepared,
        define_domain,
        prepare_domain,
        sync,
    )
    from platform_hostdev.guestdt.sync import SyncResult, sync_domain
    from platform_hostdev.hook.qemu import StaleRelease, recover_host
    from platform_hostdev.host.boundary import Host, host_at, live_host
    from platform_hostdev.host.devlinks import LinkView, UnbindForbiddenError, link_view
    from platform_hostdev.host.inventory import Device, Inventory, load_inventory
    from platform_hostdev.host.protection import (
        ConsumerWouldUnbindError,
        HostUse,
        HostUseError,
        UnbindImpact,
        host_usage,
        refuse_if_host_uses,
        refuse_unsafe_detach,
        refuse_unsafe_reservation,
    )
    from platform_hostdev.host.specs import check_spec
    from platform_hostdev.host.uevents import UeventTimeoutError
    from platform_hostdev.vfio.client import VfioError
    from platform_hostdev.vfio.correlate import Correlation, correlate
    from platform_hostdev.virt.connection import LibvirtError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'platform_hostdev' has no attribute {name!r}")
    import sys

    __import__(_H + module)
    value = getattr(sys.modules[_H + module], name)
    globals()[name] = value  # the next look-up does not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
