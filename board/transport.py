"""How the repository and the results travel on a machine without 9p (raspi3b).

In: the kernel unpacks every cpio archive it finds concatenated in the
initramfs, later entries replacing earlier ones (init/initramfs.c,
``unpack_to_rootfs`` loops over archives). Each run writes a per-run initrd:
a copy of the cached base initramfs followed by a small "newc" archive with
the repository at /repo and the run's command at /board/cmd.sh
(:func:`write_run_initrd`). The repository is copied by walking its tree,
leaving out :data:`EXCLUDED_NAMES` (VCS data, virtualenvs, caches, build
output): what the guest sees is the working tree as it is, uncommitted edits
included, as with virt's 9p share. Unlike the 9p share, /repo is writable
(it is the guest's rootfs); the guest suite writes nothing there
(PYTHONDONTWRITEBYTECODE=1, -p no:cacheprovider).

Out: the guest's /out is a plain directory. After the command, /init
(guest_init.sh, ``send_results``) prints each regular file under it on the
console, framed by marker lines that carry the run's nonce::

    @@BOARD-FILE <nonce> <size> <sha256> <path relative to /out>
    @@BOARD-DATA <nonce> <base64, 76 characters a line>      (repeated)
    @@BOARD-FILE-END <nonce>

then prints ``@@BOARD-EXIT``. The console log level is lowered to 1 (emergency
only) for the transfer, so kernel messages cannot cut a data line in two.
:class:`ResultReceiver` decodes the frames, checks size and SHA-256, and
writes the files into the host's ``out_dir``; a damaged file raises
:class:`FrameError` naming it (board/run.py reports it as
:class:`board.errors.GuestTransferError` with the console's tail).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from board.cpio import CpioWriter
from board.errors import BoardError

__all__ = [
    "EXCLUDED_NAMES",
    "MAX_REPO_BYTES",
    "FrameError",
    "ResultReceiver",
    "repo_files",
    "write_overlay",
    "write_run_initrd",
]

EXCLUDED_NAMES = frozenset({
    ".git", ".venv", ".tox", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
    "build", "dist", ".eggs",
})
"""Names never copied into the guest (anywhere in the tree); *.egg-info and *.pyc too."""
MAX_REPO_BYTES = 64 << 20
"""A repository copy larger than this is refused (it would be held in guest RAM)."""
GUEST_REPO = "repo"
GUEST_CMD = "board/cmd.sh"


class FrameError(ValueError):
    """A result file's frames on the console are malformed or its content is damaged."""


def _excluded(name: str) -> bool:
    return name in EXCLUDED_NAMES or name.endswith((".egg-info", ".pyc"))


def repo_files(repo: Path) -> Iterator[Path]:
    """Regular files and symlinks of ``repo`` to copy (relative paths, sorted, parents first)."""
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if not _excluded(d))
        here = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
            if not _excluded(name):
                yield (here / name).relative_to(repo)


def write_overlay(stream: CpioWriter, repo: Path, command: str) -> int:
    """Add /repo (from ``repo``) and /board/cmd.sh to ``stream``; return the bytes of files.

    Raises BoardError when the copy would exceed :data:`MAX_REPO_BYTES`.
    """
    total = 0
    stream.add_dir(GUEST_REPO)
    for rel in repo_files(repo):
        path = repo / rel
        name = f"{GUEST_REPO}/{rel.as_posix()}"
        for parent in reversed(PurePosixPath(name).parents[:-1]):
            if str(parent) not in stream:
                stream.add_dir(str(parent), stat.S_IMODE((repo / parent.relative_to(
                    GUEST_REPO)).lstat().st_mode))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            stream.add_symlink(name, os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            total += info.st_size
            if total > MAX_REPO_BYTES:
                raise BoardError(f"the repository copy for the guest passed "
                                 f"{MAX_REPO_BYTES >> 20} MiB at {rel}: remove large untracked "
                                 "files from the work tree (or add their names to "
                                 "board/transport.py EXCLUDED_NAMES)")
            stream.add_file(name, path.read_bytes(), stat.S_IMODE(info.st_mode))
    stream.add_file(GUEST_CMD, command.encode(), 0o644)
    return total


def write_run_initrd(dest: Path, base: Path, repo: Path, command: str) -> None:
    """Write ``dest``: the cached initramfs ``base``, then an archive of the repo and cmd.sh.

    The base archive ends with its trailer padded to 4 bytes; the kernel's
    unpacker skips zero padding between archives, so appending is enough.
    """
    with dest.open("wb") as out:
        with base.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        if out.tell() % 4:
            out.write(b"\0" * (-out.tell() % 4))
        archive = CpioWriter(out)
        write_overlay(archive, repo, command)
        archive.close()


@dataclass
class _File:
    path: str
    size: int
    sha256: str
    chunks: list[str] = field(default_factory=list)


class ResultReceiver:
    """Decodes the framed result files of one run into ``out_dir``.

    Feed it the fields after the nonce of every FILE, DATA and FILE-END marker
    line; ``received`` lists the relative paths written so far.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.received: list[str] = []
        self._current: _File | None = None

    @property
    def in_progress(self) -> str | None:
        """The path of a file whose END marker has not arrived yet."""
        return None if self._current is None else self._current.path

    def begin(self, rest: str) -> None:
        """A FILE marker: ``<size> <sha256> <path>``."""
        if self._current is not None:
            raise FrameError(f"result file {self._current.path} was cut off: a new "
                                     f"file began before its end marker ({rest!r})")
        fields = rest.split(" ", 2)
        if len(fields) != 3 or not fields[0].isdigit() or len(fields[1]) != 64:
            raise FrameError(f"malformed result file header {rest!r} (want "
                                     "'<size> <sha256> <path>')")
        self._current = _File(_safe_path(fields[2]), int(fields[0]), fields[1])

    def data(self, rest: str) -> None:
        """A DATA marker: one base64 line of the current file."""
        if self._current is None:
            raise FrameError(f"result data outside a file frame: {rest[:40]!r}")
        self._current.chunks.append(rest.strip())

    def end(self) -> Path:
        """A FILE-END marker: decode, check and write the current file; return its path."""
        current = self._current
        if current is None:
            raise FrameError("a result file end marker without a file header")
        self._current = None
        try:
            data = base64.b64decode("".join(current.chunks), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FrameError(f"result file {current.path} came back with damaged "
                                     f"base64 ({exc}): kernel messages on the console?") from exc
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != current.size or digest != current.sha256:
            raise FrameError(
                f"result file {current.path} came back damaged: {len(data)} bytes, sha256 "
                f"{digest}; the guest sent {current.size} bytes, sha256 {current.sha256}")
        target = self.out_dir / current.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self.received.append(current.path)
        return target


def _safe_path(path: str) -> str:
    """A relative path that stays inside out_dir; FrameError otherwise."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts:
        raise FrameError(f"result file path {path!r} is not relative to /out")
    return pure.as_posix()
