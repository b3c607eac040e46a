"""check-host: is this host ready for platform-device passthrough? (like virt-host-validate)

Each check gives a :class:`Check`: PASS, WARN or FAIL, the finding, and for
WARN/FAIL the exact fix. This module holds the model and the host-wide
checks (VFIO modules, QEMU, memory locking, the libvirt hook);
:mod:`checkhost_conf` checks qemu.conf and AppArmor/SELinux,
:mod:`checkhost_devices` each requested device. The command
(:mod:`commands_checkhost`) exits 0 when nothing FAILs, 1 otherwise.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lxml import etree

from platform_hostdev.cli.hook import HOOK_DIR, HOOK_NAME
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.processes import ModprobeRunner
from platform_hostdev.virt.qemu_caps import QemuCaps, check_vfio_platform

__all__ = [
    "PASS",
    "WARN",
    "FAIL",
    "Check",
    "HOOK",
    "exit_code",
    "module_state",
    "module_checks",
    "qemu_check",
    "memory_check",
    "hook_checks",
]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
HOOK = f"{HOOK_DIR}/{HOOK_NAME}"
_DAEMON_PIDFILES = ("/run/libvirtd.pid", "/run/virtqemud.pid")
_MODULES = (("vfio", FAIL, "CONFIG_VFIO"), ("vfio_platform", FAIL, "CONFIG_VFIO_PLATFORM"),
            ("vfio_amba", WARN, "CONFIG_VFIO_AMBA"))
_KO = re.compile(r"\.ko(\.[a-z]+)?$")


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` is PASS, WARN or FAIL; ``fix`` says what to do (WARN/FAIL)."""

    check: str
    status: str
    finding: str
    fix: str = ""

    def lines(self) -> list[str]:
        """``STATUS: check: finding``, then ``      fix: ...`` for WARN and FAIL."""
        first = f"{self.status}: {self.check}: {self.finding}"
        return [first, f"      fix: {self.fix}"] if self.fix and self.status != PASS else [first]

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "finding": self.finding,
                "fix": self.fix}


def exit_code(checks: Sequence[Check]) -> int:
    """0 when no check FAILed, 1 otherwise."""
    return 1 if any(c.status == FAIL for c in checks) else 0


# ---------------------------------------------------------------- kernel modules

def _module_names(text: str) -> set[str]:
    """Module names (dashes as underscores) of a modules.dep / modules.builtin file."""
    names = set()
    for line in text.splitlines():
        path = line.split(":", 1)[0].strip()
        if path:
            names.add(_KO.sub("", os.path.basename(path)).replace("-", "_"))
    return names


def module_state(fs: HostFs, module: str, modprobe: ModprobeRunner | None) -> str:
    """"loaded" (or built in), "loadable", "missing", or "unknown" (nothing to tell by).

    Without modules.dep, ``modprobe -n`` (a dry run, through the host's modprobe
    runner) tells.
    """
    if fs.path(f"/sys/module/{module}").is_dir():
        return "loaded"
    release = (fs.read_text("/proc/sys/kernel/osrelease") or "").strip()
    dep = fs.read_text(f"/lib/modules/{release}/modules.dep") if release else None
    if dep is not None:
        builtin = fs.read_text(f"/lib/modules/{release}/modules.builtin") or ""
        return "loadable" if module in _module_names(dep) | _module_names(builtin) else "missing"
    if modprobe is None:
        return "unknown"
    import subprocess

    try:
        done = modprobe(["modprobe", "-n", "-q", module])
    except (OSError, subprocess.SubprocessError):
        return "missing"
    return "loadable" if done.returncode == 0 else "missing"


def module_checks(fs: HostFs, modprobe: ModprobeRunner | None) -> list[Check]:
    """vfio, vfio_platform and vfio_amba loaded or loadable."""
    checks = []
    for module, severity, option in _MODULES:
        state = module_state(fs, module, modprobe)
        name = f"{module} module"
        if state == "loaded":
            checks.append(Check(name, PASS, "loaded (or built in)"))
        elif state == "loadable":
            checks.append(Check(name, PASS, "loadable (nodedev-detach and the hook load it)"))
        elif state == "unknown":
            checks.append(Check(name, WARN, "not loaded, and no modules.dep to tell whether "
                                "it can be", f"modprobe {module}"))
        else:
            use = ("AMBA devices cannot be detached to vfio-amba (QEMU cannot use them anyway)"
                   if module == "vfio_amba" else "no device can be given to a guest")
            checks.append(Check(
                name, severity, f"not loaded and not in this kernel's modules: {use}",
                f"use a kernel built with {option}=m (Debian's stock arm64 kernels do not "
                "enable VFIO_PLATFORM, VFIO_AMBA or VFIO_NOIOMMU), or build the module out "
                "of tree"))
    return checks


# ---------------------------------------------------------------- QEMU and the domain

def qemu_check(emulator: str | None, probe: Callable[[str], QemuCaps]) -> Check:
    """The emulator has vfio-platform (WARN when it deprecates it)."""
    if emulator is None:
        return Check("QEMU vfio-platform", FAIL, "no qemu-system-aarch64 on this host",
                     "apt install qemu-system-arm (10.0 from bookworm-backports has "
                     "vfio-platform)")
    try:
        caps = probe(emulator)
        warnings = check_vfio_platform(caps)
    except HostdevError as exc:
        return Check("QEMU vfio-platform", FAIL, exc.what, exc.fix)
    version = ".".join(map(str, caps.version)) if caps.version else "of unknown version"
    if warnings:
        return Check("QEMU vfio-platform", WARN, f"{emulator} (QEMU {version}) has "
                     "vfio-platform, deprecated", "; ".join(warnings))
    return Check("QEMU vfio-platform", PASS, f"{emulator} (QEMU {version}) has vfio-platform")


def memory_check(root: etree._Element) -> Check:
    """VFIO pins guest RAM: the domain needs <memoryBacking><locked/> or a memtune hard_limit."""
    locked = root.find("memoryBacking/locked") is not None
    limit = root.find("memtune/hard_limit")
    if limit is not None:
        return Check("memory locking", PASS, f"<memtune><hard_limit> {limit.text} "
                     f"{limit.get('unit', 'KiB')} bounds the memory QEMU may lock")
    if locked:
        return Check("memory locking", WARN, "<memoryBacking><locked/> without <memtune>"
                     "<hard_limit>: libvirt makes QEMU's RLIMIT_MEMLOCK unlimited (libvirtd "
                     "needs CAP_SYS_RESOURCE for that)",
                     "add <memtune><hard_limit unit='KiB'>GUEST_RAM+1GiB</hard_limit>"
                     "</memtune> to bound it")
    return Check("memory locking", FAIL, "neither <memoryBacking><locked/> nor <memtune>"
                 "<hard_limit>: libvirt raises RLIMIT_MEMLOCK only for VFIO devices it knows, "
                 "so VFIO's DMA mapping of guest RAM fails",
                 "add <memoryBacking><locked/></memoryBacking> (platform-hostdev define adds "
                 "it) and <memtune><hard_limit unit='KiB'>GUEST_RAM+1GiB</hard_limit></memtune>")


# ---------------------------------------------------------------- the libvirt hook

def _daemon_start(fs: HostFs) -> tuple[str, float] | None:
    """(daemon name, start time in seconds since the epoch) of the running libvirt daemon."""
    btime = next((float(line.split()[1]) for line in
                  (fs.read_text("/proc/stat") or "").splitlines()
                  if line.startswith("btime ")), None)
    for pidfile in _DAEMON_PIDFILES:
        pid = (fs.read_text(pidfile) or "").strip()
        stat = fs.read_text(f"/proc/{pid}/stat") if pid.isdigit() else None
        if stat is None or btime is None:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 19 and fields[19].isdigit():  # field 22, starttime in clock ticks
            name = os.path.basename(pidfile).removesuffix(".pid")
            return name, btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return None


def hook_checks(fs: HostFs) -> list[Check]:
    """Our qemu hook installed, executable, and there before the daemon started."""
    hook = fs.path(HOOK)
    try:
        st = hook.stat()
    except OSError:
        return [Check("libvirt hook", FAIL, f"{HOOK} is missing: managed devices are never "
                      "detached at start and QEMU cannot open them",
                      "platform-hostdev hook install, then restart libvirtd")]
    if not st.st_mode & 0o111 or not hook.is_file():
        return [Check("libvirt hook", FAIL, f"{HOOK} is not an executable file: libvirt skips "
                      "it", f"chmod 0755 {HOOK}")]
    checks = [Check("libvirt hook", PASS, f"{HOOK} is installed")]
    daemon = _daemon_start(fs)
    if daemon is None:
        checks.append(Check("libvirt hook seen", WARN, "no running libvirtd or virtqemud found "
                            "(/run/libvirtd.pid, /run/virtqemud.pid)",
                            "start libvirtd; it reads the hook directory when it starts"))
    elif max(st.st_mtime, st.st_ctime) > daemon[1]:
        checks.append(Check("libvirt hook seen", WARN, f"{HOOK} was installed or changed after "
                            f"{daemon[0]} started: the daemon lists hook scripts only at start, "
                            "so a newly installed hook is not run yet",
                            f"restart {daemon[0]} (systemctl restart {daemon[0]}; running "
                            "domains keep running)"))
    else:
        checks.append(Check("libvirt hook seen", PASS, f"installed before {daemon[0]} started"))
    return checks
