"""Guest tier: the rendered libvirt hook against the real kernel's vfio-platform and vfio-amba.

Runs INSIDE the emulated board (Debian's arm64 6.12 kernel, vfio in no-IOMMU
mode, vfio-platform reset_required=0)::

    python3 -m board run -- python3 -m pytest -q -p no:cacheprovider tests/guest/test_hook_guest.py

The hook is rendered for root "/" (``hook.install.render_hook``) into a
temporary file and run as libvirt runs it: a subprocess, argv ``DOMAIN OP
SUBOP -``, the translated domain XML on stdin, libvirt's environment only.
The board has no IOMMU, so /etc/platform-hostdev/hook.conf sets
``allow_noiommu = yes``: QEMU could not use a no-IOMMU group, but the binding
path and the node hand-over are what is tested here. A libvirt-qemu account
is added to /etc/passwd and /etc/group when missing. Every file the tests add
or change is put back afterwards; every device ends where it started
(a000000.virtio_mmio unbound, 9030000.pl061 on pl061_gpio).
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.guestdt.store import STATE_DIR
from platform_hostdev.hook.install import render_hook
from platform_hostdev.hook.qemu import HOOK_CONFIG
from platform_hostdev.host.fs import HostFs

from tests.support.domains import synced_domain

VIRTIO = "a000000.virtio_mmio"
PL061 = "9030000.pl061"
QEMU_USER = "libvirt-qemu"
DEFAULT_QEMU_ID = 64055  # Debian's libvirt-qemu uid/gid
ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "USER": "root", "LOGNAME": "root"}  # what libvirt passes to a hook, nothing more
SUBOP = {"prepare": "begin", "release": "end"}
# dispatch() on the live host, with a step observer that SIGKILLs the process at a step
_KILL_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    from platform_hostdev.hook.env import read_config
    from platform_hostdev.hook.qemu import HookEnv, dispatch
    from platform_hostdev.host.boundary import host_at

    wanted = sys.argv[1]

    def step(what, record):
        if what == wanted:
            os.kill(os.getpid(), signal.SIGKILL)

    host = host_at("/").replace(observer=step)
    env = HookEnv(host, allow_noiommu=read_config(host.fs).get("allow_noiommu") == "yes")
    sys.exit(10 + dispatch(sys.argv[2:], sys.stdin.buffer.read(), env))
""")


Used = list[tuple[str, bytes]]  # the domains a test used: (name, translated XML)


@dataclass(frozen=True)
class Board:
    hook: Path
    uid: int
    gid: int


def _restore_file(path: Path, before: bytes | None) -> None:
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


def _ensure_account(path: Path, line: str) -> bytes | None:
    """Add ``line`` to an /etc account file unless the name is there; return the old bytes."""
    before = path.read_bytes() if path.exists() else None
    text = (before or b"").decode()
    if not any(entry.split(":", 1)[0] == QEMU_USER for entry in text.splitlines()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")
    return before


def _account_id(path: Path) -> int:
    for entry in path.read_text().splitlines():
        fields = entry.split(":")
        if fields[0] == QEMU_USER:
            return int(fields[2])
    raise AssertionError(f"{QEMU_USER} missing from {path}")


def _pristine() -> list[str]:
    """What differs from the board's state at boot (virtio unbound, pl061 on pl061_gpio)."""
    fs = HostFs("/")
    problems = []
    for bus, name, driver in (("platform", VIRTIO, None), ("amba", PL061, "pl061_gpio")):
        state = device_state(fs, bus, name)
        if (state.driver, state.override) != (driver, None):
            problems.append(f"{name} on {state.driver} (override {state.override}), "
                            f"expected {driver}")
    problems += [f"ownership record {r.device} ({r.domain})" for r in Owners(fs).all()]
    problems += [f"journal {d}" for d in Journal(fs).devices()]
    return problems


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    missing = [what for what, ok in (
        ("the emulated board (/run/platform-hostdev-board)",
         os.path.exists("/run/platform-hostdev-board")),
        ("root", os.geteuid() == 0),
        ("vfio no-IOMMU mode", Path("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
         .read_text().strip() == "Y"),
        ("the vfio-platform driver", os.path.isdir("/sys/bus/platform/drivers/vfio-platform")),
        ("the vfio-amba driver", os.path.isdir("/sys/bus/amba/drivers/vfio-amba")),
    ) if not ok]
    if missing:
        pytest.fail("hook guest tests need: " + "; ".join(missing), pytrace=False)
    assert _pristine() == [], "the board does not start pristine"
    conf = Path(HOOK_CONFIG)
    passwd, group = Path("/etc/passwd"), Path("/etc/group")
    saved_conf = conf.read_bytes() if conf.exists() else None
    conf_dir_existed = conf.parent.exists()
    saved_passwd = _ensure_account(passwd, f"{QEMU_USER}:x:{DEFAULT_QEMU_ID}:{DEFAULT_QEMU_ID}:"
                                           "Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin")
    saved_group = _ensure_account(group, f"{QEMU_USER}:x:{DEFAULT_QEMU_ID}:")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("# written by tests/guest/test_hook_guest.py\nallow_noiommu = yes\n")
    hook = tmp_path_factory.mktemp("hook") / "platform-hostdev"
    hook.write_text(render_hook("/"))
    hook.chmod(0o755)
    try:
        yield Board(hook, _account_id(passwd), _account_id(group))
    finally:
        _restore_file(conf, saved_conf)
        if not conf_dir_existed:
            conf.parent.rmdir()
        _restore_file(passwd, saved_passwd)
        _restore_file(group, saved_group)


@pytest.fixture
def domains(board: Board) -> Iterator[Used]:
    """The domains a test uses; afterwards their stored guest DTs go and the board is
    checked (and, if a test failed half-way, put back by release + recover)."""
    used: Used = []
    state_existed = Path(STATE_DIR).exists()
    yield used
    problems = _pristine()
    if problems:  # a failed test: clean up so the next one starts pristine, then report
        for name, xml in used:
            hook_call(board, name, "release", xml)
        recover()
    for _name, xml in used:
        for path in Path(STATE_DIR, "guest-dt").glob(f"{uuid_of(xml)}.*"):
            path.unlink()
    if not state_existed:
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    assert problems == [] and _pristine() == []


def uuid_of(xml: bytes) -> str:
    return xml.split(b"<uuid>", 1)[1].split(b"</uuid>", 1)[0].decode().strip()


def domain_xml(name: str, devices: list[str], used: Used) -> bytes:
    """The translated domain, with the guest DT 'platform-hostdev sync' would store."""
    xml = synced_domain(Path("/"), name, devices)
    used.append((name, xml))
    return xml


def hook_call(board: Board, domain: str, op: str, xml: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(board.hook), domain, op, SUBOP[op], "-"], input=xml.decode(),
                          capture_output=True, text=True, env=ENV, timeout=180, check=False)


def recover() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "platform_hostdev", "recover"],
                          capture_output=True, text=True, timeout=180, check=False)


def noiommu_node(name: str) -> Path:
    group = HostFs("/").link_name(f"/sys/bus/platform/devices/{name}/iommu_group")
    assert group is not None, f"{name} has no IOMMU group"
    return Path(f"/dev/vfio/noiommu-{group}")


def test_prepare_binds_and_hands_over_then_release_gives_back(board: Board,
                                                              domains: Used) -> None:
    xml = domain_xml("vm1", [VIRTIO], domains)
    done = hook_call(board, "vm1", "prepare", xml)
    assert (done.returncode, done.stderr) == (0, "")
    state = device_state(HostFs("/"), "platform", VIRTIO)
    assert state.driver == "vfio-platform"
    node = noiommu_node(VIRTIO)
    assert node.exists()
    st = node.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (board.uid, board.gid, 0o660)
    record = Owners(HostFs("/")).read(VIRTIO)
    assert record is not None and (record.domain, record.state) == ("vm1", "prepared")
    assert record.detached_by_us and record.node == str(node)

    done = hook_call(board, "vm1", "release", xml)
    assert (done.returncode, done.stderr) == (0, "")
    state = device_state(HostFs("/"), "platform", VIRTIO)
    assert (state.driver, state.override) == (None, None)
    assert Path(f"/sys/bus/platform/devices/{VIRTIO}/driver_override").read_text() == "(null)\n"
    assert not node.exists()  # the no-IOMMU node goes with the vfio binding
    assert Owners(HostFs("/")).all() == [] and Journal(HostFs("/")).devices() == []


def test_second_domain_is_refused_while_the_first_holds_the_device(board: Board,
                                                                   domains: Used) -> None:
    first = domain_xml("vm1", [VIRTIO], domains)
    assert hook_call(board, "vm1", "prepare", first).returncode == 0
    second = domain_xml("vm2", [VIRTIO], domains)
    done = hook_call(board, "vm2", "prepare", second)
    assert done.returncode == 1
    assert f"device {VIRTIO} is in use by domain vm1" in done.stderr, done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr
    assert device_state(HostFs("/"), "platform", VIRTIO).driver == "vfio-platform"
    assert [r.domain for r in Owners(HostFs("/")).all()] == ["vm1"]
    assert hook_call(board, "vm2", "release", second).returncode == 0  # not vm2's device
    assert device_state(HostFs("/"), "platform", VIRTIO).driver == "vfio-platform"
    assert hook_call(board, "vm1", "release", first).returncode == 0


def test_amba_device_is_refused_and_stays_on_its_driver(board: Board,
                                                        domains: Used) -> None:
    done = hook_call(board, "vm1", "prepare", domain_xml("vm1", [PL061], domains))
    assert done.returncode == 1
    assert f"{PL061} is an AMBA device" in done.stderr, done.stderr
    assert "vfio-platform refuses vfio-amba devices" in done.stderr
    state = device_state(HostFs("/"), "amba", PL061)
    assert (state.driver, state.override) == ("pl061_gpio", None)
    assert Owners(HostFs("/")).all() == []


def _killed_prepare_recovers(board: Board, xml: bytes, argv: list[str]) -> str:
    """After a killed prepare, ``recover`` (or, if the work was all done, release) gives the
    device back; returns what the kill hit, for the report."""
    fs = HostFs("/")
    record = Owners(fs).read(VIRTIO)
    step = Journal(fs).read(VIRTIO)
    outcome = (f"killed with {VIRTIO} on {device_state(fs, 'platform', VIRTIO).driver}, "
               f"record {record.state if record else None}, "
               f"journal {step.step if step else None}")
    done = recover()
    assert done.returncode == 0, done.stdout + done.stderr
    record = Owners(HostFs("/")).read(VIRTIO)
    if record is not None:
        # killed after the last record said "prepared": a finished prepare, legitimately
        # owned within the start grace period; libvirt's release gives it back
        assert record.state == "prepared", record
        assert device_state(HostFs("/"), "platform", VIRTIO).driver == "vfio-platform"
        assert hook_call(board, "vm1", "release", xml).returncode == 0
        outcome += ", released"
    assert _pristine() == [], (argv, done.stdout)
    return outcome


@pytest.mark.parametrize("step", [f"prepare:{VIRTIO}:recorded", f"prepare:{VIRTIO}:detached",
                                  f"prepare:{VIRTIO}:node"])
def test_sigkill_at_a_hook_step_then_recover(board: Board, domains: list[tuple[str, bytes]],
                                             step: str) -> None:
    xml = domain_xml("vm1", [VIRTIO], domains)
    run = subprocess.run([sys.executable, "-c", _KILL_AT_STEP, step, "vm1", "prepare", "begin",
                          "-"], input=xml, capture_output=True, timeout=180, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()
    if step.endswith(":detached") or step.endswith(":node"):
        assert device_state(HostFs("/"), "platform", VIRTIO).driver == "vfio-platform"
    record = Owners(HostFs("/")).read(VIRTIO)
    assert record is not None and record.state == "preparing"
    assert _killed_prepare_recovers(board, xml, [step]).startswith("killed")


def test_sigkill_at_random_moments_of_a_real_prepare(board: Board,
                                                     domains: Used) -> None:
    """The rendered hook itself, killed (SIGKILL) at seeded random delays within its run."""
    xml = domain_xml("vm1", [VIRTIO], domains)
    t0 = time.monotonic()
    assert hook_call(board, "vm1", "prepare", xml).returncode == 0
    duration = time.monotonic() - t0
    assert hook_call(board, "vm1", "release", xml).returncode == 0
    rng = random.Random(20240605)
    outcomes = []
    for _ in range(8):
        delay = duration * rng.uniform(0.5, 1.0)  # the sysfs work is at the end
        proc = subprocess.Popen([str(board.hook), "vm1", "prepare", "begin", "-"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=ENV)
        assert proc.stdin is not None
        proc.stdin.write(xml)
        proc.stdin.close()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=180)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        if code == 0:  # finished before the signal: a complete prepare
            assert hook_call(board, "vm1", "release", xml).returncode == 0
            outcomes.append(f"{delay:.2f}s: finished")
            assert _pristine() == []
            continue
        assert code == -signal.SIGKILL, err
        outcomes.append(f"{delay:.2f}s: " + _killed_prepare_recovers(board, xml, [str(delay)]))
    print(f"prepare takes {duration:.2f} s; kills: {'; '.join(outcomes)}")


# ------------------------------------------------------------------ real OSErrors
# /run/platform-hostdev on a tmpfs of its own, made full (ENOSPC) or read-only (EROFS)
# by the real kernel: the hook must refuse or report cleanly, never strand the device.

RUN_DIR = Path("/run/platform-hostdev")


@contextmanager
def state_tmpfs(size: str = "64k") -> Iterator[Path]:
    RUN_DIR.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "phd-faults",
                    str(RUN_DIR)], check=True)
    try:
        yield RUN_DIR
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(RUN_DIR)], check=False)
        subprocess.run(["umount", str(RUN_DIR)], check=True)


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def test_a_full_state_directory_refuses_the_start_and_changes_nothing(
        board: Board, domains: Used) -> None:
    xml = domain_xml("vm1", [VIRTIO], domains)
    with state_tmpfs() as run_dir:
        (run_dir / "owners").mkdir(mode=0o700)
        _fill(run_dir)
        done = hook_call(board, "vm1", "prepare", xml)
        assert done.returncode == 1, done.stderr
        assert "No space left on device (ENOSPC)" in done.stderr, done.stderr
        assert "/run/platform-hostdev/owners" in done.stderr
        assert "hint:" in done.stderr and "Traceback" not in done.stderr
        assert _pristine() == []


def test_a_read_only_state_directory_at_release_keeps_the_device_recorded(
        board: Board, domains: Used) -> None:
    xml = domain_xml("vm1", [VIRTIO], domains)
    with state_tmpfs("1m") as run_dir:
        assert hook_call(board, "vm1", "prepare", xml).returncode == 0
        node = noiommu_node(VIRTIO)
        subprocess.run(["mount", "-o", "remount,ro", str(run_dir)], check=True)
        done = hook_call(board, "vm1", "release", xml)
        assert done.returncode == 1, done.stderr
        assert "Read-only file system (EROFS)" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "platform-hostdev recover" in done.stderr
        # the journal could not be written, so the device was not moved unrecorded: it
        # stays on vfio, recorded, its node back with root
        assert device_state(HostFs("/"), "platform", VIRTIO).driver == "vfio-platform"
        assert Owners(HostFs("/")).read(VIRTIO) is not None
        assert node.stat().st_uid == 0
        subprocess.run(["mount", "-o", "remount,rw", str(run_dir)], check=True)
        # the record still says "prepared" (marking it released failed too): recover
        # gives it back once the start grace has passed
        later = subprocess.run([sys.executable, "-c", _RECOVER_LATER], capture_output=True,
                               text=True, timeout=180, check=False)
        assert later.returncode == 0, later.stdout + later.stderr
        assert f"{VIRTIO}: released from domain vm1" in later.stdout
        assert _pristine() == []


_RECOVER_LATER = textwrap.dedent("""
    import time
    from platform_hostdev.binding.ownership import START_GRACE
    from platform_hostdev.hook.giveback import recover_host
    from platform_hostdev.host.boundary import host_at

    done = recover_host(host_at("/").replace(clock=lambda: time.time() + START_GRACE + 1))
    print("\\n".join(done.released + done.failed))
    raise SystemExit(1 if done.failed else 0)
""")
