"""What a hook call works with: the host, where messages go, hook.conf's settings.

Shared by the phases that take devices (:mod:`platform_hostdev.hook.qemu`) and
those that give them back (:mod:`platform_hostdev.hook.giveback`). Light on
purpose, as the whole hook: records are NamedTuples.
"""
from __future__ import annotations

import sys
from typing import NamedTuple, TextIO

from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.host.boundary import Host
from platform_hostdev.host.fs import HostFs

__all__ = ["HOOK_CONFIG", "HookEnv", "HookDevice", "read_config"]

HOOK_CONFIG = "/etc/platform-hostdev/hook.conf"


class HookEnv:
    """What a hook call works with: the host, where its messages go, hook.conf's settings."""

    __slots__ = ("host", "err", "allow_noiommu")

    def __init__(self, host: Host, *, err: TextIO | None = None,
                 allow_noiommu: bool = False) -> None:
        self.host = host
        self.err = err if err is not None else sys.stderr
        self.allow_noiommu = allow_noiommu

    @property
    def fs(self) -> HostFs:
        """The host's filesystem root."""
        return self.host.fs

    def owners(self) -> Owners:
        """The ownership records, on the host's clock and pid check."""
        return Owners(self.host.fs, self.host.clock, pid_alive=self.host.pid_alive,
                      err=self.err)

    def journal(self) -> Journal:
        """The binding journal, on the host's clocks."""
        return Journal(self.host.fs, clock=self.host.monotonic, sleep=self.host.sleep,
                       err=self.err)

    def warn(self, message: str) -> None:
        """A line for libvirt's log that does not fail the call (names escaped)."""
        from platform_hostdev.errors import printable_lines

        print(printable_lines(f"platform-hostdev: warning: {message}"), file=self.err)


class HookDevice(NamedTuple):
    """A platform hostdev of the domain, located on the host."""

    name: str
    bus: str
    dt_path: str | None
    compatible: tuple[str, ...]
    managed: bool
    sysfs_path: str | None = None  # /sys/devices/... (host-absolute)
    iommufd: bool = False          # <driver iommufd='yes'>: the cdev, not the group


def read_config(fs: HostFs) -> dict[str, str]:
    """hook.conf's ``key = value`` lines (``#`` comments); empty when there is none."""
    result = {}
    for line in (fs.read_text(HOOK_CONFIG) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            result[key.strip()] = value.strip()
    return result
