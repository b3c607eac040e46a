"""User-facing errors: each says what was found, how to fix it, and a stable code.

Programmer errors stay ordinary Python exceptions (a traceback is right for
them). Everything a user can cause derives from :class:`HostdevError`, which
carries

* ``code``: one of the stable, kebab-case codes below (scripts match on it;
  the wording of ``what`` and ``fix`` may change, the codes do not);
* ``what``: what was found; ``fix``: how to fix it;
* ``data``: the facts the error is about (``device``, ``path``, ``domain``,
  ``group``, ...), plain JSON values.

The command line prints ``error: <what>`` and ``hint: <fix>`` on stderr and
exits 1; under ``--json`` it prints ``{"error": {"code", "what", "fix",
...data}}`` on stdout instead (:meth:`HostdevError.to_json`), with the same
exit code. The libvirt hook keeps printing the human text (libvirt shows it).

Every subclass has its default code; a bare :class:`HostdevError` is always
raised with an explicit ``code=`` (a test holds the package to that).

=========================  ===================================================
code                       meaning
=========================  ===================================================
``device-not-found``       no platform/amba device matches the spec
``invalid-device-spec``    a DT path, device name or alias that is not well formed
``dt-malformed``           a device tree that cannot be read or interpreted
``dt-mismatch``            a DT path and a device name that name different devices
``duplicate-device``       one device listed twice in a domain
``xml-invalid``            XML that is malformed, unsafe, or off our schema
``file-unreadable``        a file named on the command line cannot be read
``invalid-page-size``      a --page-size that no arm64 kernel uses, or one given without --dtb
``device-in-use``          another domain owns the device, or a process holds its VFIO group
``group-not-viable``       another member of the IOMMU group is bound to a host driver
``not-migratable``         migrate/save/restore of a domain with platform hostdevs
``hotplug-unsupported``    a live change: platform devices cannot be hot-plugged
``amba-unsupported``       an AMBA device for QEMU, whose vfio-platform refuses vfio-amba
``acpi-unsupported``       a domain booting with ACPI, which ignores the guest DT
``unbind-forbidden``       the kernel refused to take the device from its driver, or its driver
                           (or a dependent's) has no unbind file (suppress_bind_attrs)
``consumer-would-unbind``  the kernel would unbind devices that depend on it (device links)
``dt-user-would-lose``     bound devices use it through the DT with no device link: the
                           kernel would leave them running on what the unbind takes away
``sysfs-write-failed``     the kernel refused another sysfs write of a binding step
``host-uses-device``       the host needs the device (console, mounted disk, route)
``bus-unsupported``        a device on a bus other than platform or amba
``vfio-unavailable``       no vfio-platform / vfio-amba driver in the kernel
``vfio-error``             a VFIO call failed (inspect)
``no-iommu``               no IOMMU group, or a no-IOMMU group QEMU cannot use
``no-cdev``                the iommufd backend needs the device's vfio cdev, which the kernel
                           does not give it (no-IOMMU, no CONFIG_VFIO_DEVICE_CDEV, no /dev/iommu)
``reset-required``         vfio-platform wants a reset handler the device lacks
``probe-failed``           the vfio driver did not bind after drivers_probe
``uevent-timeout``         the expected bind/unbind did not happen in time
``restore-failed``         a device could not be put back as it was
``journal-corrupt``        a journal, ownership or guest-DT record that cannot be read (a damaged
                           record is set aside; its device is refused while the copy is there)
``reservation-corrupt``    the boot-time reservation file holds something not a DT path
``state-busy``             another platform-hostdev call holds a state lock too long
``state-unwritable``       a state directory or record cannot be written (no space, /run read-only,
                           a file where the directory belongs, not root): nothing was changed
``interrupted-operation``  an earlier detach/reattach was interrupted: recover first
``not-detached``           the device is not bound to vfio (re-attach, unmanaged, inspect)
``already-detached``       the device is already bound to its vfio driver
``host-state``             sysfs or kernel state is not what the operation needs
``permission-denied``      the caller lacks the privileges (root, the VFIO nodes)
``libvirt-error``          libvirt refused an operation or cannot be reached
``domain-not-found``       no domain of that name or UUID on the connection
``emulator-unsupported``   the QEMU binary has no vfio-platform device
``emulator-failed``        the QEMU binary cannot be run or read
``guest-dt-missing``       the domain lacks the guest device tree its devices need
``guest-dt-stale``         the guest device tree was built for another configuration
``guest-dt-failed``        the guest device tree cannot be built (layout, the TPM, <os><dtb>)
``config-invalid``         a libvirt config file (qemu.conf) libvirtd would refuse
``hook-conflict``          a file not ours where the hook is to be installed or removed
``editor-failed``          the editor could not be run or exited with an error
``missing-dependency``     a Python package the operation needs is not installed
=========================  ===================================================
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "CODES",
    "printable",
    "printable_lines",
    "HostdevError",
    "DeviceTreeError",
    "DeviceNotFoundError",
    "InvalidDeviceSpecError",
    "HostError",
    "XmlError",
]


def _table_codes(doc: str) -> frozenset[str]:
    codes = set()
    for line in doc.splitlines():
        if line.startswith("``") and "``" in line[2:]:
            codes.add(line[2:line.index("``", 2)])
    return frozenset(codes)


CODES: frozenset[str] = _table_codes(__doc__ or "")
"""Every error code, as in the table of this module's docstring."""


def printable(text: str) -> str:
    """``text`` with every character ``str.isprintable()`` refuses written as its escape.

    For text from outside (a device tree's node names and strings, sysfs
    names) on its way to a terminal or into XML: C0 and C1 controls (ESC
    and so every ANSI sequence, newline, tab, NUL), DEL, format characters
    such as the bidi overrides, surrogates and non-characters such as U+FFFE
    become ``\\x1b``, ``\\n``, ``\\u202e``, ``\\ufffe`` (as ``repr()`` writes
    them). What is left is printable, and every printable character is an
    XML 1.0 ``Char`` (https://www.w3.org/TR/xml/#charsets), so lxml takes it.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def printable_lines(text: str) -> str:
    """:func:`printable` for each line of a text of several lines (its line breaks kept)."""
    return "\n".join(printable(line) for line in text.split("\n"))


class HostdevError(Exception):
    """A user error: ``what`` went wrong, the ``fix``, a stable ``code`` and the ``data``.

    ``data`` holds the facts as keyword arguments (``device=``, ``path=``, ...);
    they appear in :meth:`to_json` beside code, what and fix.
    """

    code = "host-state"
    """The default code of the class; an instance may carry another (``code=``)."""

    def __init__(self, what: str, fix: str = "", *, code: str | None = None,
                 **data: Any) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix
        if code is not None:
            self.code = code
        self.data: dict[str, Any] = {k: v for k, v in data.items() if v is not None}

    def __str__(self) -> str:
        return self.what if not self.fix else f"{self.what} ({self.fix})"

    def to_json(self) -> dict[str, Any]:
        """``{"code", "what", "fix", ...data}``: the body of the CLI's ``--json`` error."""
        body: dict[str, Any] = {"code": self.code, "what": self.what, "fix": self.fix}
        for key, value in self.data.items():
            body.setdefault(key, list(value) if isinstance(value, (tuple, set, frozenset))
                            else value)
        return body


class DeviceTreeError(HostdevError):
    """A device tree that cannot be read or interpreted, located by node and property."""

    code = "dt-malformed"

    def __init__(self, node: str, prop: str | None, problem: str, fix: str = "") -> None:
        # names and strings from the tree: escaped in the text, kept as found in data
        where = f"node {node}" + (f", property {prop}" if prop else "")
        super().__init__(
            printable(f"{where}: {problem}"),
            printable(fix) or "the device tree is malformed there; fix the DTS and rebuild "
                              "the DTB",
            node=node, property=prop,
        )
        self.node = node
        self.prop = prop
        self.problem = problem


class InvalidDeviceSpecError(HostdevError):
    """A device name, DT path or alias that is not well formed (e.g. holds '..')."""

    code = "invalid-device-spec"


class DeviceNotFoundError(HostdevError):
    """A well-formed device spec that matches no device."""

    code = "device-not-found"

    def __init__(self, spec: str, fix: str = "") -> None:
        super().__init__(
            f"no platform or amba device matches {spec!r}",
            fix
            or "give a DT path (/soc/ethernet@ff0e0000), a sysfs name (ff0e0000.ethernet) "
            "or a DT alias (ethernet0); 'platform-hostdev nodedev-list' lists them",
            device=spec,
        )
        self.spec = spec


class HostError(HostdevError):
    """The host's sysfs or kernel state is not what the operation needs."""

    code = "host-state"


class XmlError(HostdevError):
    """XML that is malformed, unsafe, or does not follow our schema."""

    code = "xml-invalid"
