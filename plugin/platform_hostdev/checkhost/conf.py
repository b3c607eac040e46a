"""check-host: libvirt's qemu.conf and the host's security module.

:func:`parse_conf` reads libvirt's config syntax (src/util/virconf.c); the
qemu user/group are resolved with :func:`qemuconf.qemu_ids`, as the libvirt
hook resolves them when it hands /dev/vfio/N over.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from platform_hostdev.checkhost.iommufd import IOMMUFD_APPARMOR_RULES
from platform_hostdev.checkhost.model import FAIL, PASS, WARN, Check
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.qemuconf import (
    DEFAULT_GROUP,
    DEFAULT_USER,
    QEMU_CONF,
    ConfSyntaxError,
    ConfValue,
    parse_conf,
    qemu_ids,
)

__all__ = [
    "DEFAULT_DEVICE_ACL",
    "APPARMOR_LOCAL",
    "APPARMOR_RULES",
    "ConfValue",
    "ConfSyntaxError",
    "parse_conf",
    "QemuConf",
    "load_qemu_conf",
    "qemu_conf_checks",
    "security_checks",
]

DEFAULT_DEVICE_ACL = ("/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom",
                      "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd")
"""libvirt's list when cgroup_device_acl is unset (a set list REPLACES it)."""
APPARMOR_LOCAL = "/etc/apparmor.d/local/abstractions/libvirt-qemu"
_APPARMOR_DROPIN = "/etc/apparmor.d/abstractions/libvirt-qemu.d"
APPARMOR_RULES = (("/dev/vfio/vfio", "rw"), ("/dev/vfio/[0-9]*", "rw"),
                  ("/sys/bus/platform/devices/**", "r"), ("/sys/devices/platform/**", "r"),
                  ("/sys/firmware/devicetree/**", "r"))
"""What QEMU's vfio-platform opens and reads, beyond virt-aa-helper's PCI-only rules."""


@dataclass(frozen=True)
class QemuConf:
    """qemu.conf as read: its settings, or why there are none."""

    settings: dict[str, ConfValue]
    present: bool
    error: HostdevError | None = None


def load_qemu_conf(fs: HostFs) -> QemuConf:
    """/etc/libvirt/qemu.conf below the host root (empty settings when missing or broken)."""
    text = fs.read_text(QEMU_CONF)
    if text is None:
        return QemuConf({}, False)
    try:
        return QemuConf(parse_conf(text, QEMU_CONF), True)
    except HostdevError as exc:
        return QemuConf({}, True, exc)


def _acl_line(entries: Sequence[str]) -> str:
    return "cgroup_device_acl = [ " + ", ".join(f'"{e}"' for e in entries) + " ]"


def qemu_conf_checks(fs: HostFs, conf: QemuConf, groups: Sequence[str],
                     for_domain: bool, iommufd_nodes: Sequence[str] = (),
                     legacy: bool = True) -> list[Check]:
    """cgroup_device_acl, namespaces and user/group for the VFIO nodes a domain needs: the
    groups (and /dev/vfio/vfio) of ``legacy`` devices, ``iommufd_nodes`` (/dev/iommu, the
    vfio cdevs) of iommufd ones."""
    if conf.error is not None:
        return [Check("qemu.conf", FAIL, conf.error.what, conf.error.fix)]
    checks = []
    settings = conf.settings
    acl = settings.get("cgroup_device_acl")
    if acl is not None and not isinstance(acl, list):
        return [Check("qemu.conf cgroup_device_acl", FAIL, "cgroup_device_acl is not a list",
                      "write it as a list: " + _acl_line(DEFAULT_DEVICE_ACL))]
    current = [str(e) for e in acl] if acl is not None else list(DEFAULT_DEVICE_ACL)
    needed = [*(["/dev/vfio/vfio", *(f"/dev/vfio/{g}" for g in groups)] if legacy else []),
              *iommufd_nodes]
    missing = [e for e in needed if e not in current]
    lost = [e for e in DEFAULT_DEVICE_ACL if e not in current]
    full = list(dict.fromkeys([*DEFAULT_DEVICE_ACL, *current, *needed]))
    origin = "libvirt's default list (unset)" if acl is None else f"set in {QEMU_CONF}"
    fix = (f"set in {QEMU_CONF} (the list REPLACES libvirt's defaults, so keep them): "
           f"{_acl_line(full)}; then restart libvirtd")
    if missing:
        status = FAIL if for_domain else WARN
        checks.append(Check("qemu.conf cgroup_device_acl", status,
                            f"{', '.join(missing)} missing from {origin}: QEMU cannot open "
                            "them (devices cgroup, and absent from its private /dev)", fix))
    elif lost:
        checks.append(Check("qemu.conf cgroup_device_acl", WARN,
                            f"the list replaces libvirt's defaults and lacks {', '.join(lost)}",
                            fix))
    else:
        checks.append(Check("qemu.conf cgroup_device_acl", PASS,
                            f"holds {', '.join(needed)} and libvirt's defaults"))
    checks.append(_namespaces_check(settings.get("namespaces")))
    checks.append(_owner_check(fs, settings))
    return checks


def _namespaces_check(value: ConfValue | None) -> Check:
    if value is None or value == ["mount"]:
        return Check("qemu.conf namespaces", PASS,
                     '["mount"]' + (" (default)" if value is None else "") +
                     ": QEMU's private /dev holds only the cgroup_device_acl nodes and "
                     "the ones libvirt knows")
    if value == []:
        return Check("qemu.conf namespaces", PASS, "[]: QEMU sees the host's /dev")
    return Check("qemu.conf namespaces", FAIL, f"namespaces = {value!r} is not a value libvirt "
                 "accepts", 'use namespaces = [ "mount" ] (the default) or namespaces = [ ]')


def _owner_check(fs: HostFs, settings: dict[str, ConfValue]) -> Check:
    user = str(settings.get("user", DEFAULT_USER))
    group = str(settings.get("group", DEFAULT_GROUP))
    try:
        qemu_ids(fs, dict(settings))
    except HostdevError as exc:
        return Check("qemu.conf user/group", FAIL, f"{exc.what}: the hook cannot hand "
                     "/dev/vfio/N over to QEMU", exc.fix)
    return Check("qemu.conf user/group", PASS,
                 f"the hook hands /dev/vfio/N to {user}:{group} (QEMU's account)")


# ---------------------------------------------------------------- security modules

def _covers(rule_path: str, rule_perms: str, path: str, perms: str) -> bool:
    if not set(perms) <= set(rule_perms):
        return False
    if rule_path == path:
        return True
    if rule_path.endswith("/**"):
        return path.startswith(rule_path[:-2])
    if rule_path.endswith("/*"):
        return path.startswith(rule_path[:-1]) and "/" not in path[len(rule_path) - 1:]
    return False


def _apparmor_rules(fs: HostFs) -> list[tuple[str, str]]:
    texts = [fs.read_text(APPARMOR_LOCAL) or ""]
    dropin = fs.path(_APPARMOR_DROPIN)
    if dropin.is_dir():
        texts += [fs.read_text(f"{_APPARMOR_DROPIN}/{f.name}") or ""
                  for f in sorted(dropin.iterdir()) if f.is_file()]
    rules = []
    for text in texts:
        for line in text.splitlines():
            words = line.split("#", 1)[0].strip().rstrip(",").split()
            if len(words) == 2 and words[0].startswith("/"):
                rules.append((words[0], words[1]))
    return rules


def security_checks(fs: HostFs, conf: QemuConf, iommufd: bool = False) -> list[Check]:
    """AppArmor rules for QEMU's VFIO and sysfs access (``iommufd``: also /dev/iommu and the
    vfio cdevs), or the SELinux labelling note."""
    if conf.settings.get("security_driver") == "none":
        return [Check("security driver", PASS, 'qemu.conf security_driver = "none": QEMU is '
                      "not confined")]
    checks = []
    apparmor = (fs.read_text("/sys/module/apparmor/parameters/enabled") or "").strip()
    if apparmor[:1] in ("Y", "y"):
        rules = _apparmor_rules(fs)
        wanted = [*APPARMOR_RULES, *(IOMMUFD_APPARMOR_RULES if iommufd else ())]
        missing = [(p, m) for p, m in wanted
                   if not any(_covers(rp, rm, p, m) for rp, rm in rules)]
        if missing:
            lines = " ".join(f"{p} {m}," for p, m in missing)
            checks.append(Check(
                "AppArmor", FAIL, f"enabled, and {APPARMOR_LOCAL} lacks "
                f"{', '.join(p for p, _ in missing)}: virt-aa-helper adds /dev/vfio rules only "
                "for PCI hostdevs, so QEMU is denied", f"append to {APPARMOR_LOCAL}: {lines} "
                "(the profile of each domain is rebuilt at its next start)"))
        else:
            checks.append(Check("AppArmor", PASS, f"enabled; {APPARMOR_LOCAL} allows the VFIO "
                                "nodes and the sysfs/devicetree reads QEMU does"))
    enforce = fs.read_text("/sys/fs/selinux/enforce")
    if enforce is not None and enforce.strip() == "1":
        checks.append(Check(
            "SELinux", WARN, "enforcing: libvirt relabels /dev/vfio/N only for its own "
            "hostdevs, not for devices passed on the QEMU command line",
            "label /dev/vfio/N for QEMU (e.g. chcon -t svirt_image_t, matching the "
            "domain's MCS category) or give the domain <seclabel type='none'/>"))
    elif enforce is not None:
        checks.append(Check("SELinux", PASS, "permissive: nothing is denied"))
    if not checks:
        checks.append(Check("security module", PASS, "neither AppArmor nor SELinux is active"))
    return checks
