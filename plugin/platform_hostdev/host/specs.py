"""Well-formedness of device specs given by users (DT paths, sysfs names, aliases).

Kept apart from the inventory so the hook can refuse path tricks without
loading the device-tree machinery.
"""
from __future__ import annotations

import re

from platform_hostdev.errors import InvalidDeviceSpecError

__all__ = ["check_spec"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:,+@-]{0,254}")
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9,._+@-]{1,255}")


def check_spec(spec: str) -> str:
    """Refuse malformed device specs (path tricks, control characters); return the kind.

    Returns "path" for a DT path and "name" for anything to look up by name
    or alias.
    """
    if not spec or "\0" in spec or any(ord(c) < 32 for c in spec):
        raise InvalidDeviceSpecError(f"device {spec!r} is empty or holds control characters",
                                     "give a DT path, a sysfs device name or a DT alias")
    if spec.startswith("/"):
        if spec == "/":
            raise InvalidDeviceSpecError("the DT root '/' is not a device",
                                         "give the path of a device node, e.g. /soc/uart@1000")
        parts = spec[1:].split("/")
        for part in parts:
            if part in ("", ".", "..") or not _PATH_COMPONENT.fullmatch(part):
                raise InvalidDeviceSpecError(
                    f"DT path {spec!r} has an invalid component {part!r}",
                    "give an absolute, normalised DT path such as /soc/ethernet@ff0e0000 "
                    "(no '.', '..' or '//')")
        return "path"
    if "/" in spec or not _NAME.fullmatch(spec) or spec in (".", ".."):
        raise InvalidDeviceSpecError(
            f"device name {spec!r} is not a valid sysfs device name",
            "a device name has no '/' and does not start with '.', e.g. ff0e0000.ethernet; "
            "a DT path starts with '/'")
    return "name"
