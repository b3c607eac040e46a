"""board.run against a fake emulator: markers, exit codes, the watchdog, crashes, and
raspi3b's transport (repo in the initrd, results on the console, no poweroff)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from board.apt_arm64 import Kernel
from board.build import Board
from board.cpio import CpioWriter
from board.errors import (
    BoardError,
    GuestCrashError,
    GuestSetupError,
    GuestTimeoutError,
    GuestTransferError,
)
from board.machines import RASPI3B
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


FAKE_RASPI = """\
import base64, hashlib, os, re, sys, time
argv = sys.argv[1:]
append = argv[argv.index("-append") + 1]
nonce = re.search(r"board\\.nonce=(\\w+)", append).group(1)
assert "board.machine=raspi3b" in append and "-smp" not in argv and "-m" not in argv
assert not [a for a in argv if a.startswith("local,")], "raspi3b has no 9p"
data = open(argv[argv.index("-initrd") + 1], "rb").read()
files, pos = {}, 0
while pos < len(data):  # every concatenated newc archive, as the kernel unpacks them
    if data[pos:pos + 4] == bytes(4):
        pos += 4
        continue
    size, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
    name = data[pos + 110:pos + 109 + namesize].decode()
    pos += 110 + namesize
    pos += -pos % 4
    files[name] = data[pos:pos + size]
    pos += size + (-size % 4)
mode = os.environ["FAKE_QEMU_MODE"]
print(f"@@BOARD-INIT {nonce} 8.10", flush=True)
print("cmd: " + files["board/cmd.sh"].decode().strip())
print("repo: " + files["repo/marker.txt"].decode().strip())
result = b"<testsuites/>\\n" * 20
digest = hashlib.sha256(result).hexdigest()
print(f"@@BOARD-FILE {nonce} {len(result)} {digest} guest-junit.xml")
lines = base64.encodebytes(result).decode().splitlines()
if mode == "corrupt":
    lines[1] = lines[1][:5] + "[ 3.2] oops" + lines[1][5:]
for line in lines if mode != "cut" else lines[:1]:
    print(f"@@BOARD-DATA {nonce} {line}")
if mode != "cut":
    print(f"@@BOARD-FILE-END {nonce}")
print(f"@@BOARD-EXIT {nonce} 0", flush=True)
print("[   20.0] reboot: Power off not available: System halted instead", flush=True)
time.sleep(60)  # halted: QEMU would run on
"""


@pytest.fixture
def raspi(tmp_path: Path) -> tuple[str, Board]:
    script = tmp_path / "qemu-system-aarch64"
    script.write_text(f"#!{sys.executable}\n{FAKE_RASPI}")
    script.chmod(0o755)
    base = tmp_path / "initramfs.cpio"
    with base.open("wb") as out:
        archive = CpioWriter(out)
        archive.add_dir("repo")
        archive.add_file("init", b"#!/bin/sh\n", 0o755)
        archive.close()
    board = Board(kernel=Kernel("6.12.1+deb12", "6.12.1-1~deb12u1"),
                  vmlinuz=tmp_path / "vmlinuz", initramfs=base, image_dir=tmp_path,
                  vfio_modules=(), cache_dir=tmp_path, machine=RASPI3B,
                  dtb=tmp_path / "bcm2837-rpi-3-b.dtb", sd_image=tmp_path / "sd.img")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo/marker.txt").write_text("the host's work tree\n")
    return str(script), board


def run_raspi(raspi: Fake, mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
              out_dir: Path | None = None) -> GuestResult:
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    qemu, board = raspi
    return run_in_guest(["python3", "-m", "pytest"], 30.0, board=board, repo=tmp_path / "repo",
                        qemu=qemu, out_dir=out_dir)


def test_raspi_run_carries_repo_in_and_results_out_then_stops_a_halted_guest(
        raspi: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_raspi(raspi, "ok", monkeypatch, tmp_path, out_dir=out)
    assert time.monotonic() - started < 10, "waited for a poweroff that never comes"
    assert result.exit_code == 0
    assert "cmd: python3 -m pytest" in result.output
    assert "repo: the host's work tree" in result.output
    assert (out / "guest-junit.xml").read_bytes() == b"<testsuites/>\n" * 20
    assert "@@BOARD-DATA" not in result.output  # the payload is not console output


def test_raspi_damaged_result_is_an_error_naming_the_file(
        raspi: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(GuestTransferError, match="guest-junit.xml came back with damaged"):
        run_raspi(raspi, "corrupt", monkeypatch, tmp_path)


def test_raspi_result_cut_off_before_the_exit_marker(
        raspi: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(GuestTransferError, match="guest-junit.xml was cut off"):
        run_raspi(raspi, "cut", monkeypatch, tmp_path)


def test_raspi_command_line(raspi: Fake) -> None:
    _, board = raspi
    argv = qemu_argv(board, Path("/repo"), Path("/ctl"), Path("/out"), "abc",
                     initrd=Path("/run/initrd"))
    assert argv[:5] == ["qemu-system-aarch64", "-M", "raspi3b", "-accel", "tcg,thread=single"]
    assert "-smp" not in argv and "-m" not in argv and "-virtfs" not in argv
    assert argv[argv.index("-dtb") + 1] == str(board.dtb)
    assert argv[argv.index("-initrd") + 1] == "/run/initrd"
    assert argv[argv.index("-drive") + 1] == f"file={board.sd_image},if=sd,format=raw,snapshot=on"
    assert "board.machine=raspi3b" in argv[argv.index("-append") + 1]
    with pytest.raises(BoardError, match="4 CPUs, fixed by QEMU"):
        qemu_argv(board, Path("/r"), Path("/c"), Path("/o"), "abc", smp=2)
    with pytest.raises(BoardError, match="1024 MiB of RAM"):
        qemu_argv(board, Path("/r"), Path("/c"), Path("/o"), "abc", memory_mb=512)


def test_raspi_base_initramfs_pruned_since_the_build(raspi: Fake, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    raspi[1].initramfs.unlink()
    with pytest.raises(BoardError, match="initramfs.cpio is gone since the board was built"):
        run_raspi(raspi, "ok", monkeypatch, tmp_path)
