"""A private libvirtd + virtlogd for the real tier, started and stopped by the tests.

The daemons run as root in their own mount namespace (``unshare --mount``):
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and
/etc/libvirt/qemu are bind mounts of directories under a temporary ``base``,
so nothing leaks into the host's libvirt state and the domain logs are
readable at ``base/log/qemu/NAME.log``. The client socket is
``base/sock/libvirt-sock``; connect with :attr:`PrivateLibvirt.uri`. The hook
directory /etc/libvirt/hooks stays the host's unless ``hooks`` are given.
``mounts`` are further mounts made in that namespace before the daemons start
(e.g. an extracted Debian package's files over the host's paths).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PrivateLibvirt", "DaemonError", "start", "stop", "private_libvirtd"]

_PRIVATE = {"run": "/run/libvirt", "lib": "/var/lib/libvirt", "cache": "/var/cache/libvirt",
            "log": "/var/log/libvirt", "qemu-etc": "/etc/libvirt/qemu"}
_SCRIPT = """set -e
base=$1
for pair in {pairs}; do
    src=$base/${{pair%%=*}}; dst=${{pair#*=}}
    mkdir -p "$src" "$dst"
    mount --bind "$src" "$dst"
done
{mounts}
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt/qemu
virtlogd -d -p "$base/virtlogd.pid"
libvirtd -d -f "$base/libvirtd.conf" -p "$base/libvirtd.pid"
"""


class DaemonError(Exception):
    """The private daemons could not be started."""


@dataclass
class PrivateLibvirt:
    base: Path

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.base}/sock/libvirt-sock"

    def domain_log(self, name: str) -> str:
        path = self.base / "log" / "qemu" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self) -> list[int]:
        result = []
        for name in ("libvirtd.pid", "virtlogd.pid"):
            path = self.base / name
            if path.exists() and path.read_text().strip().isdigit():
                result.append(int(path.read_text()))
        return result


def start(base: Path, timeout: float = 20.0,
          hooks: dict[str, str] | None = None,
          mounts: Sequence[Sequence[str]] = ()) -> PrivateLibvirt:
    """Start virtlogd and libvirtd below ``base``; DaemonError naming what is missing.

    ``hooks`` maps paths below /etc/libvirt/hooks (e.g. "qemu.d/x") to executable
    scripts: they are installed in a private hooks directory before the daemon
    starts (libvirt reads hooks at start-up), leaving the host's untouched.
    ``mounts`` are argument lists of mount(8), run in the daemons' namespace only.
    """
    if os.geteuid() != 0:
        raise DaemonError("the libvirt tier must run as root (it starts libvirtd for "
                          "qemu:///system)")
    missing = [b for b in ("libvirtd", "virtlogd", "virsh", "qemu-system-aarch64", "unshare",
                           "virt-xml-validate") if shutil.which(b) is None]
    if missing:
        raise DaemonError(f"missing programs {', '.join(missing)}: run scripts/setup-host "
                          "(apt -t bookworm-backports libvirt-daemon libvirt-daemon-driver-qemu "
                          "libvirt-clients qemu-system-arm)")
    (base / "sock").mkdir(parents=True)
    (base / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{base}/sock"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        f'log_outputs = "3:file:{base}/libvirtd.log"\n')
    private = dict(_PRIVATE)
    if hooks is not None:
        private["hooks"] = "/etc/libvirt/hooks"
        for rel, text in hooks.items():
            script = base / "hooks" / rel
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(text)
            script.chmod(0o755)
    pairs = " ".join(f"{k}={v}" for k, v in private.items())
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           _SCRIPT.format(pairs=pairs, mounts="\n".join(
                               shlex.join(["mount", *m]) for m in mounts)), "sh", str(base)],
                          capture_output=True, text=True, timeout=60, check=False)
    daemon = PrivateLibvirt(base)
    if done.returncode != 0:
        stop(daemon)
        raise DaemonError(f"starting the private libvirtd failed (exit {done.returncode}): "
                          f"{done.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while not (base / "sock" / "libvirt-sock").exists():
        if time.monotonic() > deadline:
            log = (base / "libvirtd.log").read_text() if (base / "libvirtd.log").exists() else ""
            stop(daemon)
            raise DaemonError(f"libvirtd did not create its socket in {timeout}s: {log[-2000:]}")
        time.sleep(0.1)
    return daemon


def stop(daemon: PrivateLibvirt) -> None:
    """Stop the daemons we started (by their pid files) and remove ``base``."""
    for pid in daemon.pids():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break
            time.sleep(0.1)
    shutil.rmtree(daemon.base, ignore_errors=True)


@contextmanager
def private_libvirtd(hooks: dict[str, str] | None = None,
                     mounts: Sequence[Sequence[str]] = ()) -> Iterator[PrivateLibvirt]:
    """start() in a fresh temporary base, stop() and clean up afterwards."""
    base = Path(tempfile.mkdtemp(prefix="phd-libvirt-"))
    try:
        daemon = start(base / "d", hooks=hooks, mounts=mounts)
    except DaemonError:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        yield daemon
    finally:
        stop(daemon)
        shutil.rmtree(base, ignore_errors=True)
