"""board.run against a fake emulator: markers, exit codes, the watchdog, crashes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from board.apt_arm64 import Kernel
from board.build import Board
from board.errors import GuestCrashError, GuestSetupError, GuestTimeoutError
from board.run import GuestResult, qemu_argv, run_in_guest

FAKE_QEMU = """\
import os, re, sys, time
argv = sys.argv[1:]
nonce = re.search(r"board\\.nonce=(\\w+)", argv[argv.index("-append") + 1]).group(1)
shares = dict(re.search(r"path=([^,]+),mount_tag=(\\w+)", a).group(2, 1)
              for a in argv if a.startswith("local,"))
mode = os.environ["FAKE_QEMU_MODE"]
print("[    0.000000] Booting Linux on physical CPU 0x0", flush=True)
print(f"@@BOARD-INIT {nonce} 3.21", flush=True)
if mode == "exit":
    print("cmd: " + open(os.path.join(shares["board"], "cmd.sh")).read().strip())
    open(os.path.join(shares["out"], "result.txt"), "w").write("from the guest")
    print(f"\\r@@BOARD-EXIT {nonce} 7\\r", flush=True)
elif mode == "hang":
    print("guest: still thinking", flush=True)
    time.sleep(60)
elif mode == "setup":
    print(f"@@BOARD-SETUP-FAILED {nonce} mount 9p tag repo at /repo", flush=True)
elif mode == "forged":
    print("@@BOARD-EXIT 0000 0", flush=True)
    print("Kernel panic - not syncing: Attempted to kill init!", flush=True)
    sys.exit(1)
"""


@pytest.fixture
def fake(tmp_path: Path) -> tuple[str, Board]:
    script = tmp_path / "qemu-system-aarch64"
    script.write_text(f"#!{sys.executable}\n{FAKE_QEMU}")
    script.chmod(0o755)
    board = Board(kernel=Kernel("6.12.1+deb12", "6.12.1-1~deb12u1"),
                  vmlinuz=tmp_path / "vmlinuz", initramfs=tmp_path / "initramfs.cpio",
                  image_dir=tmp_path, vfio_modules=(), cache_dir=tmp_path)
    return str(script), board


Fake = tuple[str, Board]


def run(fake: Fake, mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        timeout: float = 20.0, out_dir: Path | None = None,
        stream: Callable[[str], object] | None = None) -> GuestResult:
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    qemu, board = fake
    return run_in_guest(["python3", "-m", "pytest", "it's quoted; $(no)"], timeout,
                        board=board, repo=tmp_path, qemu=qemu, out_dir=out_dir, stream=stream)


def test_exit_code_output_and_results_share(fake: Fake, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    lines: list[str] = []
    result = run(fake, "exit", monkeypatch, tmp_path, out_dir=out, stream=lines.append)
    assert result.exit_code == 7
    assert "cmd: python3 -m pytest 'it'\"'\"'s quoted; $(no)'" in result.output
    assert "\r" not in result.output
    assert lines[0].startswith("[    0.000000] Booting") and lines[-1].endswith("\n")
    assert (out / "result.txt").read_text() == "from the guest"
    assert 0 < result.boot_time <= result.duration


def test_watchdog_kills_a_silent_guest(fake: Fake, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(GuestTimeoutError, match="within 2 s") as caught:
        run(fake, "hang", monkeypatch, tmp_path, timeout=2.0)
    assert time.monotonic() - started < 15
    assert "guest: still thinking" in str(caught.value)


def test_setup_failure_is_reported(fake: Fake, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    with pytest.raises(GuestSetupError, match="mount 9p tag repo"):
        run(fake, "setup", monkeypatch, tmp_path)


def test_marker_with_another_nonce_does_not_count(fake: Fake, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    with pytest.raises(GuestCrashError, match="exited with code 1") as caught:
        run(fake, "forged", monkeypatch, tmp_path)
    assert "Kernel panic" in str(caught.value)


def test_qemu_command_line(tmp_path: Path) -> None:
    board = Board(kernel=Kernel("6.12.1+deb12", "6.12.1-1"), vmlinuz=Path("/k/vmlinuz"),
                  initramfs=Path("/k/initrd"), image_dir=tmp_path, vfio_modules=(),
                  cache_dir=tmp_path)
    argv = qemu_argv(board, Path("/repo"), Path("/ctl"), Path("/out"), "abc")
    assert argv[:12] == ["qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-smp", "1",
                         "-m", "1024", "-nographic", "-no-reboot", "-kernel"]
    assert argv[argv.index("-append") + 1] == (
        "console=ttyAMA0 rdinit=/init panic=-1 quiet board.machine=virt board.nonce=abc")
    assert "local,path=/repo,mount_tag=repo,security_model=none,readonly=on" in argv
    assert "local,path=/out,mount_tag=out,security_model=none" in argv
    with pytest.raises(ValueError, match="comma"):
        qemu_argv(board, Path("/a,b"), Path("/ctl"), Path("/out"), "abc")
