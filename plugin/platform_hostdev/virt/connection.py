"""The libvirt connection, its flags, and libvirt errors turned into user errors.

libvirt-python is imported only inside these functions, so commands that do
not talk to libvirt never load it. Flag values are libvirt's ABI (stable).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from platform_hostdev.errors import HostdevError

__all__ = [
    "AFFECT_CURRENT",
    "AFFECT_LIVE",
    "AFFECT_CONFIG",
    "XML_SECURE",
    "XML_INACTIVE",
    "DEFINE_VALIDATE",
    "DEFAULT_URI",
    "LibvirtError",
    "default_uri",
    "is_local_uri",
    "open_connection",
    "libvirt_errors",
    "lookup_domain",
]

# virDomainModificationImpact, virDomainXMLFlags, virDomainDefineFlags.
AFFECT_CURRENT = 0
AFFECT_LIVE = 1
AFFECT_CONFIG = 2
XML_SECURE = 1
XML_INACTIVE = 2
DEFINE_VALIDATE = 1
DEFAULT_URI = "qemu:///system"


class LibvirtError(HostdevError):
    """libvirt refused an operation; ``libvirt_code`` is libvirt's error number."""

    code = "libvirt-error"

    def __init__(self, what: str, fix: str, libvirt_code: int | None = None, *,
                 code: str | None = None) -> None:
        super().__init__(what, fix, code=code, libvirt_code=libvirt_code)
        self.libvirt_code = libvirt_code


def default_uri(env: Mapping[str, str]) -> str:
    """LIBVIRT_DEFAULT_URI, else qemu:///system (as virsh run by root)."""
    return env.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI


def is_local_uri(uri: str) -> bool:
    """True when the URI names this machine (no host part), e.g. qemu:///system."""
    parts = urlsplit(uri)
    return not parts.hostname or parts.hostname in ("localhost",)


@contextlib.contextmanager
def libvirt_errors(action: str, fix: str) -> Iterator[None]:
    """Turn libvirt.libvirtError raised inside into a LibvirtError saying ``action`` failed."""
    import libvirt

    try:
        yield
    except libvirt.libvirtError as exc:
        message = exc.get_error_message() or str(exc)
        raise LibvirtError(f"{action}: {message}", fix, exc.get_error_code()) from None


def open_connection(uri: str) -> Any:
    """A read-write libvirt connection to ``uri``."""
    try:
        import libvirt
    except ImportError:
        raise HostdevError("libvirt-python is not installed",
                           "pip install libvirt-python (or apt install python3-libvirt)",
                           code="missing-dependency") from None
    with libvirt_errors(f"cannot connect to {uri}",
                        "start libvirtd (or virtqemud), run as root for qemu:///system, "
                        "or pass another URI with -c"):
        return libvirt.open(uri)


def lookup_domain(conn: Any, name: str) -> Any:
    """A domain by name or UUID, as virsh accepts them."""
    import libvirt

    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise LibvirtError(f"cannot look up domain {name!r}: {exc.get_error_message()}",
                               "check the connection URI (-c)", exc.get_error_code()) from None
    with contextlib.suppress(libvirt.libvirtError):
        return conn.lookupByUUIDString(name)
    raise LibvirtError(f"no domain named {name!r} on this connection",
                       "'virsh list --all' lists the domains; check -c/--connect",
                       libvirt.VIR_ERR_NO_DOMAIN, code="domain-not-found")
