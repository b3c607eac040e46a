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
* started: QEMU runs: its pid and start time go into the domain's records,
  from which its liveness is judged from then on (never fails the domain).
* release (also after "failed"): give every device recorded for this
  domain's UUID back (:mod:`platform_hostdev.hook.giveback`): /dev/vfio/N (or
  the cdev) ownership restored, /dev/iommu's once no record holds it any
  more, managed devices re-attached to their original driver (a device
  reserved for vfio at boot, nodedev-detach --persistent, stays on vfio),
  records removed. The XML's metadata is not needed: the records are the
  truth, also when the metadata was edited away or a device vanished.
* reconnect: a running domain after a daemon restart: its records get QEMU's
  pid; declared devices without a record are adopted (never fails the domain).
* migrate / restore: refused (QEMU's vfio-platform is not migratable).
Every prepare and release first finishes interrupted binding operations
(journal) and releases devices whose owner is gone (giveback.release_stale),
so nothing stays stranded after a crash of the hook or the host; what fails
there concerns another domain and is a warning, never a refusal.
The hook never calls libvirt: the daemon waits for it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.ownership import OwnerRecord, Owners, process_start
from platform_hostdev.binding.preflight import device_state
from platform_hostdev.domain.rules import (
    check_names_agree,
    refuse_duplicates,
    refuse_non_platform,
)
from platform_hostdev.errors import HostdevError, printable_lines
from platform_hostdev.hook.env import HOOK_CONFIG, HookDevice, HookEnv, read_config
from platform_hostdev.hook.giveback import (
    StaleRelease,
    give_back,
    give_back_domain,
    oserror,
    recover_host,
    release_stale,
)
from platform_hostdev.host.boundary import host_at
from platform_hostdev.host.fs import HostFs, is_noiommu
from platform_hostdev.host.specs import check_spec
from platform_hostdev.vfio.groups import group_blockers
from platform_hostdev.vfio.uapi import VFIO_DRIVERS

if TYPE_CHECKING:
    from platform_hostdev.domain.domainxml import Element

# Light on purpose: libvirt runs the hook on every domain start. binding (the
# driver moves), protection and the guest-DT store are imported where a call
# needs them; records are NamedTuples (dataclasses would load inspect).

__all__ = ["HOOK_CONFIG", "HookEnv", "run", "dispatch", "HookDevice", "resolve_device",
           "release_stale", "StaleRelease", "recover_host"]

_WORKING_OPS = ("prepare", "started", "release", "reconnect", "migrate", "restore")
_NEVER_FAIL = ("started", "reconnect")  # non-zero there makes libvirt kill the guest
_STATE_FIX = ("the device state was not changed by this write: make /run writable, free "
              "space on it, or remove what is in the way, then start the domain again")


class _Domain(NamedTuple):
    name: str
    uuid: str
    devices: list[HookDevice]
    root: Element | None = None  # the domain XML's root element
    keys: tuple[str, ...] = ()  # the hostdevs as declared (name or path), in order


def run(argv: Sequence[str], data: bytes, root: str = "/") -> int:
    """Entry point of the installed hook: the host at ``root`` (``host_at``)."""
    args = list(argv) + ["-"] * (4 - len(argv))
    if args[1] not in _WORKING_OPS:
        return 0  # start, stopped...: nothing to do, nothing to fail on
    host = host_at(root)
    env = HookEnv(host, allow_noiommu=read_config(host.fs).get("allow_noiommu") == "yes")
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
        if op == "prepare":
            prepare(_parse_domain(data, name, env.fs), env)
        elif op == "release":
            release(_domain_id(data, name), env)
        elif op == "started":
            started(_domain_id(data, name), env)
        else:
            reconnect(_domain_id(data, name), data, env)
        return 0
    except HostdevError as exc:
        return _refused(args, exc, env.err)
    except OSError as exc:  # a host write no step turned into its own error
        return _refused(args, oserror(exc, f"{op} of domain {name}", _STATE_FIX), env.err)


def _refused(args: Sequence[str], exc: HostdevError, err: TextIO) -> int:
    name, op = args[0], args[1]
    # libvirt shows this in its error message: names from the DT and sysfs are escaped
    print(printable_lines(f"platform-hostdev: {op} of domain {name} refused: {exc.what}"),
          file=err)
    if exc.fix:
        print(printable_lines(f"platform-hostdev: hint: {exc.fix}"), file=err)
    # A non-zero started or reconnect makes libvirt kill the running guest: never that.
    return 0 if op in _NEVER_FAIL else 1


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


def _domain_id(data: bytes, name: str) -> _Domain:
    """The domain's name and UUID only: what release, started and reconnect need to find
    its records (its metadata may be gone or invalid by now)."""
    from platform_hostdev.domain.domainxml import parse_domain

    root = parse_domain(data)
    uuid = (root.findtext("uuid") or "").strip()
    if not uuid:
        raise HostdevError("the domain XML has no <uuid>", "libvirt always sets one",
                           code="xml-invalid", domain=name)
    return _Domain(name, uuid, [], root)


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
        _sweep(env, owners, journal)
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
            problems = _roll_back(done, env, owners, journal)
            error = oserror(failure, f"preparing domain {domain.name}: a write",
                            _STATE_FIX) if isinstance(failure, OSError) else failure
            if problems and isinstance(error, HostdevError):
                error.what += "; giving back failed too: " + "; ".join(problems)
                error.fix = (error.fix or "") + " (then run 'platform-hostdev recover')"
            if error is failure:
                raise
            raise error from None


def _sweep(env: HookEnv, owners: Owners, journal: Journal) -> None:
    """release_stale for an unrelated domain's call: what fails there is a warning."""
    stale = release_stale(env, owners, journal)
    for line in stale.failed:
        env.warn(f"could not give back a device of a stopped domain: {line}; "
                 "run 'platform-hostdev recover' once the cause is fixed")


def _roll_back(done: list[OwnerRecord], env: HookEnv, owners: Owners,
               journal: Journal) -> list[str]:
    """Give back what a failed prepare took, every device whatever fails; the problems."""
    problems = []
    for record in reversed(done):
        try:
            record = owners.read(record.device) or record
        except HostdevError:
            pass  # our own record of this call, damaged meanwhile: what we wrote is known
        problems += [f"{record.device}: {p}"
                     for p in give_back(record, env, owners, journal).problems]
    return problems


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
    _give_to_qemu(path, node, uid, gid, record.device)
    return record


def _give_to_qemu(path: Any, node: str, uid: int, gid: int, device: str) -> None:
    """chown/chmod a /dev node to QEMU's user; a refusal is a HostdevError with the path."""
    try:
        os.chown(path, uid, gid)
        os.chmod(path, 0o660)
    except OSError as exc:
        raise oserror(exc, f"handing {node} of {device} to QEMU's user (chown/chmod)",
                      "run the hook as root (libvirtd does) on a writable /dev (devtmpfs)",
                      device=device, path=node) from None


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
    for path, node in ((cdev_path, cdev.node), (iommu_path, IOMMU_NODE)):
        _give_to_qemu(path, node, uid, gid, record.device)
    return record


def release(domain: _Domain, env: HookEnv) -> None:
    """Give back every device recorded for the domain's UUID, each whatever the others
    do; restore-failed names what is left (the records stay for the next try)."""
    owners = env.owners()
    journal = env.journal()
    with owners.locked():
        # Finish interrupted binding work first (a killed prepare), then give back.
        _sweep(env, owners, journal)
        results = give_back_domain(domain.uuid, env, owners, journal)
    for result in results:
        for note in result.notes:
            env.warn(note)
    for damaged in owners.damaged():  # whose it is cannot be read: maybe this domain's
        env.warn(f"{owners.describe(damaged)}; its device stays refused until it is "
                 f"removed (hint: {damaged.fix})")
    problems = [f"{r.device}: {p}" for r in results for p in r.problems]
    if problems:
        raise HostdevError("could not give back " + "; ".join(problems),
                           "fix the cause, then run 'platform-hostdev recover' (the records "
                           "of what is left are kept)", code="restore-failed",
                           domain=domain.name)


def _record_qemu(domain: _Domain, env: HookEnv, owners: Owners, phase: str) -> list[str]:
    """Write QEMU's pid and start time into the domain's records; the devices done."""
    pid = owners.qemu_pid(domain.name)
    start = process_start(env.fs, pid) if pid is not None else None
    records = [r for r in owners.all() if r.uuid == domain.uuid]
    if pid is None or start is None:
        if records:
            env.warn(f"{phase}: no running QEMU found for domain {domain.name} (libvirt's pid "
                     "file names none); its devices stay recorded as they are")
        return []
    for record in records:
        owners.write(record.at(state="started", qemu_pid=pid, qemu_start=start))
    return [r.device for r in records]


def started(domain: _Domain, env: HookEnv) -> None:
    """QEMU runs: record its pid and start time, the liveness that cannot lie."""
    owners = env.owners()
    with owners.locked():
        _record_qemu(domain, env, owners, "started")


def reconnect(domain: _Domain, data: bytes, env: HookEnv) -> None:
    """Adopt a running domain's devices after a daemon restart (never fails the domain):
    its records get QEMU's pid; a declared device without a record is recorded."""
    owners = env.owners()
    with owners.locked():
        for device in _declared_devices(data, domain, env):
            current = owners.read(device.name)
            if current is not None and current.uuid != domain.uuid:
                env.warn(f"reconnect: {device.name} is recorded for domain {current.domain}, "
                         f"not {domain.name}; left as it is")
                continue
            if current is None:
                state = device_state(env.fs, device.bus, device.name)
                owners.write(OwnerRecord(device.name, device.bus, domain.name, domain.uuid,
                                         device.managed, detached_by_us=False,
                                         state="prepared", group=state.iommu_group,
                                         since=env.host.clock()))
        _record_qemu(domain, env, owners, "reconnect")


def _declared_devices(data: bytes, domain: _Domain, env: HookEnv) -> list[HookDevice]:
    """The domain's declared devices that are on the host; what is not is a warning."""
    try:
        return _parse_domain(data, domain.name, env.fs).devices
    except HostdevError as exc:
        env.warn(f"reconnect: {exc.what}; only the devices already recorded are kept")
        return []
