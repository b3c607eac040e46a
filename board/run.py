"""Boot the board and run one command in it, under a watchdog.

QEMU's serial console is the only channel back: /init prints marker lines
carrying a per-run nonce (see guest_init.sh), the host reads the console
line by line and stops at the end marker. No sleeping: the host waits on the
console pipe with the watchdog's remaining time as the limit, and kills QEMU
when it runs out.

On ``virt``, shares (9p, virtio-pci): ``repo`` (the repository, read-only, at
/repo), ``board`` (a per-run control directory with cmd.sh, read-only, at
/board) and ``out`` (writable, at /out; the guest sees $BOARD_OUT=/out) for
results such as a junit XML file. After the end marker the guest powers off
and QEMU exits (a grace of a few seconds, then it is killed).

On ``raspi3b`` (no PCI, no virtio): the repository and cmd.sh ride in an
archive appended to a per-run copy of the initramfs, the files the command
leaves in /out come back framed on the console (board/transport.py), and the
guest cannot power off: QEMU is killed as soon as the end marker arrives.
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

from board import transport
from board.build import Board, build_board
from board.errors import (
    BoardError,
    GuestCrashError,
    GuestSetupError,
    GuestTimeoutError,
    GuestTransferError,
)
from board.host import RUN_TOOLS, check_host_tools
from board.machines import Machine, get_machine

__all__ = ["DEFAULT_TIMEOUT", "GuestResult", "qemu_argv", "repo_root", "run_in_guest"]

QEMU = "qemu-system-aarch64"
DEFAULT_TIMEOUT = 300.0
DEFAULT_SMP = 1
"""virt's CPUs: on a 2-core host, -smp 2 booted slower (6-10 s to /init instead of
~5 s) and ran the guest suite slower (20-24 s instead of 15-16 s) under TCG.
raspi3b has 4, fixed by QEMU (board/machines.py)."""
_POWEROFF_GRACE = 15.0
_MARKER = re.compile(r"@@BOARD-(?P<kind>INIT|EXIT|SETUP-FAILED|FILE|DATA|FILE-END) "
                     r"(?P<nonce>\w+) ?(?P<rest>.*)$")


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


def machine_smp(machine: Machine, smp: int | None) -> int:
    """The CPU count to boot ``machine`` with; BoardError when the machine fixes another."""
    if smp is None:
        return machine.default_smp
    if machine.fixed_size and smp != machine.default_smp:
        raise BoardError(f"the {machine.name} machine has {machine.default_smp} CPUs, fixed by "
                         f"QEMU: drop --smp {smp} (or pass --smp {machine.default_smp})")
    if smp < 1:
        raise BoardError(f"--smp {smp}: a board needs at least one CPU")
    return smp


def qemu_argv(board: Board, repo: Path, control: Path, out: Path, nonce: str,
              smp: int | None = None, memory_mb: int | None = None,
              initrd: Path | None = None) -> list[str]:
    """The QEMU command line for one run of ``board.machine``.

    virt shares ``repo``, ``control`` and ``out`` over 9p; a machine without 9p
    (raspi3b) ignores them and boots ``initrd`` (the per-run initramfs copy with
    the repository appended, board/transport.py) with its DTB and SD card.
    """
    machine = board.machine
    cpus = machine_smp(machine, smp)
    append = (f"console=ttyAMA0 rdinit=/init panic=-1 quiet board.machine={machine.name} "
              f"board.nonce={nonce}")
    memory = memory_mb if memory_mb is not None else machine.memory_mb
    argv = [QEMU, *machine.qemu_args]
    if machine.fixed_size:
        if memory != machine.memory_mb:
            raise BoardError(f"the {machine.name} machine has {machine.memory_mb} MiB of RAM, "
                             f"fixed by QEMU: {memory} MiB asked")
    else:
        argv += ["-smp", str(cpus), "-m", str(memory)]
    argv += ["-nographic", "-no-reboot", "-kernel", str(board.vmlinuz)]
    if board.dtb is not None:
        argv += ["-dtb", str(board.dtb)]
    argv += ["-initrd", str(initrd if initrd is not None else board.initramfs),
             "-append", append]
    if machine.sd_card:
        if board.sd_image is None:
            raise BoardError(f"the {machine.name} board has no SD card image: build it with "
                             f"build_board(machine={machine.name!r})")
        if "," in str(board.sd_image):
            raise ValueError(f"QEMU cannot attach a path with a comma: {board.sd_image}")
        argv += ["-drive", f"file={board.sd_image},if=sd,format=raw,snapshot=on"]
    if not machine.shares_9p:
        return argv
    shares = (("repo", repo, True), ("board", control, True), ("out", out, False))
    for tag, path, readonly in shares:
        if "," in str(path):
            raise ValueError(f"QEMU cannot share a path with a comma: {path}")
        option = f"local,path={path},mount_tag={tag},security_model=none"
        argv += ["-virtfs", option + (",readonly=on" if readonly else "")]
    return argv


class _Console:
    """Collects the console output, line by line, and reacts to marker lines.

    Result data lines (``@@BOARD-DATA``) go to ``receiver`` only: they are
    neither kept in the output nor streamed.
    """

    def __init__(self, nonce: str, started: float, stream: Callable[[str], object] | None,
                 receiver: transport.ResultReceiver | None = None):
        self.nonce = nonce
        self.started = started
        self.stream = stream
        self.receiver = receiver
        self.lines: list[str] = []
        self.partial = b""
        self.boot_time = 0.0
        self.end_time = 0.0
        self.exit_code: int | None = None
        self.setup_failure: str | None = None
        self.transfer_error: str | None = None

    @property
    def ended(self) -> bool:
        """True once the guest printed its end (or setup failure) marker."""
        return self.exit_code is not None or self.setup_failure is not None

    @property
    def text(self) -> str:
        tail = self.partial.decode(errors="replace")
        return "\n".join(self.lines) + ("\n" + tail if tail else "")

    def feed(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").replace("\r", "")
            match = _MARKER.search(line)
            ours = match is not None and match["nonce"] == self.nonce
            if ours and match is not None and match["kind"] == "DATA":
                self._result(match["kind"], match["rest"])
                continue
            self.lines.append(line)
            if self.stream is not None:
                self.stream(line + "\n")
            if match is None or not ours:
                continue
            if match["kind"] in ("FILE", "FILE-END"):
                self._result(match["kind"], match["rest"])
            elif match["kind"] == "INIT":
                self.boot_time = time.monotonic() - self.started
            elif match["kind"] == "EXIT":
                self.exit_code = int(match["rest"].split()[0])
                self.end_time = time.monotonic() - self.started
            else:
                self.setup_failure = match["rest"]

    def _result(self, kind: str, rest: str) -> None:
        """A result frame line: hand it to the receiver; keep the first error."""
        if self.transfer_error is not None:
            return
        if self.receiver is None:
            self.transfer_error = ("the guest sent result files on the console, but this "
                                   "machine shares /out over 9p")
            return
        try:
            if kind == "FILE":
                self.receiver.begin(rest)
            elif kind == "DATA":
                self.receiver.data(rest)
            else:
                self.receiver.end()
        except transport.FrameError as exc:
            self.transfer_error = str(exc)


def _wait_for_end(proc: subprocess.Popen[bytes], console: _Console, deadline: float,
                  powers_off: bool = True) -> bool:
    """Read the console until the end marker (then until QEMU exits), EOF or the deadline.

    A machine that cannot power off (``powers_off`` False) is done at the end
    marker itself: there is no exit of QEMU to wait for. Returns False when the
    deadline passed before QEMU closed the console (or the end marker came).
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if console.ended and not powers_off:
                return True
            if console.ended:
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
                 out_dir: Path | None = None, smp: int | None = None,
                 stream: Callable[[str], object] | None = None,
                 qemu: str | None = None, machine: Machine | str | None = None) -> GuestResult:
    """Boot the board, run ``argv`` in /repo, return its exit code and the console.

    ``timeout`` (seconds, boot included) arms the watchdog. ``board`` defaults to
    :func:`board.build.build_board` for ``machine`` (virt when neither is
    given); ``out_dir`` receives the guest's /out (shared writable on virt,
    sent back over the console on raspi3b; a temporary directory when None);
    ``smp`` defaults to the machine's CPU count; ``stream`` receives each
    console line as it arrives; ``qemu`` replaces the emulator program (tests).
    Raises GuestTimeoutError, GuestCrashError, GuestSetupError or
    GuestTransferError, with the last console lines, when the command did not
    run to its end or its results did not come back whole.
    """
    if not argv:
        raise ValueError("run_in_guest needs a command")
    wanted = get_machine(machine) if isinstance(machine, str) else machine
    if board is not None and wanted is not None and board.machine != wanted:
        raise ValueError(f"run_in_guest: board is built for {board.machine.name}, "
                         f"machine={wanted.name} asked")
    if qemu is None:
        check_host_tools(RUN_TOOLS)
        qemu = QEMU
    board = board if board is not None else build_board(machine=wanted or "virt")
    machine_smp(board.machine, smp)
    repo = (repo if repo is not None else repo_root()).resolve()
    nonce = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="board-run.") as tmp:
        control = Path(tmp) / "control"
        control.mkdir()
        script = shlex.join(argv) + "\n"
        (control / "cmd.sh").write_text(script)
        out = out_dir.resolve() if out_dir is not None else Path(tmp) / "out"
        out.mkdir(parents=True, exist_ok=True)
        initrd = None
        receiver = None
        if not board.machine.shares_9p:
            initrd = Path(tmp) / "initrd.cpio"
            try:
                transport.write_run_initrd(initrd, board.initramfs, repo, script)
            except FileNotFoundError as exc:
                raise BoardError(f"{exc.filename} is gone since the board was built (pruned "
                                 "by a build of other board code sharing the cache?): build "
                                 "the board again") from exc
            receiver = transport.ResultReceiver(out)
        command = [qemu, *qemu_argv(board, repo, control, out, nonce, smp=smp,
                                    initrd=initrd)[1:]]
        started = time.monotonic()
        console = _Console(nonce, started, stream, receiver)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            closed = _wait_for_end(proc, console, started + timeout, board.machine.powers_off)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            assert proc.stdout is not None
            proc.stdout.close()
        duration = time.monotonic() - started
    if console.setup_failure is not None:
        raise GuestSetupError(f"the guest's /init failed: {console.setup_failure}", console.text)
    if (console.transfer_error is None and console.exit_code is not None
            and receiver is not None and receiver.in_progress):
        console.transfer_error = (f"result file {receiver.in_progress} was cut off: no end "
                                  "marker before the guest's exit marker")
    if console.transfer_error is not None:
        raise GuestTransferError(f"the guest's results did not come back whole: "
                                 f"{console.transfer_error}", console.text)
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
