"""User-facing errors: each says what was found and how to fix it.

Programmer errors stay ordinary Python exceptions (a traceback is right for
them). Everything a user can cause derives from :class:`HostdevError`, which
the command line prints as ``error: <what>`` plus ``hint: <fix>`` and exit
code 1, never as a traceback.
"""
from __future__ import annotations

__all__ = [
    "HostdevError",
    "DeviceTreeError",
    "DeviceNotFoundError",
    "InvalidDeviceSpecError",
    "HostError",
    "XmlError",
]


class HostdevError(Exception):
    """A user error: ``what`` went wrong and the ``fix``."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return self.what if not self.fix else f"{self.what} ({self.fix})"


class DeviceTreeError(HostdevError):
    """A device tree that cannot be read or interpreted, located by node and property."""

    def __init__(self, node: str, prop: str | None, problem: str, fix: str = "") -> None:
        where = f"node {node}" + (f", property {prop}" if prop else "")
        super().__init__(
            f"{where}: {problem}",
            fix or "the device tree is malformed there; fix the DTS and rebuild the DTB",
        )
        self.node = node
        self.prop = prop
        self.problem = problem


class InvalidDeviceSpecError(HostdevError):
    """A device name, DT path or alias that is not well formed (e.g. holds '..')."""


class DeviceNotFoundError(HostdevError):
    """A well-formed device spec that matches no device."""

    def __init__(self, spec: str, fix: str = "") -> None:
        super().__init__(
            f"no platform or amba device matches {spec!r}",
            fix
            or "give a DT path (/soc/ethernet@ff0e0000), a sysfs name (ff0e0000.ethernet) "
            "or a DT alias (ethernet0); 'platform-hostdev nodedev-list' lists them",
        )
        self.spec = spec


class HostError(HostdevError):
    """The host's sysfs or kernel state is not what the operation needs."""


class XmlError(HostdevError):
    """XML that is malformed, unsafe, or does not follow our schema."""
