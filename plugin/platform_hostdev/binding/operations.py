"""Moving a platform/amba device to vfio and back: detach, reattach, recover.

libvirt's vocabulary: *detach* takes a device from its host driver and binds
it to ``vfio-platform`` (platform bus) or ``vfio-amba`` (amba bus);
*reattach* gives it back. The kernel sequence (drivers/base/bus.c
unbind_store() and drivers_probe_store(), drivers/base/driver.c
driver_set_override()):

1. write the vfio driver's name to ``D/driver_override`` FIRST (no window in
   which a probe could re-bind the old driver);
2. if ``D/driver`` exists, write D to ``D/driver/unbind``;
3. write D to ``/sys/bus/<bus>/drivers_probe``;
4. check the ``D/driver`` link: drivers_probe succeeds even when nothing binds.

Re-attach writes "\\n" to driver_override (it then reads "(null)"), unbinds
from vfio, probes again and checks that the ORIGINAL driver is back.

Step 2 also makes the kernel unbind every device that depends on D through an
active device link (drivers/base/core.c device_links_unbind_consumers; see
:mod:`~platform_hostdev.host.devlinks`). A detach that would do so is refused
unless the caller passes ``unbind_consumers`` (the command line's --force,
never the hook); a driver that forbids unbinding (no ``unbind`` file) is
refused before anything is written, always. The consumers are recorded in
the journal before the first write and re-probed, suppliers first, once D is
back with its driver (reattach, rollback, recover): the kernel's own re-probe
(deferred probe, DL_FLAG_AUTOPROBE_CONSUMER) is asynchronous and absent for
links removed on supplier unbind.

Until then each consumer is *parked*: before D is unbound, its
``driver_override`` is set to :data:`PARKED`, a name no driver has, so that
nothing binds it while its supplier is on vfio. The kernel would otherwise
re-probe it as soon as D binds vfio (device_links_driver_bound puts it on the
deferred list), and a supplier driver that leaves a stale provider behind
(drivers/clk/bcm/clk-bcm2835-aux.c has no remove: its clocks stay registered
over unmapped registers) turns that probe into a kernel oops, as the raspi3b
board shows with the mini UART. Giving a consumer back clears the override
first; the value tells any later look (or ``recover``) why it is there.
Consumers that already have an override are someone else's and left alone.

Before the first write a :class:`~platform_hostdev.binding.journal.JournalRecord`
holds the original driver and override; it is rewritten after every step.
A failure midway rolls the device back to its original state and removes the
record; :func:`recover` finishes whatever a killed process left. Each write
is followed by a wait for the bind/unbind uevent (:mod:`uevents`), opened
before the write. The checks before the first write and the explanation
of a failed probe live in :mod:`preflight` (re-exported here).

Exit codes of the commands built on this: 0 done, 1 refused or failed (the
device is back in its original state unless the message says otherwise).
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple

from platform_hostdev.binding.journal import Journal, JournalRecord
from platform_hostdev.binding.preflight import (
    NOIOMMU_PARAM,
    RESET_REQUIRED_PARAM,
    UPSTREAM_RESET_HANDLERS,
    BindingError,
    DeviceInUseError,
    DeviceState,
    NoIommuError,
    ProbeFailedError,
    ResetRequiredError,
    Target,
    VfioUnavailableError,
    check_iommu,
    check_reset,
    device_dir,
    device_state,
    ensure_vfio_driver,
    explain_probe_failure,
    is_noiommu,
    vfio_holders,
)
from platform_hostdev.errors import HostdevError, HostError
from platform_hostdev.host.attributes import AttributeWriteError, WritableHostFs
from platform_hostdev.host.boundary import Host
from platform_hostdev.host.devlinks import (
    Dependent,
    refuse_forbidden_dependents,
    refuse_forbidden_own,
    reprobe_order,
    unbind_dependents,
)
from platform_hostdev.host.fs import HostFs, read_driver_override
from platform_hostdev.host.kmsg import KernelLog, probe_failure
from platform_hostdev.host.protection import consumers_error, located, unbind_impact
from platform_hostdev.host.uevents import UeventTimeoutError, Watch
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

__all__ = [
    # re-exported from preflight: the vocabulary callers of binding need
    "DEFAULT_TIMEOUT",
    "PARKED",
    "NOIOMMU_PARAM",
    "RESET_REQUIRED_PARAM",
    "UPSTREAM_RESET_HANDLERS",
    "Target",
    "DeviceState",
    "device_state",
    "BindingError",
    "VfioUnavailableError",
    "NoIommuError",
    "ResetRequiredError",
    "DeviceInUseError",
    "ProbeFailedError",
    # binding's own
    "DetachResult",
    "ReattachResult",
    "RecoverAction",
    "AlreadyDetachedError",
    "NotDetachedError",
    "RestoreError",
    "InterruptedOperationError",
    "detach",
    "reattach",
    "recover",
    "host_journal",
]

DEFAULT_TIMEOUT = 5.0
PARKED = "platform-hostdev-parked"
"""The driver_override of a consumer whose supplier is on vfio: matches no driver."""


class AlreadyDetachedError(BindingError):
    """The device is already bound to its vfio driver."""

    code = "already-detached"


class NotDetachedError(BindingError):
    """Re-attach of a device that is not bound to vfio."""

    code = "not-detached"


class RestoreError(BindingError):
    """The device could not be put back in its original state; the journal keeps the record."""

    code = "restore-failed"


class InterruptedOperationError(BindingError):
    """A journal record of an unfinished operation exists for the device."""

    code = "interrupted-operation"


class DetachResult(NamedTuple):
    """A device now bound to its vfio driver, and what it was bound to before."""

    device: str
    bus: str
    driver: str
    original_driver: str | None
    original_override: str | None
    iommu_group: str | None
    noiommu: bool
    unbound_consumers: tuple[str, ...] = ()   # devices the kernel unbound with it


class ReattachResult(NamedTuple):
    """A device given back: its driver now, and the original one the journal knew."""

    device: str
    bus: str
    driver: str | None
    original_driver: str | None
    original_known: bool
    reprobed_consumers: tuple[str, ...] = ()  # consumers given their driver back


class RecoverAction(NamedTuple):
    """What recovery did with one journal record."""

    device: str
    action: str   # "restored", "kept", "stale-removed", "failed"
    detail: str


# ---------------------------------------------------------------- the steps

class _Mover:
    """The writes of one operation on one device, with journal updates and waits."""

    def __init__(self, host: Host, journal: Journal, record: JournalRecord,
                 watch: Watch, log: KernelLog, timeout: float) -> None:
        self.host = host
        self.fs: WritableHostFs = host.writable()
        self.journal = journal
        self.record = record
        self.watch = watch
        self.log = log
        self.timeout = timeout
        self.messages: list[str] = []
        self.ddir = device_dir(record.bus, record.device)
        self.reprobed: list[str] = []          # consumers that have their driver back

    @property
    def name(self) -> str:
        return self.record.device

    def state(self) -> DeviceState:
        return device_state(self.fs, self.record.bus, self.name)

    def step(self, step: str, op: str | None = None) -> None:
        self.record = self.record.at(step, op)
        self.journal.write(self.record)
        _observe(self.host, self.record)

    def write(self, host_path: str, value: str) -> None:
        try:
            self.fs.write_attr(host_path, value)
        except AttributeWriteError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                code = "permission-denied"
            elif host_path.endswith(("/unbind", "/driver_override")):
                code = "unbind-forbidden"
            else:
                code = "sysfs-write-failed"
            raise HostError(
                f"writing {value.strip()!r} to {host_path} failed: {exc.strerror} "
                f"({exc.errno_name})",
                "run as root; if the device vanished meanwhile, run nodedev-list",
                code=code, device=self.name, path=host_path, errno=exc.errno_name) from None

    def park_consumers(self) -> None:
        """Set :data:`PARKED` as the override of every recorded consumer that has none."""
        for bus, name, _ in self.record.consumers:
            ddir = device_dir(bus, name)
            if self.fs.path(ddir).exists() and read_driver_override(self.fs, ddir) is None:
                self.write(ddir + "/driver_override", PARKED + "\n")

    def set_override(self, value: str | None) -> None:
        self.write(self.ddir + "/driver_override", (value or "") + "\n")

    def unbind(self, driver: str) -> None:
        self.write(f"/sys/bus/{self.record.bus}/drivers/{driver}/unbind", self.name)
        self.watch.wait("unbind", lambda: self.state().driver != driver, self.timeout)

    def probe(self, expect: str | None) -> None:
        """drivers_probe, then wait until ``expect`` (any driver when None) binds or the
        kernel logs a failed probe. The caller judges the outcome from the driver link:
        drivers_probe succeeds even when nothing binds."""
        self.write(f"/sys/bus/{self.record.bus}/drivers_probe", self.name)

        def settled() -> bool:
            self.messages += self.log.new_messages()
            driver = self.state().driver
            if driver is not None and (expect is None or driver == expect):
                return True
            return probe_failure(self.messages, self.name) is not None

        try:
            self.watch.wait("bind", settled, self.timeout)
        except UeventTimeoutError:
            pass  # nothing bound in time: the caller reports it with the reason it can find

    def give_back_consumers(self) -> None:
        """drivers_probe every recorded consumer that has no driver, in the recorded order
        (suppliers first), and wait for its driver; RestoreError names those still without.

        ``reprobed`` lists the consumers that have their driver back, whether by this
        write or by the kernel's own deferred probe (which may come first)."""
        failed: list[str] = []
        for bus, name, driver in self.record.consumers:
            ddir = device_dir(bus, name)
            if not self.fs.path(ddir).exists():
                failed.append(f"{name} is no longer in sysfs")
                continue
            if read_driver_override(self.fs, ddir) == PARKED:
                self.write(ddir + "/driver_override", "\n")
            current = self.fs.link_name(ddir + "/driver")
            if current is None:
                with self.host.waiter.watch(bus, name) as watch:
                    self.write(f"/sys/bus/{bus}/drivers_probe", name)

                    def settled(ddir: str = ddir, name: str = name,
                                driver: str = driver) -> bool:
                        self.messages += self.log.new_messages()
                        return self.fs.link_name(ddir + "/driver") == driver or \
                            probe_failure(self.messages, name) is not None

                    try:
                        watch.wait("bind", settled, self.timeout)
                    except UeventTimeoutError:
                        pass  # reported below
                current = self.fs.link_name(ddir + "/driver")
            if current == driver:
                self.reprobed.append(name)
            else:
                failed_probe = probe_failure(self.messages, name)
                reason = f" (kernel: probe with driver {failed_probe[0]} failed with error " \
                    f"-{failed_probe[1]})" if failed_probe else ""
                failed.append(f"{name} did not get {driver} back (driver: {current or 'none'})"
                              f"{reason}")
        if failed:
            raise RestoreError(
                f"{self.name} is back with its driver, but not every device that lost its driver "
                f"with it: {'; '.join(failed)}; the journal {self.journal.host_file(self.name)} "
                "keeps the list",
                "see dmesg for why they did not bind (a supplier still missing?), fix it, then "
                "run 'platform-hostdev recover'", device=self.name,
                path=self.journal.host_file(self.name))


def _record_consumers(record: JournalRecord, dependents: list[Dependent]) -> JournalRecord:
    """``record`` with ``dependents`` added to its consumers (suppliers first, no repeats)."""
    known = {(bus, name) for bus, name, _ in record.consumers}
    added = tuple((d.bus, d.name, d.driver) for d in reprobe_order(dependents)
                  if (d.bus, d.name) not in known)
    return record._replace(consumers=record.consumers + added)


def _restore(mover: _Mover, op: str, steps: bool) -> DeviceState:
    """Put the original override and driver back; journal steps when ``steps``."""
    record = mover.record
    mover.set_override(record.original_override)
    if steps:
        mover.step("override-cleared", op)
    current = mover.state().driver
    if current is not None and current != record.original_driver:
        mover.unbind(current)
    if steps:
        mover.step("unbound", op)
    if mover.state().driver is None and (record.original_driver or not record.original_known):
        mover.probe(record.original_driver)
    if steps:
        mover.step("probed", op)
    final = mover.state()
    if record.original_known and (final.driver != record.original_driver
                                  or final.override != record.original_override):
        failed = probe_failure(mover.messages, record.device)
        reason = f" (kernel: probe with driver {failed[0]} failed with error -{failed[1]})" \
            if failed else ""
        raise RestoreError(
            f"{record.device} could not be given back to "
            f"{record.original_driver or 'no driver'}: driver is {final.driver or 'none'}, "
            f"driver_override {final.override or '(null)'}{reason}; the journal "
            f"{mover.journal.host_file(record.device)} keeps the original state",
            "see dmesg for why the driver did not bind, fix it, then run "
            "'platform-hostdev recover'", device=record.device,
            path=mover.journal.host_file(record.device))
    mover.give_back_consumers()
    return final


def _observe(host: Host, record: JournalRecord) -> None:
    """Tell the host's observer (tests) that ``record`` is on disk."""
    host.step(f"{record.op}:{record.device}:{record.step}", record)


# ---------------------------------------------------------------- operations

def host_journal(host: Host) -> Journal:
    """The binding journal of ``host``, on its clocks."""
    return Journal(host.fs, clock=host.monotonic, sleep=host.sleep)


def detach(host: Host, device: Target, journal: Journal | None = None, force: bool = False,
           *, timeout: float = DEFAULT_TIMEOUT, unbind_consumers: bool = False) -> DetachResult:
    """Bind ``device`` to its vfio driver; roll back and raise BindingError on failure.

    The vfio module is loaded through ``host.modprobe`` when its driver is not
    registered. ``force`` skips the predictions (IOMMU group / no-IOMMU mode,
    reset handler) and lets the kernel decide; a failed probe still rolls back.
    Whether the host itself uses the device is the caller's check
    (:func:`~platform_hostdev.host.protection.refuse_if_host_uses`). A device
    whose unbind would make the kernel unbind other devices (device links) is
    refused with :class:`~platform_hostdev.host.protection.ConsumerWouldUnbindError`
    unless ``unbind_consumers``; one whose driver, or a dependent's, forbids
    unbinding with :class:`~platform_hostdev.host.devlinks.UnbindForbiddenError`.
    Each journal update is reported to ``host.observer`` as
    ``detach:DEVICE:STEP``. ``journal`` defaults to :func:`host_journal`.
    """
    fs = host.fs
    journal = journal if journal is not None else host_journal(host)
    bus, name = device.bus, device.name
    if bus not in VFIO_DRIVERS:
        raise BindingError(f"{name} is on bus {bus!r}", "only platform and amba devices",
                           code="bus-unsupported", device=name, bus=bus)
    vfio = VFIO_DRIVERS[bus]
    if not fs.path(device_dir(bus, name)).exists():
        raise HostError(f"{bus} device {name} is not in sysfs ({device_dir(bus, name)})",
                        "it was removed since the scan; run nodedev-list",
                        code="device-not-found", device=name)
    with journal.locked():
        previous = journal.read(name)
        state = device_state(fs, bus, name)
        if previous is not None and not previous.complete_detach:
            raise InterruptedOperationError(
                f"an interrupted {previous.op} of {name} left {journal.host_file(name)} "
                f"(last step: {previous.step})",
                "run 'platform-hostdev recover' first", device=name,
                path=journal.host_file(name))
        if state.driver == vfio:
            raise AlreadyDetachedError(
                f"{name} is already bound to {vfio}",
                f"nothing to do; 'platform-hostdev nodedev-reattach {name}' gives it back",
                device=name, driver=vfio)
        if previous is not None:  # a detach record, but the device left vfio without us
            journal.remove(name)
        dependents = _check_dependents(fs, bus, name, state, unbind_consumers)
        ensure_vfio_driver(fs, bus, host.modprobe)
        if not force:
            check_iommu(fs, name, state)
            check_reset(fs, device)
        record = _record_consumers(JournalRecord(
            device=name, bus=bus, op="detach", step="planned", vfio_driver=vfio,
            original_driver=state.driver, original_override=state.override,
            pid=os.getpid(), started=host.clock()), dependents)
        journal.write(record)
        _observe(host, record)
        with host.waiter.watch(bus, name) as watch, KernelLog(fs) as log:
            mover = _Mover(host, journal, record, watch, log, timeout)
            try:
                mover.park_consumers()
                mover.set_override(vfio)
                mover.step("override-written")
                if state.driver is not None:
                    mover.unbind(state.driver)
                mover.step("unbound")
                unbound = tuple(n for b, n, _ in record.consumers
                                if fs.link_name(device_dir(b, n) + "/driver") is None)
                mover.probe(vfio)
                mover.step("probed")
                after = mover.state()
                if after.driver != vfio:
                    raise explain_probe_failure(fs, device, mover.messages, after)
                mover.step("detached")
            except (Exception, KeyboardInterrupt) as failure:
                # Not BaseException: SystemExit/GeneratorExit are not interruptions of
                # ours, and a killed process runs nothing anyway (recover handles it).
                _roll_back(mover, failure)
                raise
    return DetachResult(device=name, bus=bus, driver=vfio, original_driver=state.driver,
                        original_override=state.override, iommu_group=after.iommu_group,
                        noiommu=is_noiommu(fs, after.iommu_group), unbound_consumers=unbound)


def _check_dependents(fs: HostFs, bus: str, name: str, state: DeviceState,
                      unbind_consumers: bool) -> list[Dependent]:
    """The devices the unbind takes with it; refuses what must not be unbound."""
    if state.driver is None:
        return []
    dependents = unbind_dependents(fs, bus, name)
    refuse_forbidden_own(fs, bus, name, state.driver)
    if dependents and not unbind_consumers:
        raise consumers_error(fs, unbind_impact(fs, located(fs, bus, name), dependents))
    refuse_forbidden_dependents(fs, name, dependents)
    for dependent in dependents:
        group = fs.link_name(dependent.sysfs_path + "/iommu_group")
        if dependent.driver in VFIO_DRIVERS.values() and group is not None:
            holders = vfio_holders(fs, group)
            if holders:
                users = ", ".join(f"{comm} (pid {pid})" for pid, comm in holders)
                raise DeviceInUseError(
                    f"unbinding {name} makes the kernel unbind {dependent.name} from "
                    f"{dependent.driver}, and its VFIO group {group} is open by {users}: the "
                    "unbind would block until they close it",
                    f"stop the guest or program using {dependent.name} first",
                    device=dependent.name, group=group, pids=[pid for pid, _ in holders])
    return dependents


def _roll_back(mover: _Mover, failure: Exception | KeyboardInterrupt) -> None:
    try:
        _restore(mover, "detach", steps=False)
    except (HostdevError, OSError) as again:
        if isinstance(failure, HostdevError):
            failure.what += (f"; rolling back failed too ({again}); the journal "
                             f"{mover.journal.host_file(mover.name)} keeps the original state")
            failure.fix += "; then run 'platform-hostdev recover'"
        return
    mover.journal.remove(mover.name)


def reattach(host: Host, device: Target, journal: Journal | None = None, *,
             timeout: float = DEFAULT_TIMEOUT) -> ReattachResult:
    """Give a detached device back to its original driver; remove its journal record.

    Each journal update is reported to ``host.observer`` as ``reattach:DEVICE:STEP``.
    ``journal`` defaults to :func:`host_journal`.
    """
    fs = host.fs
    journal = journal if journal is not None else host_journal(host)
    bus, name = device.bus, device.name
    vfio = VFIO_DRIVERS.get(bus, "vfio")
    with journal.locked():
        record = journal.read(name)
        state = device_state(fs, bus, name)
        if record is not None and not record.complete_detach and record.op == "detach":
            raise InterruptedOperationError(
                f"an interrupted detach of {name} left {journal.host_file(name)} "
                f"(last step: {record.step})", "run 'platform-hostdev recover'",
                device=name, path=journal.host_file(name))
        if record is None:
            if state.driver != vfio:
                raise NotDetachedError(
                    f"{name} is not bound to {vfio} (driver: {state.driver or 'none'}) and "
                    "no journal records a detach", "nothing to re-attach", device=name,
                    driver=state.driver)
            record = JournalRecord(
                device=name, bus=bus, op="reattach", step="planned", vfio_driver=vfio,
                original_driver=None, original_override=None, original_known=False,
                pid=os.getpid(), started=host.clock())
        if state.iommu_group is not None and state.driver == vfio:
            holders = vfio_holders(fs, state.iommu_group)
            if holders:
                users = ", ".join(f"{comm} (pid {pid})" for pid, comm in holders)
                raise DeviceInUseError(
                    f"{name}'s VFIO group {state.iommu_group} is open by {users}; unbinding "
                    "would block until they close it",
                    "stop the guest or program using the device first", device=name,
                    group=state.iommu_group, pids=[pid for pid, _ in holders])
        # consumers that bound meanwhile lose their driver again when vfio lets go
        dependents = unbind_dependents(fs, bus, name) if state.driver is not None else []
        record = _record_consumers(record.at("planned", "reattach"), dependents)
        journal.write(record)
        _observe(host, record)
        with host.waiter.watch(bus, name) as watch, KernelLog(fs) as log:
            mover = _Mover(host, journal, record, watch, log, timeout)
            final = _restore(mover, "reattach", steps=True)
        journal.remove(name)
    return ReattachResult(device=name, bus=bus, driver=final.driver,
                          original_driver=record.original_driver,
                          original_known=record.original_known,
                          reprobed_consumers=tuple(mover.reprobed))


def recover(host: Host, journal: Journal | None = None, *,
            timeout: float = DEFAULT_TIMEOUT) -> list[RecoverAction]:
    """Restore every device an interrupted detach/reattach left half-way; idempotent.

    A completed detach whose device is still bound to vfio is kept (it is in
    use by design); one whose device left vfio meanwhile is removed as stale.
    """
    fs = host.fs
    journal = journal if journal is not None else host_journal(host)
    actions = []
    with journal.locked():
        for name in journal.devices():
            try:
                record = journal.read(name)
            except HostdevError as exc:
                actions.append(RecoverAction(name, "failed", str(exc)))
                continue
            if record is None:
                continue
            state = device_state(fs, record.bus, name)
            if record.complete_detach:
                if state.driver == record.vfio_driver:
                    actions.append(RecoverAction(name, "kept", f"detached to {state.driver}"))
                    continue
                detail = (f"no longer bound to {record.vfio_driver} "
                          f"(driver: {state.driver or 'none'})")
                if record.consumers and state.driver is not None and \
                        state.driver == record.original_driver:
                    with host.waiter.watch(record.bus, name) as watch, KernelLog(fs) as log:
                        mover = _Mover(host, journal, record, watch, log, timeout)
                        try:
                            mover.give_back_consumers()
                        except HostdevError as exc:
                            actions.append(RecoverAction(name, "failed", str(exc)))
                            continue
                    if mover.reprobed:
                        detail += f"; re-probed {', '.join(mover.reprobed)}"
                journal.remove(name)
                actions.append(RecoverAction(name, "stale-removed", detail))
                continue
            with host.waiter.watch(record.bus, name) as watch, KernelLog(fs) as log:
                mover = _Mover(host, journal, record, watch, log, timeout)
                try:
                    final = _restore(mover, record.op, steps=False)
                except HostdevError as exc:
                    actions.append(RecoverAction(name, "failed", str(exc)))
                    continue
            journal.remove(name)
            actions.append(RecoverAction(
                name, "restored",
                f"interrupted {record.op} at step {record.step}; driver "
                f"{final.driver or 'none'}, driver_override {final.override or '(null)'}"))
    return actions
