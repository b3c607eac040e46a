"""Boot the board and run one command in it, under a watchdog.

QEMU's serial console is the only channel back: /init prints marker lines
carrying a per-run nonce (see guest_init.sh), the host reads the console
line by line and stops at the end marker. No sleeping: the host waits on the
console pipe with the watchdog's remaining time as the limit, and kills QEMU
when it runs out.

Shares (9p, virtio-pci): ``repo`` (the repository, read-only, at /repo),
``board`` (a per-run control directory with cmd.sh, read-only, at /board) and
``out`` (writable, at /out; the guest sees $BOARD_OUT=/out) for results such as
a junit XML file.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from board.build import Board, build_board
from board.errors import GuestCrashError, GuestSetupError, GuestTimeoutError
from board.host import RUN_TOOLS, check_host_tools

__all__ = ["DEFAULT_TIMEOUT", "GuestResult", "qemu_argv", "repo_root", "run_in_guest"]

QEMU = "qemu-system-aarch64"
DEFAULT_TIMEOUT = 300.0
DEFAULT_SMP = 1
"""One CPU: on a 2-core host, -smp 2 booted slower (6-10 s to /init instead of
~5 s) and ran the guest suite slower (20-24 s instead of 15-16 s) under TCG."""
_POWEROFF_GRACE = 15.0
_MARKER = re.compile(r"@@BOARD-(?P<kind>INIT|EXIT|SETUP-FAILED) (?P<nonce>\w+) ?(?P<rest>.*)$")


@dataclass(frozen=True)
class GuestResult:
    """How the guest command ended."""

    exit_code: int
    output: str  # the whole console, kernel messages included, \r\n turned into \n
    duration: float  # seconds from starting QEMU to the end marker
    boot_time: float = 0.0  # seconds from starting QEMU to /init's first line


def repo_root() -> Path:
    """The repository holding this package (shared with the guest as /repo)."""
    return Path(__file__).resolve().parent.parent


def qemu_argv(board: Board, repo: Path, control: Path, out: Path, nonce: str,
              smp: int = DEFAULT_SMP, memory_mb: int = 1024) -> list[str]:
    """The QEMU command line for one run."""
    append = f"console=ttyAMA0 rdinit=/init panic=-1 quiet board.nonce={nonce}"
    argv = [
        QEMU, "-M", "virt", "-cpu", "max", "-smp", str(smp), "-m", str(memory_mb),
        "-nographic", "-no-reboot",
        "-kernel", str(board.vmlinuz), "-initrd", str(board.initramfs), "-append", append,
    ]
    shares = (("repo", repo, True), ("board", control, True), ("out", out, False))
    for tag, path, readonly in shares:
        if "," in str(path):
            raise ValueError(f"QEMU cannot share a path with a comma: {path}")
        option = f"local,path={path},mount_tag={tag},security_model=none"
        argv += ["-virtfs", option + (",readonly=on" if readonly else "")]
    return argv


class _Console:
    """Collects the console output, line by line, and reacts to marker lines."""

    def __init__(self, nonce: str, started: float, stream: Callable[[str], object] | None):
        self.nonce = nonce
        self.started = started
        self.stream = stream
        self.lines: list[str] = []
        self.partial = b""
        self.boot_time = 0.0
        self.end_time = 0.0
        self.exit_code: int | None = None
        self.setup_failure: str | None = None

    @property
    def text(self) -> str:
        tail = self.partial.decode(errors="replace")
        return "\n".join(self.lines) + ("\n" + tail if tail else "")

    def feed(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").replace("\r", "")
            self.lines.append(line)
            if self.stream is not None:
                self.stream(line + "\n")
            match = _MARKER.search(line)
            if match is None or match["nonce"] != self.nonce:
                continue
            if match["kind"] == "INIT":
                self.boot_time = time.monotonic() - self.started
            elif match["kind"] == "EXIT":
                self.exit_code = int(match["rest"].split()[0])
                self.end_time = time.monotonic() - self.started
            else:
                self.setup_failure = match["rest"]


def _wait_for_end(proc: subprocess.Popen[bytes], console: _Console, deadline: float) -> bool:
    """Read the console until the end marker (then until QEMU exits), EOF or the deadline.

    Returns False when the deadline passed before QEMU closed the console.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if console.exit_code is not None or console.setup_failure is not None:
                deadline = min(deadline, time.monotonic() + _POWEROFF_GRACE)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not selector.select(timeout=remaining):
                continue
            data = os.read(fd, 65536)
            if not data:
                return True
            console.feed(data)


def run_in_guest(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, *,
                 board: Board | None = None, repo: Path | None = None,
                 out_dir: Path | None = None, smp: int = DEFAULT_SMP,
                 stream: Callable[[str], object] | None = None,
                 qemu: str | None = None) -> GuestResult:
    """Boot the board, run ``argv`` in /repo, return its exit code and the console.

    ``timeout`` (seconds, boot included) arms the watchdog. ``board`` defaults to
    :func:`board.build.build_board`; ``out_dir`` is shared writable as /out (a
    temporary directory when None); ``stream`` receives each console line as it
    arrives; ``qemu`` replaces the emulator program (tests). Raises
    GuestTimeoutError, GuestCrashError or GuestSetupError, with the last console
    lines, when the command did not run to its end.
    """
    if not argv:
        raise ValueError("run_in_guest needs a command")
    if qemu is None:
        check_host_tools(RUN_TOOLS)
        qemu = QEMU
    board = board if board is not None else build_board()
    repo = (repo if repo is not None else repo_root()).resolve()
    nonce = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="board-run.") as tmp:
        control = Path(tmp) / "control"
        control.mkdir()
        (control / "cmd.sh").write_text(shlex.join(argv) + "\n")
        out = out_dir.resolve() if out_dir is not None else Path(tmp) / "out"
        out.mkdir(parents=True, exist_ok=True)
        command = [qemu, *qemu_argv(board, repo, control, out, nonce, smp=smp)[1:]]
        started = time.monotonic()
        console = _Console(nonce, started, stream)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            closed = _wait_for_end(proc, console, started + timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            assert proc.stdout is not None
            proc.stdout.close()
        duration = time.monotonic() - started
    if console.setup_failure is not None:
        raise GuestSetupError(f"the guest's /init failed: {console.setup_failure}", console.text)
    if console.exit_code is None:
        if not closed:
            raise GuestTimeoutError(
                f"watchdog: no end marker from the guest within {timeout:.0f} s; QEMU was "
                "killed (raise the timeout if the command is just slow)", console.text)
        raise GuestCrashError(f"QEMU exited with code {proc.returncode} after {duration:.1f} s "
                              "before the guest command finished (kernel panic or /init died?)",
                              console.text)
    return GuestResult(exit_code=console.exit_code, output=console.text,
                       duration=console.end_time, boot_time=console.boot_time)
