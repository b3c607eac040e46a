"""The kernel's device links around a device, and what unbinding it takes with it.

What sysfs shows (drivers/base/core.c, Linux 6.12): every device link is a
device of class ``devlink``, ``/sys/class/devlink/<sbus>:<supplier>--<cbus>:<consumer>``,
with ``status`` (status_show: "not tracked" for a stateless link, else
"dormant", "available", "consumer probing", "active", "supplier unbinding"),
``sync_state_only``, ``auto_remove_on`` ("supplier unbind", "consumer unbind",
"never"), ``runtime_pm`` and ``supplier``/``consumer`` links to the two
devices; each end has a symlink to it, ``consumer:<bus>:<name>`` in the
supplier's directory and ``supplier:<bus>:<name>`` in the consumer's
(devlink_add_symlinks). fw_devlink makes them from DT references (drivers/of/
property.c of_supplier_bindings); drivers add more.

What an unbind takes with it: __device_release_driver() loops on
device_links_busy() and device_links_unbind_consumers(), which releases the
driver of every consumer whose link is managed (DL_FLAG_MANAGED: every link
but a stateless one), not SYNC_STATE_ONLY and "active"; a link in "consumer
probing" is waited for (wait_for_device_probe) and its consumer released if it
became active. The release goes through device_release_driver_internal(),
so the consumer's own consumers go first, transitively, and the consumer's
driver is released whether or not it sets ``suppress_bind_attrs`` (that flag
only hides the driver's ``bind``/``unbind`` files, drivers/base/bus.c
add_bind_files). :func:`unbind_dependents` predicts that set from sysfs.

When the supplier binds again, device_links_driver_bound() puts consumers of
links with DL_FLAG_AUTOPROBE_CONSUMER (fw_devlink's default) on the deferred
probe list, which is retried asynchronously; links with "auto_remove_on:
supplier unbind" are gone by then. Binding therefore re-probes the consumers
it recorded itself (binding/operations.py) instead of relying on either.

Not every dependency is a device link: fw_devlink treats some DT references
as optional (drivers/of/property.c of_supplier_bindings: ``dmas``, ``iommus``
and ``iommu-map`` with ``.optional = true`` only become links with
fw_devlink.strict=1), and a driver may take a resource through a property
fw_devlink does not parse. Unbinding the referenced device then releases
nothing: the user keeps running on channels or mappings that are gone (a
DMA engine's clients after dma_async_device_unregister()).
:func:`unlinked_dt_users` finds the bound devices whose DT node references
the device (or its own subtree) with no device link between them.

A driver without an ``unbind`` file forbids releasing its devices from user
space: :func:`refuse_forbidden_own` (the device's own driver) and
:func:`refuse_forbidden_dependents` (a dependent's, even with --force) say so,
name the driver and the way out, before anything is written. Everything here only reads.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from platform_hostdev.dt.phandles import phandle_links
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError, HostError
from platform_hostdev.host.fs import DT_BASE, HostFs

__all__ = [
    "DevLink",
    "Dependent",
    "DriverOrigin",
    "DtUser",
    "unlinked_dt_users",
    "LinkView",
    "UnbindForbiddenError",
    "device_links",
    "link_view",
    "unbind_dependents",
    "reprobe_order",
    "driver_dir_of",
    "driver_can_unbind",
    "driver_origin",
    "keep_driver_off",
    "refuse_forbidden_unbind",
    "refuse_forbidden_own",
    "refuse_forbidden_dependents",
    "forbidden_note",
    "way_out",
    "render_dependent",
]

HOLDING_STATES = frozenset({"active", "consumer probing"})
"""Link states in which unbinding the supplier releases the consumer's driver."""
_MAX_DEPENDENTS = 1024
_SYMBOL = re.compile(r"^[0-9a-fA-F]+ [tT] ([A-Za-z0-9_.]+)$")


class DevLink(NamedTuple):
    """One device link of a device, seen from that device: ``role`` is what the
    OTHER end is to it ("supplier" or "consumer")."""

    role: str
    bus: str                  # the other end's bus (dev_bus_name: its class when it has none)
    name: str                 # the other end's device name
    driver: str | None        # the other end's driver now
    sysfs_path: str | None    # the other end's /sys/devices/... path
    status: str
    sync_state_only: bool
    auto_remove_on: str
    runtime_pm: bool
    devlink: str              # /sys/class/devlink/<name>

    @property
    def managed(self) -> bool:
        """DL_FLAG_MANAGED: every link but a stateless one ("not tracked")."""
        return self.status != "not tracked"

    @property
    def holds_consumer(self) -> bool:
        """Whether unbinding the supplier releases the consumer's driver."""
        return self.managed and not self.sync_state_only and self.status in HOLDING_STATES

    def to_json(self) -> dict[str, object]:
        return {"bus": self.bus, "name": self.name, "driver": self.driver,
                "status": self.status, "sync_state_only": self.sync_state_only,
                "auto_remove_on": self.auto_remove_on, "runtime_pm": self.runtime_pm,
                "devlink": self.devlink}


class Dependent(NamedTuple):
    """A device that loses its driver when the device at the head of ``chain`` is unbound."""

    bus: str
    name: str
    driver: str
    sysfs_path: str
    dt_path: str | None
    chain: tuple[str, ...]          # device names from the unbound device to this one
    chain_drivers: tuple[str, ...]  # the drivers of chain[1:]
    suppliers: tuple[str, ...]      # names in the set (or the device) it depends on
    can_unbind: bool                # its driver has an unbind file

    def to_json(self) -> dict[str, object]:
        return {"bus": self.bus, "name": self.name, "driver": self.driver,
                "chain": list(self.chain), "driver_allows_unbind": self.can_unbind}


class DtUser(NamedTuple):
    """A bound device whose DT node references the device through ``props``, with no
    device link between the two: the kernel will not unbind it, it keeps running on
    what the unbind takes away."""

    bus: str
    name: str
    driver: str
    sysfs_path: str
    dt_path: str
    props: tuple[str, ...]

    def render(self, device: str) -> str:
        """``device <- user (driver) through dmas``."""
        return f"{device} <- {self.name} ({self.driver}) through {', '.join(self.props)}"

    def to_json(self) -> dict[str, object]:
        return {"bus": self.bus, "name": self.name, "driver": self.driver,
                "dt_path": self.dt_path, "properties": list(self.props)}


class DriverOrigin(NamedTuple):
    """Where a driver comes from, as far as sysfs and the module lists tell."""

    driver: str
    module: str | None           # the loadable module (drivers/DRV/module link)
    builtin: str | None          # the modules.builtin line naming it, if any
    init_functions: tuple[str, ...]  # candidate initcalls from /proc/kallsyms


class UnbindForbiddenError(HostError):
    """The device's driver, or a dependent's, has no unbind file (suppress_bind_attrs)."""

    code = "unbind-forbidden"

    def __init__(self, what: str, fix: str, device: str, driver: str) -> None:
        super().__init__(what, fix, device=device, driver=driver)
        self.device = device
        self.driver = driver


# ---------------------------------------------------------------- reading links

def _device_dir(bus: str, name: str) -> str:
    return f"/sys/bus/{bus}/devices/{name}"


def _flag(text: str | None) -> bool:
    return (text or "").strip() == "1"


def device_links(fs: HostFs, device_dir: str) -> tuple[list[DevLink], list[DevLink]]:
    """(suppliers, consumers) of the device whose sysfs directory is ``device_dir``."""
    try:
        entries = sorted(os.listdir(fs.path(device_dir)))
    except OSError:
        return [], []
    suppliers: list[DevLink] = []
    consumers: list[DevLink] = []
    for entry in entries:
        role, sep, rest = entry.partition(":")
        if not sep or role not in ("supplier", "consumer"):
            continue
        bus, sep, name = rest.partition(":")  # bus names have no ':', device names may
        if not sep or not name:
            continue
        link_dir = f"{device_dir}/{entry}"
        real = fs.path(link_dir)
        if not real.is_dir():
            continue
        other = f"{link_dir}/{role}"
        other_real = fs.path(other)
        sysfs_path = fs.host_path(other_real) if other_real.exists() else None
        devlink = os.path.basename(os.path.realpath(real))
        link = DevLink(
            role=role, bus=bus, name=name,
            driver=fs.link_name(other + "/driver") if sysfs_path else None,
            sysfs_path=sysfs_path,
            status=(fs.read_text(link_dir + "/status") or "unknown").strip(),
            sync_state_only=_flag(fs.read_text(link_dir + "/sync_state_only")),
            auto_remove_on=(fs.read_text(link_dir + "/auto_remove_on") or "").strip(),
            runtime_pm=_flag(fs.read_text(link_dir + "/runtime_pm")),
            devlink=f"/sys/class/devlink/{devlink}",
        )
        (suppliers if role == "supplier" else consumers).append(link)
    return suppliers, consumers


class LinkView(NamedTuple):
    """A device's links and what unbinding it takes with it (show, nodedev-dumpxml)."""

    suppliers: list[DevLink]
    consumers: list[DevLink]
    dependents: list[Dependent]

    def to_json(self) -> dict[str, object]:
        return {"suppliers": [lk.to_json() for lk in self.suppliers],
                "consumers": [lk.to_json() for lk in self.consumers],
                "unbinds": [d.to_json() for d in self.dependents]}


def link_view(fs: HostFs, bus: str, name: str) -> LinkView:
    """The links of a device from its /sys/bus/BUS/devices/NAME directory."""
    suppliers, consumers = device_links(fs, _device_dir(bus, name))
    return LinkView(suppliers, consumers, unbind_dependents(fs, bus, name))


def driver_dir_of(fs: HostFs, device_dir: str) -> str | None:
    """The /sys/bus/BUS/drivers/DRV directory the device's ``driver`` link points to."""
    link = fs.path(device_dir + "/driver")
    if not link.is_symlink():
        return None
    return fs.host_path(link)


def driver_can_unbind(fs: HostFs, device_dir: str) -> bool:
    """Whether the device's driver has an ``unbind`` file (no driver: True)."""
    directory = driver_dir_of(fs, device_dir)
    return directory is None or fs.path(directory + "/unbind").exists()


def unbind_dependents(fs: HostFs, bus: str, name: str,
                      device_dir: str | None = None) -> list[Dependent]:
    """Every device whose driver the kernel releases when ``name`` is unbound, in the
    order they are found (breadth first: each chain is a shortest one)."""
    start = device_dir or _device_dir(bus, name)
    found: dict[str, Dependent] = {}
    start_real = fs.host_path(fs.path(start))
    queue: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [(start, (name,), ())]
    while queue and len(found) < _MAX_DEPENDENTS:
        directory, chain, drivers = queue.pop(0)
        _, consumers = device_links(fs, directory)
        for link in consumers:
            if not link.holds_consumer or link.driver is None or link.sysfs_path is None:
                continue
            key = f"{link.bus}:{link.name}"
            if link.sysfs_path == start_real:
                continue  # a link back to the device being unbound
            if key in found:
                previous = found[key]
                if chain[-1] not in previous.suppliers:
                    found[key] = previous._replace(suppliers=previous.suppliers + (chain[-1],))
                continue
            found[key] = Dependent(
                bus=link.bus, name=link.name, driver=link.driver, sysfs_path=link.sysfs_path,
                dt_path=fs.dt_path_of(link.sysfs_path), chain=chain + (link.name,),
                chain_drivers=drivers + (link.driver,), suppliers=(chain[-1],),
                can_unbind=driver_can_unbind(fs, link.sysfs_path))
            queue.append((link.sysfs_path, chain + (link.name,), drivers + (link.driver,)))
    return list(found.values())


# references a driver only reads at probe (assigned clock rates, OPP tables), or that
# are not a consumer's resource (the CPU of a cache, an interrupt parent: fw_devlink
# links the interrupts themselves)
_NOT_HELD = frozenset({"assigned-clocks", "assigned-clock-parents", "operating-points-v2",
                       "cpu", "interrupt-parent"})
_BUSES = ("platform", "amba")


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def unlinked_dt_users(fs: HostFs, bus: str, name: str,
                      tree: DeviceTree | None = None) -> list[DtUser]:
    """Bound platform/AMBA devices referencing ``name``'s DT node (or a node below it)
    through a phandle property, with no device link to ``name`` (either way) and not
    released with it (:func:`unbind_dependents`). ``tree``: the live DT, read from
    /sys/firmware/devicetree/base when not given. A node whose references do not
    parse is left out (the kernel's own look-up would fail the same way)."""
    directory = _device_dir(bus, name)
    top = fs.dt_path_of(directory)
    if top is None:
        return []
    suppliers, consumers = device_links(fs, directory)
    linked = {lk.name for lk in suppliers + consumers}
    linked |= {d.name for d in unbind_dependents(fs, bus, name)}
    if tree is None:
        try:
            tree = DeviceTree.from_sysfs(fs.path("/" + DT_BASE))
        except (OSError, DeviceTreeError):
            return []
    users: list[DtUser] = []
    for user_bus in _BUSES:
        base = f"/sys/bus/{user_bus}/devices"
        try:
            entries = sorted(os.listdir(fs.path(base)))
        except OSError:
            continue
        for entry in entries:
            if entry == name or entry in linked:
                continue
            user_dir = f"{base}/{entry}"
            driver = fs.link_name(user_dir + "/driver")
            dt_path = fs.dt_path_of(user_dir) if driver is not None else None
            node = tree.by_path.get(dt_path) if dt_path is not None else None
            if node is None or dt_path is None or _within(dt_path, top) or \
                    _within(top, dt_path) or driver is None:
                continue
            try:
                links = phandle_links(tree, node)
            except DeviceTreeError:
                continue
            props = tuple(dict.fromkeys(lk.prop for lk in links
                                        if lk.prop not in _NOT_HELD and _within(lk.target, top)))
            if props:
                users.append(DtUser(user_bus, entry, driver, fs.host_path(fs.path(user_dir)),
                                    dt_path, props))
    return users


def reprobe_order(dependents: Sequence[Dependent]) -> list[Dependent]:
    """``dependents`` with every one after the dependents it depends on (Kahn's
    algorithm, ties in discovery order; what a cycle leaves is appended as found)."""
    names = {d.name for d in dependents}
    pending = list(dependents)
    done: set[str] = set()
    ordered: list[Dependent] = []
    while pending:
        ready = [d for d in pending
                 if all(s in done or s not in names for s in d.suppliers)]
        if not ready:
            ordered += pending
            break
        for dependent in ready:
            ordered.append(dependent)
            done.add(dependent.name)
        pending = [d for d in pending if d.name not in done]
    return ordered


def render_dependent(dependent: Dependent, uses: Iterable[str] = ()) -> str:
    """``a -> b (drv-b) -> c (drv-c)[ -> use]``: the chain, each step after the head (the
    device being unbound) with its driver."""
    steps = [f"{n} ({d})" for n, d in zip(dependent.chain[1:], dependent.chain_drivers,
                                          strict=True)]
    return " -> ".join([dependent.chain[0], *steps, *uses])


# ---------------------------------------------------------------- forbidden unbind

def _normalise(name: str) -> str:
    return name.replace("-", "_")


def driver_origin(fs: HostFs, bus: str, driver: str) -> DriverOrigin:
    """Module or built in, and the initcall candidates of a built-in driver.

    A loadable module registers its driver with a ``module`` link in the driver's
    directory (drivers/base/module.c module_add_driver); without one the driver is
    built in. modules.builtin lists built-in drivers that could be modules; the
    init function of ``module_platform_driver(X)`` / ``builtin_platform_driver(X)``
    is ``X_init`` (include/linux/device/driver.h module_driver), found in
    /proc/kallsyms by the words of the driver's name.
    """
    directory = f"/sys/bus/{bus}/drivers/{driver}"
    module = fs.link_name(directory + "/module")
    if module is not None:
        return DriverOrigin(driver, module, None, ())
    release = (fs.read_text("/proc/sys/kernel/osrelease") or "").strip()
    builtin = None
    if release and "/" not in release:
        for line in (fs.read_text(f"/lib/modules/{release}/modules.builtin") or "").splitlines():
            base = os.path.basename(line.strip())
            if base.endswith(".ko") and _normalise(base[:-3]) == _normalise(driver):
                builtin = line.strip()
                break
    words = {w for w in re.split(r"[-_]", driver.lower()) if w}
    candidates: list[str] = []
    for line in (fs.read_text("/proc/kallsyms") or "").splitlines():
        match = _SYMBOL.match(line)
        if match is None:
            continue
        symbol = match.group(1)
        if symbol.endswith("_init") and words <= set(symbol.lower().split("_")):
            candidates.append(symbol)
    drivers = [s for s in candidates if s.endswith("_driver_init")]
    return DriverOrigin(driver, None, builtin, tuple(dict.fromkeys(drivers or candidates)))


def keep_driver_off(fs: HostFs, bus: str, driver: str) -> str:
    """How to keep ``driver`` off a device from boot: for a module, blacklisting it or a
    reservation; for a built-in driver, ``initcall_blacklist=`` with its init function."""
    return _way_out(fs, bus, driver)


def _way_out(fs: HostFs, bus: str, driver: str) -> str:
    origin = driver_origin(fs, bus, driver)
    if origin.module is not None:
        mod = origin.module
        return (f"{driver} is the loadable module {mod} (/sys/bus/{bus}/drivers/{driver}/"
                f"module): keep it from binding at boot ('blacklist {mod}' plus 'install {mod} "
                f"/bin/false' in /etc/modprobe.d/, or module_blacklist={mod} on the kernel "
                "command line), or reserve the device for vfio at boot (driver_override before "
                f"the driver loads); at run time 'modprobe -r {mod}' releases every device it "
                "drives, and their consumers with them")
    where = f"listed in modules.builtin as {origin.builtin}" if origin.builtin else \
        f"no /sys/bus/{bus}/drivers/{driver}/module link"
    if len(origin.init_functions) == 1:
        call = (f"boot with initcall_blacklist={origin.init_functions[0]} (its init function, "
                "found in /proc/kallsyms; initcall_debug on the command line logs every "
                "initcall as it runs)")
    elif origin.init_functions:
        call = ("boot with initcall_blacklist=<its init function>, one of (from /proc/kallsyms) "
                + ", ".join(origin.init_functions))
    else:
        call = ("boot with initcall_blacklist=<its init function>: for module_platform_driver(X)"
                " or builtin_platform_driver(X) it is X_init, X being the driver's struct in "
                "its source; check with 'grep -w X_init /proc/kallsyms', or boot once with "
                "initcall_debug and look for 'calling X_init' in dmesg")
    return (f"{driver} is built into the kernel ({where}): to keep it off the device, {call}; "
            "that keeps the driver off every device it drives, and the devices that need them "
            "cannot probe either")


def forbidden_note(fs: HostFs, dependent: Dependent) -> str:
    """``DRV (on NAME) forbids unbinding (suppress_bind_attrs: DIR has no unbind file)``."""
    drv_dir = driver_dir_of(fs, dependent.sysfs_path) or \
        f"/sys/bus/{dependent.bus}/drivers/{dependent.driver}"
    return (f"{dependent.driver} (on {dependent.name}) forbids unbinding (suppress_bind_attrs: "
            f"{drv_dir} has no unbind file)")


def way_out(fs: HostFs, dependent: Dependent) -> str:
    """How to keep a dependent's unbind-forbidding driver off at boot, or go around it."""
    return (_way_out(fs, dependent.bus, dependent.driver) +
            f"; or choose a device {dependent.name} does not depend on")


def refuse_forbidden_own(fs: HostFs, bus: str, name: str, driver: str | None,
                         device_dir: str | None = None) -> None:
    """Raise :class:`UnbindForbiddenError` when the device's own driver has no ``unbind``
    file: the kernel cannot release the device at run time (checked first, always)."""
    directory = device_dir or _device_dir(bus, name)
    if driver is not None and not driver_can_unbind(fs, directory):
        drv_dir = driver_dir_of(fs, directory) or f"/sys/bus/{bus}/drivers/{driver}"
        raise UnbindForbiddenError(
            f"{name} is bound to {driver}, which forbids unbinding (suppress_bind_attrs: "
            f"{drv_dir} has no unbind file): the kernel cannot release this device at run "
            "time; nothing was written",
            _way_out(fs, bus, driver), name, driver)


def refuse_forbidden_dependents(fs: HostFs, name: str,
                                dependents: Sequence[Dependent]) -> None:
    """Raise :class:`UnbindForbiddenError` when a device the unbind would release has a
    driver without an ``unbind`` file (checked after the refusal naming every chain, so
    that only ``--force`` gets this far).

    The kernel would release such a dependent anyway (device_release_driver_internal
    ignores suppress_bind_attrs), but a driver that forbids unbinding usually
    cannot be unbound safely (no remove, or resources left registered) and may
    not bind again: refused even with --force.
    """
    for dependent in dependents:
        if not dependent.can_unbind:
            raise UnbindForbiddenError(
                f"unbinding {name} makes the kernel release {dependent.name} "
                f"({render_dependent(dependent)}), and {forbidden_note(fs, dependent)}: such "
                "drivers usually cannot be unbound safely or bound again, so --force cannot "
                "override this; nothing was written",
                way_out(fs, dependent), dependent.name, dependent.driver)


def refuse_forbidden_unbind(fs: HostFs, bus: str, name: str, driver: str | None,
                            dependents: Sequence[Dependent],
                            device_dir: str | None = None) -> None:
    """:func:`refuse_forbidden_own`, then :func:`refuse_forbidden_dependents`."""
    refuse_forbidden_own(fs, bus, name, driver, device_dir)
    refuse_forbidden_dependents(fs, name, dependents)
