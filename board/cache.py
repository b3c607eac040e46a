"""Cache layout, content keys, locks and atomic publication of cache entries.

Everything lives under ``${PLATFORM_HOSTDEV_CACHE:-$HOME/.cache/platform-hostdev}/board``:
``apt/`` (private apt state), ``debs/`` (downloaded packages, names carry the
version) and ``<kernel release>/`` (extracted kernel, built modules, initramfs).
An entry is built in a temporary sibling and renamed into place, so a crash
never leaves a half-built entry behind under its final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "board_dir",
    "cache_root",
    "content_key",
    "file_digest",
    "files_digest",
    "locked",
    "publish_dir",
    "publish_file",
]


def cache_root(env: dict[str, str] | None = None) -> Path:
    """The project cache: $PLATFORM_HOSTDEV_CACHE, else ~/.cache/platform-hostdev."""
    env = dict(os.environ) if env is None else env
    configured = env.get("PLATFORM_HOSTDEV_CACHE")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(env.get("HOME", str(Path.home()))) / ".cache" / "platform-hostdev"


def board_dir(cache: Path | None = None) -> Path:
    """The board's part of the project cache (``<cache>/board``)."""
    return (cache if cache is not None else cache_root()) / "board"


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_digest(paths: Iterable[Path]) -> str:
    """A short digest over several files' names and contents."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + file_digest(path).encode() + b"\0")
    return digest.hexdigest()[:16]


def content_key(inputs: object) -> str:
    """A short stable key for JSON-serialisable inputs (the cache entry's name)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish_dir(final: Path, fill: Callable[[Path], object]) -> Path:
    """Create directory ``final`` by ``fill(tmpdir)`` then an atomic rename.

    Returns ``final`` unchanged when it already exists (a cache hit).
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        if not final.is_dir():
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def publish_file(final: Path, fill: Callable[[Path], object]) -> Path:
    """Create file ``final`` by ``fill(tmpfile)`` then an atomic rename (skip if present)."""
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fill(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
