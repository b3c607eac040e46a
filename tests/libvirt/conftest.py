"""The real-daemon tier: a private libvirtd started for the session (see daemon.py)."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.libvirt.daemon import DaemonError, PrivateLibvirt, start, stop


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[PrivateLibvirt]:
    base = Path(tempfile.mkdtemp(prefix="phd-libvirt-"))
    try:
        daemon = start(base / "d")
    except DaemonError as exc:
        pytest.fail(f"libvirt tier: {exc}", pytrace=False)
    try:
        yield daemon
    finally:
        stop(daemon)
        base.rmdir()
