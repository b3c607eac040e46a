"""The real-daemon tier: a private libvirtd started for the session (see daemon.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.libvirt.daemon import DaemonError, PrivateLibvirt, private_libvirtd


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[PrivateLibvirt]:
    try:
        with private_libvirtd() as daemon:
            yield daemon
    except DaemonError as exc:
        pytest.fail(f"libvirt tier: {exc}", pytrace=False)
