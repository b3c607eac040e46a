"""The libvirt qemu hook's work for domains that have platform hostdevs.

Called by hooks/qemu.d/platform-hostdev (which handles the fast path) with
argv ``<domain> <op> <subop> <extra>`` and the domain XML. Exit codes: 0 go
on; 1 refused or failed (stderr says why and how to fix it; libvirt shows it
and aborts a start). Phases:

* prepare: recover interrupted work, then for each platform hostdev in
  command-line order: refuse a device owned by another running domain;
  managed -> detach to vfio (binding.detach), unmanaged -> must already be
  bound to vfio; check the IOMMU group is viable (vfio.groups: every member
  bound to a vfio driver, unbound, or in this domain); hand /dev/vfio/N to QEMU's user/group
  (a device on the iommufd backend, ``<driver iommufd='yes'>``: its vfio cdev
  /dev/vfio/devices/vfioN, found from its sysfs ``vfio-dev/``, and /dev/iommu
  instead: QEMU opens those, not the group); record ownership. Any failure
  rolls back what this call did.
* release (also after "failed"): give every device of this domain back:
  /dev/vfio/N (or the cdev) ownership restored, /dev/iommu's once no record
  holds it any more, managed devices re-attached to their original driver (a
  device reserved for vfio at boot, nodedev-detach --persistent, stays on
  vfio), records removed.
* reconnect: a running domain after a daemon restart: adopt its devices.
* migrate / restore: refused (QEMU's vfio-platform is not migratable).
Every call first finishes interrupted binding operations (journal) and
releases devices whose owner is gone (not running, past the start grace), so
nothing stays stranded after a crash of the hook or the host.
The hook never calls libvirt: the daemon waits for it.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.ownership import OwnerRecord, Owners
from platform_hostdev.binding.preflight import device_state
from platform_hostdev.domain.rules import (
    check_names_agree,
    refuse_duplicates,
    refuse_non_platform,
)
from platform_hostdev.errors import HostdevError, printable_lines
from platform_hostdev.host.boundary import Host, host_at
from platform_hostdev.host.fs import HostFs, is_noiommu
from platform_hostdev.host.specs import check_spec
from platform_hostdev.vfio.groups import group_blockers
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

if TYPE_CHECKING:
    from platform_hostdev.binding.operations import RecoverAction
    from platform_hostdev.domain.domainxml import Element

# Light on purpose: libvirt runs the hook on every domain start. binding (the
# driver moves), protection and the guest-DT store are imported where a call
# needs them; records are NamedTuples (dataclasses would load inspect).

__all__ = ["HookEnv", "run", "dispatch", "HookDevice", "resolve_device", "release_stale",
           "StaleRelease", "recover_host"]

HOOK_CONFIG = "/etc/platform-hostdev/hook.conf"
_WORKING_OPS = ("prepare", "release", "reconnect", "migrate", "restore")  # the rest: exit 0


class HookEnv:
    """What a hook call works with: the host, where its messages go, hook.conf's settings."""

    __slots__ = ("host", "err", "allow_noiommu")

    def __init__(self, host: Host, *, err: TextIO | None = None,
                 allow_noiommu: bool = False) -> None:
        self.host = host
        self.err = err if err is not None else sys.stderr
        self.allow_noiommu = allow_noiommu

    @property
    def fs(self) -> HostFs:
        """The host's filesystem root."""
        return self.host.fs

    def owners(self) -> Owners:
        """The ownership records, on the host's clock and pid check."""
        return Owners(self.host.fs, self.host.clock, pid_alive=self.host.pid_alive)

    def journal(self) -> Journal:
        """The binding journal, on the host's clocks."""
        return Journal(self.host.fs, clock=self.host.monotonic, sleep=self.host.sleep)


class HookDevice(NamedTuple):
    """A platform hostdev of the domain, located on the host."""

    name: str
    bus: str
    dt_path: str | None
    compatible: tuple[str, ...]
    managed: bool
    sysfs_path: str | None = None  # /sys/devices/... (host-absolute)
    iommufd: bool = False          # <driver iommufd='yes'>: the cdev, not the group


class _Domain(NamedTuple):
    name: str
    uuid: str
    devices: list[HookDevice]
    root: Element | None = None  # the domain XML's root element
    keys: tuple[str, ...] = ()  # the hostdevs as declared (name or path), in order


def _config(fs: HostFs) -> dict[str, str]:
    result = {}
    for line in (fs.read_text(HOOK_CONFIG) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            result[key.strip()] = value.strip()
    return result


def run(argv: Sequence[str], data: bytes, root: str = "/") -> int:
    """Entry point of the installed hook: the host at ``root`` (``host_at``)."""
    args = list(argv) + ["-"] * (4 - len(argv))
    if args[1] not in _WORKING_OPS:
        return 0  # start, started, stopped...: nothing to do, nothing to fail on
    host = host_at(root)
    env = HookEnv(host, allow_noiommu=_config(host.fs).get("allow_noiommu") == "yes")
    return dispatch(argv, data, env)


def dispatch(argv: Sequence[str], data: bytes, env: HookEnv) -> int:
    """One hook call: ``argv`` as libvirt passes it, ``data`` the domain XML; the exit code."""
    args = list(argv) + ["-"] * (4 - len(argv))
    name, op = args[0], args[1]
    try:
        if op in ("migrate", "restore"):
            _refuse_migration(data, op)
            return 0
        if op not in _WORKING_OPS:
            return 0
        domain = _parse_domain(data, name, env.fs)
        if op == "prepare":
            prepare(domain, env)
        elif op == "release":
            release(domain, env)
        else:
            reconnect(domain, env)
        return 0
    except HostdevError as exc:
        return _refused(args, exc, env.err)


def _refused(args: Sequence[str], exc: HostdevError, err: TextIO) -> int:
    name, op = args[0], args[1]
    # libvirt shows this in its error message: names from the DT and sysfs are escaped
    print(printable_lines(f"platform-hostdev: {op} of domain {name} refused: {exc.what}"),
          file=err)
    if exc.fix:
        print(printable_lines(f"platform-hostdev: hint: {exc.fix}"), file=err)
    # A non-zero reconnect makes libvirt kill the running guest: never do that.
    return 0 if op == "reconnect" else 1


def _refuse_migration(data: bytes, op: str) -> None:
    from platform_hostdev.domain.domainxml import parse_domain
    from platform_hostdev.domain.model import declared_hostdevs

    if declared_hostdevs(parse_domain(data)):
        raise HostdevError(f"the domain has platform hostdevs; {op} is not possible (QEMU's "
                           "vfio-platform devices are not migratable and their state cannot "
                           "be saved)",
                           "detach the platform hostdevs (platform-hostdev detach-device "
                           "--config) and restart the domain before migrating",
                           code="not-migratable", operation=op)


def _parse_domain(data: bytes, name: str, fs: HostFs) -> _Domain:
    from platform_hostdev.domain.domainxml import parse_domain
    from platform_hostdev.domain.model import declared_hostdevs

    root = parse_domain(data)
    uuid = (root.findtext("uuid") or "").strip()
    if not uuid:
        raise HostdevError("the domain XML has no <uuid>", "libvirt always sets one",
                           code="xml-invalid", domain=name)
    declared = declared_hostdevs(root)
    devices = [resolve_device(fs, h.name, h.dt_path, h.managed)._replace(
        iommufd=bool(h.iommufd)) for h in declared]
    refuse_duplicates(((h, d.name, d.dt_path) for h, d in zip(declared, devices, strict=True)),
                      domain=name)
    return _Domain(name, uuid, devices, root, tuple(h.key for h in declared))


def resolve_device(fs: HostFs, name: str | None, dt_path: str | None,
                   managed: bool) -> HookDevice:
    """Find a device by sysfs name or DT path without scanning the whole host.

    The rules are the commands' (:mod:`platform_hostdev.domain.rules`): the name is a
    sysfs name, and the device it names must be at the DT path when both are given.
    """
    for spec in (name, dt_path):
        if spec is not None:
            check_spec(spec)
    found: tuple[str, str] | None = None
    if name is not None:
        for bus in VFIO_DRIVERS:
            if fs.path(f"/sys/bus/{bus}/devices/{name}").exists():
                found = (name, bus)
                break
        if found is None:
            raise HostdevError(f"no platform or amba device named {name} on this host",
                               "check the name with 'platform-hostdev nodedev-list'",
                               code="device-not-found", device=name)
    else:
        assert dt_path is not None
        for bus in VFIO_DRIVERS:
            directory = fs.path(f"/sys/bus/{bus}/devices")
            for entry in sorted(os.listdir(directory)) if directory.exists() else []:
                if fs.dt_path_of(f"/sys/bus/{bus}/devices/{entry}") == dt_path:
                    found = (entry, bus)
                    break
            if found:
                break
        if found is None:
            raise HostdevError(f"no platform or amba device has DT path {dt_path}",
                               "check the path with 'platform-hostdev nodedev-list'",
                               code="device-not-found", dt_path=dt_path)
    dev_name, bus = found
    link = f"/sys/bus/{bus}/devices/{dev_name}"
    actual = fs.dt_path_of(link)
    check_names_agree(name, dt_path, dev_name, actual)
    raw = fs.read_text(link + "/of_node/compatible") or ""
    compatible = tuple(c for c in raw.split("\0") if c)
    return HookDevice(dev_name, bus, actual, compatible, managed,
                      fs.host_path(fs.path(link)))


# ------------------------------------------------------------------ recovery

class StaleRelease(NamedTuple):
    """What release_stale() did: journal recovery actions, devices given back."""

    journal: list[RecoverAction]
    released: list[str]


def release_stale(env: HookEnv, owners: Owners, journal: Journal,
                  timeout: float | None = None) -> StaleRelease:
    """Finish interrupted binding work; give back devices whose owner is gone.

    Call with the ownership lock held.
    """
    actions: list[RecoverAction] = []
    if journal.devices():  # a record only exists while we have moved a device
        from platform_hostdev.binding.operations import DEFAULT_TIMEOUT, recover

        actions = recover(env.host, journal, timeout=timeout or DEFAULT_TIMEOUT)
    released = []
    for record in owners.all():
        if owners.is_live(record):
            continue
        _give_back(record, env, owners, journal)
        released.append(f"{record.device}: released from domain {record.domain}, which is "
                        "no longer running")
    return StaleRelease(actions, released)


def recover_host(host: Host, *, err: TextIO | None = None,
                 timeout: float | None = None) -> StaleRelease:
    """What ``platform-hostdev recover`` does: finish interrupted binding work, then give
    back the devices of domains that are gone (the hook's own sweep, under its lock).

    A device stays with its domain while libvirt's pid file names a live QEMU,
    or while the domain is within its start grace period.
    """
    env = HookEnv(host, err=err)
    owners = env.owners()
    with owners.locked():
        return release_stale(env, owners, env.journal(), timeout=timeout)


def _restore_node(env: HookEnv, node: str | None, owner: Sequence[int]) -> None:
    if node and owner:
        path = env.fs.path(node)
        if path.exists():
            uid, gid, mode = owner
            os.chown(path, uid, gid)
            os.chmod(path, mode)


def _give_back(record: OwnerRecord, env: HookEnv, owners: Owners, journal: Journal) -> None:
    _restore_node(env, record.node, record.node_owner)
    _restore_node(env, record.cdev, record.cdev_owner)
    if record.iommu_owner and not any(other.iommu_owner for other in owners.all()
                                      if other.device != record.device):
        from platform_hostdev.vfio.cdev import IOMMU_NODE

        _restore_node(env, IOMMU_NODE, record.iommu_owner)
    env.host.step(f"release:{record.device}:node-restored", record)
    if record.detached_by_us and not _reserved(env.fs, record.bus, record.device):
        state = device_state(env.fs, record.bus, record.device)
        if state.driver == VFIO_DRIVERS.get(record.bus):
            from platform_hostdev.binding.operations import reattach

            reattach(env.host, HookDevice(record.device, record.bus, None, (), True), journal)
    env.host.step(f"release:{record.device}:reattached", record)
    owners.remove(record.device)


def _reserved(fs: HostFs, bus: str, name: str) -> bool:
    """Whether the device is reserved for vfio at boot (nodedev-detach --persistent): then
    release leaves it on vfio, as the next boot would bind it there anyway. An unreadable
    reservation file counts as no reservation (the device goes back, as without one)."""
    from platform_hostdev.binding.reservations import Reservations

    reservations = Reservations(fs)
    if not reservations.exists():
        return False
    try:
        return reservations.is_reserved(fs.dt_path_of(f"/sys/bus/{bus}/devices/{name}"))
    except HostdevError:
        return False


# ------------------------------------------------------------------ phases

def check_guest_dt(domain: _Domain, env: HookEnv) -> None:
    """A domain whose devices need our guest DT must boot with it, and it must be current.

    QEMU builds nodes itself only for xgmac/xgbe; a domain pointing <os><dtb> at
    a file of its own is the user's business. The fingerprint is recomputed from
    the XML (no libvirt call) and compared with the one stored at sync time.
    """
    from platform_hostdev.guestdt.store import (
        STATE_DIR,
        GuestDtStore,
        fingerprint_inputs,
        inputs_match,
    )
    from platform_hostdev.virt.qemu_nodes import needs_guest_dtb

    if not domain.devices or not needs_guest_dtb([d.compatible for d in domain.devices]):
        return
    store = GuestDtStore(env.fs.path(STATE_DIR))
    ours = store.dtb_path(domain.uuid)
    assert domain.root is not None
    dtb = (domain.root.findtext("os/dtb") or "").strip()
    fix = f"run 'platform-hostdev sync {domain.name}' to (re)generate it"
    if not dtb:
        raise HostdevError(f"domain {domain.name} has no guest device tree for its platform "
                           "devices (QEMU builds nodes only for calxeda xgmac and AMD xgbe "
                           "and would exit: 'can not be dynamically instantiated')", fix,
                           code="guest-dt-missing", domain=domain.name)
    if dtb != env.fs.host_path(ours) and env.fs.path(dtb) != ours:
        return  # the user's own DTB: theirs to keep right
    record = store.load_record(domain.uuid)
    if record is None or not ours.exists():
        raise HostdevError(f"the generated guest device tree {dtb} of domain {domain.name} "
                           "is missing", fix, code="guest-dt-missing", domain=domain.name,
                           path=dtb)
    # compare the fingerprint's preimage: the same decision without hashing
    if not inputs_match(record.get("inputs"), domain.root, domain.keys):
        before = record.get("inputs", {})
        now = fingerprint_inputs(domain.root, domain.keys)
        changed = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                            for k in sorted(now) if before.get(k) != now.get(k))
        raise HostdevError(f"the guest device tree of domain {domain.name} is out of date "
                           f"({changed or 'configuration changed'})", fix,
                           code="guest-dt-stale", domain=domain.name, path=dtb)


def prepare(domain: _Domain, env: HookEnv) -> None:
    check_guest_dt(domain, env)
    owners = env.owners()
    journal = env.journal()
    with owners.locked():
        release_stale(env, owners, journal)
        done: list[OwnerRecord] = []
        try:
            for device in domain.devices:
                done.append(_take(device, domain, env, owners, journal))
            _check_groups(domain, env)
            for i, (record, device) in enumerate(zip(done, domain.devices, strict=True)):
                done[i] = _hand_over_cdev(record, device, env, owners) if device.iommufd \
                    else _hand_over_node(record, env, owners)
                env.host.step(f"prepare:{record.device}:node", done[i])
            for record in done:
                owners.write(record.at(state="prepared", pid=0))
        except (Exception, KeyboardInterrupt) as failure:
            for record in reversed(done):
                try:
                    _give_back(owners.read(record.device) or record, env, owners, journal)
                except HostdevError as again:
                    if isinstance(failure, HostdevError):
                        failure.what += f"; giving {record.device} back failed too ({again})"
            raise


def _take(device: HookDevice, domain: _Domain, env: HookEnv, owners: Owners,
          journal: Journal) -> OwnerRecord:
    current = owners.read(device.name)
    if current is not None and current.uuid != domain.uuid:
        raise HostdevError(f"device {device.name} is in use by domain {current.domain}",
                           f"stop domain {current.domain} or remove the device from one of "
                           "the two domains", code="device-in-use", device=device.name,
                           domain=current.domain)
    state = device_state(env.fs, device.bus, device.name)
    vfio = VFIO_DRIVERS[device.bus]
    refuse_non_platform(device.name, device.bus, device.dt_path)
    adopted = current is not None and current.detached_by_us
    record = OwnerRecord(device.name, device.bus, domain.name, domain.uuid, device.managed,
                         detached_by_us=adopted, state="preparing", since=env.host.clock(),
                         pid=os.getpid())
    if state.driver == vfio:
        owners.write(record)
        return record
    if not device.managed:
        raise HostdevError(f"unmanaged device {device.name} is bound to "
                           f"{state.driver or 'no driver'}, not {vfio}; it must be manually "
                           "detached", f"run 'platform-hostdev nodedev-detach {device.name}' "
                           "or set managed='yes'", code="not-detached", device=device.name,
                           driver=state.driver)
    from platform_hostdev.binding.operations import detach
    from platform_hostdev.host.protection import refuse_if_host_uses

    # console, mounted disk, route, of the device and of every device its unbind takes
    # (device links); consumers that would lose their driver and drivers that forbid
    # unbinding are refused too: never forced here
    refuse_if_host_uses(env.fs, device, force=False)
    record = record.at(detached_by_us=True)
    owners.write(record)  # before the first sysfs write: release knows to give it back
    env.host.step(f"prepare:{device.name}:recorded", record)
    try:
        detach(env.host, device, journal)
    except (Exception, KeyboardInterrupt):
        owners.remove(device.name)  # detach rolled the device back itself
        raise
    env.host.step(f"prepare:{device.name}:detached", record)
    return record


def _check_groups(domain: _Domain, env: HookEnv) -> None:
    ours = {d.name for d in domain.devices}
    for device in domain.devices:
        state = device_state(env.fs, device.bus, device.name)
        group = state.iommu_group
        if group is None:
            raise HostdevError(f"{device.name} has no IOMMU group after binding to vfio",
                               "the device needs an IOMMU (check 'platform-hostdev check-host')",
                               code="no-iommu", device=device.name)
        # an iommufd device in a no-IOMMU group is refused with the kernel's own reason
        # when its cdev is looked for (_hand_over_cdev)
        if is_noiommu(env.fs, group) and not env.allow_noiommu and not device.iommufd:
            raise HostdevError(f"{device.name} is in a no-IOMMU group; QEMU cannot use "
                               "no-IOMMU groups (it never opens /dev/vfio/noiommu-N)",
                               "the device needs an IOMMU; no-IOMMU mode is only for "
                               "user-space drivers and tests", code="no-iommu",
                               device=device.name, group=group)
        blockers = [f"{member} (driver {driver})"
                    for member, driver in group_blockers(env.fs, group, exempt=ours)]
        if blockers:
            raise HostdevError(f"IOMMU group {group} of {device.name} is not viable: "
                               f"{', '.join(blockers)} still bound to host drivers",
                               "add those devices to the domain (managed='yes') or detach "
                               "them with 'platform-hostdev nodedev-detach'",
                               code="group-not-viable", device=device.name, group=group)


def _hand_over_node(record: OwnerRecord, env: HookEnv, owners: Owners) -> OwnerRecord:
    """chown /dev/vfio/N to QEMU's user; its original owner is recorded first."""
    from platform_hostdev.host.qemuconf import qemu_ids

    state = device_state(env.fs, record.bus, record.device)
    group = state.iommu_group
    assert group is not None
    node = f"/dev/vfio/{'noiommu-' if is_noiommu(env.fs, group) else ''}{group}"
    path = env.fs.path(node)
    if not path.exists():
        raise HostdevError(f"{node} for {record.device} does not exist",
                           "is the vfio module loaded and devtmpfs mounted?",
                           code="vfio-unavailable", device=record.device, path=node)
    st = path.stat()
    before: Sequence[int] = [st.st_uid, st.st_gid, st.st_mode & 0o7777]
    if record.node_owner:  # adopted from an earlier run: keep the true original
        before = record.node_owner
    uid, gid = qemu_ids(env.fs)
    record = record.at(group=group, node=node, node_owner=before)
    owners.write(record)  # before the chown: a crash after it still knows the original
    os.chown(path, uid, gid)
    os.chmod(path, 0o660)
    return record


def _chown_to_qemu(env: HookEnv, node: str, earlier: Sequence[int]) -> tuple[Any, list[int]]:
    """The node's path and its [uid, gid, mode] before us (``earlier``: a true original)."""
    path = env.fs.path(node)
    st = path.stat()
    before = list(earlier) or [st.st_uid, st.st_gid, st.st_mode & 0o7777]
    return path, before


def _hand_over_cdev(record: OwnerRecord, device: HookDevice, env: HookEnv,
                    owners: Owners) -> OwnerRecord:
    """The iommufd backend: chown the device's vfio cdev and /dev/iommu to QEMU's user;
    the original owners are recorded first. Refused when the kernel gave the device no
    cdev (a no-IOMMU device, a kernel without CONFIG_VFIO_DEVICE_CDEV) or has no
    /dev/iommu."""
    from platform_hostdev.host.qemuconf import qemu_ids
    from platform_hostdev.vfio.cdev import IOMMU_NODE, device_cdev

    state = device_state(env.fs, record.bus, record.device)
    assert device.sysfs_path is not None
    cdev = device_cdev(env.fs, device.sysfs_path, state.iommu_group)
    fix = ("keep the legacy backend (drop iommufd='yes' from the hostdev's <driver>), or "
           "fix what 'platform-hostdev check-host DOMAIN' reports")
    if cdev.node is None:
        raise HostdevError(f"{record.device} uses the iommufd backend, but {cdev.reason}", fix,
                           code="no-cdev", device=record.device)
    if not env.fs.path(IOMMU_NODE).exists():
        raise HostdevError(f"{record.device} uses the iommufd backend, but {IOMMU_NODE} does "
                           "not exist (the iommufd module is not loaded, or the kernel has no "
                           "CONFIG_IOMMUFD)", "modprobe iommufd; " + fix, code="no-cdev",
                           device=record.device, path=IOMMU_NODE)
    uid, gid = qemu_ids(env.fs)
    held = next((other.iommu_owner for other in owners.all()
                 if other.iommu_owner and other.device != record.device), ())
    cdev_path, cdev_before = _chown_to_qemu(env, cdev.node, record.cdev_owner)
    iommu_path, iommu_before = _chown_to_qemu(env, IOMMU_NODE, record.iommu_owner or held)
    record = record.at(group=state.iommu_group, cdev=cdev.node, cdev_owner=cdev_before,
                       iommu_owner=iommu_before)
    owners.write(record)  # before the chown: a crash after it still knows the originals
    for path in (cdev_path, iommu_path):
        os.chown(path, uid, gid)
        os.chmod(path, 0o660)
    return record


def release(domain: _Domain, env: HookEnv) -> None:
    owners = env.owners()
    journal = env.journal()
    problems = []
    with owners.locked():
        # Finish interrupted binding work first (a killed prepare), then give back.
        release_stale(env, owners, journal)
        for record in owners.all():
            if record.uuid != domain.uuid:
                continue
            try:
                _give_back(record, env, owners, journal)
            except HostdevError as exc:
                problems.append(f"{record.device}: {exc.what}")
    if problems:
        raise HostdevError("could not give back " + "; ".join(problems),
                           "run 'platform-hostdev recover' once the cause is fixed",
                           code="restore-failed", domain=domain.name)


def reconnect(domain: _Domain, env: HookEnv) -> None:
    """Adopt a running domain's devices after a daemon restart (never fails the domain)."""
    owners = env.owners()
    with owners.locked():
        for device in domain.devices:
            current = owners.read(device.name)
            if current is not None and current.uuid != domain.uuid:
                print(f"platform-hostdev: reconnect: {device.name} is recorded for domain "
                      f"{current.domain}, not {domain.name}; left as it is", file=env.err)
                continue
            if current is None:
                state = device_state(env.fs, device.bus, device.name)
                owners.write(OwnerRecord(device.name, device.bus, domain.name, domain.uuid,
                                         device.managed, detached_by_us=False,
                                         state="prepared", group=state.iommu_group,
                                         since=env.host.clock()))
