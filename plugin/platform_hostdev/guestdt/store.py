"""Where generated guest DTBs live, and the fingerprint that says they are current.

A generated DTB is valid only for the configuration it was built from: the
machine, CPUs, memory, NUMA, the emulator, the platform devices and their
order, and any other dynamic sysbus device (they share the platform bus).
The fingerprint is computed from the domain XML alone, so the prepare hook,
which must never call libvirt, can check it from the XML on its stdin.
Files: ``<state>/guest-dt/<uuid>.dtb`` and ``<uuid>.json`` (fingerprint and
the per-device chain), state dir /var/lib/platform-hostdev.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platform_hostdev.errors import HostdevError
from platform_hostdev.host.statefiles import atomic_write

if TYPE_CHECKING:
    from lxml import etree

    from platform_hostdev.domain.domainxml import Element
    from platform_hostdev.guestdt.builder import GuestDevice
    from platform_hostdev.host.boundary import Host

    # what the fingerprint reads: lxml (sync) or the hook's light reader (domainxml)
    DomainElement = etree._Element | Element

__all__ = ["fingerprint", "fingerprint_inputs", "inputs_match", "GuestDtStore", "STATE_DIR",
           "guest_dt_store"]

STATE_DIR = "/var/lib/platform-hostdev"
_UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024 ** 2,
          "mib": 1024 ** 2, "mb": 1000 ** 2, "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3,
          "t": 1024 ** 4, "tib": 1024 ** 4, "tb": 1000 ** 4}


def _bytes(element: DomainElement | None) -> int | str | None:
    """A size in bytes; the text itself when it is not a number (libvirt would refuse
    it, but the hook must not fail on it: the fingerprint still tells a change)."""
    if element is None or element.text is None:
        return None
    unit = (element.get("unit") or "KiB").lower()
    text = element.text.strip()
    if not text.isdigit():
        return text
    return int(text) * _UNITS.get(unit, 1024)


def _cpu(cpu: DomainElement | None) -> dict[str, Any] | None:
    """What of <cpu> shapes the DT (libvirt adds check/match/fallback attributes at will)."""
    if cpu is None:
        return None
    topology = cpu.find("topology")
    return {
        "mode": cpu.get("mode"),
        "model": (cpu.findtext("model") or "").strip() or None,
        "topology": dict(sorted(topology.attrib.items())) if topology is not None else None,
        "numa": [dict(sorted(c.attrib.items())) for c in cpu.findall("numa/cell")],
    }


def fingerprint_inputs(domain: DomainElement, devices: Sequence[str]) -> dict[str, Any]:
    """The DT-relevant parts of a domain, as plain data (shown when they differ)."""
    os_type = domain.find("os/type")
    return {
        "arch": os_type.get("arch") if os_type is not None else None,
        "machine": os_type.get("machine") if os_type is not None else None,
        "memory": _bytes(domain.find("memory")),
        "vcpu": (domain.findtext("vcpu") or "").strip() or None,
        "cpu": _cpu(domain.find("cpu")),
        "gic": domain.find("features/gic").get("version")  # type: ignore[union-attr]
        if domain.find("features/gic") is not None else None,
        "emulator": (domain.findtext("devices/emulator") or "").strip() or None,
        "tpm": [t.get("model") for t in domain.findall("devices/tpm")],
        "ramfb": len([v for v in domain.findall("devices/video/model")
                      if v.get("type") == "ramfb"]),
        "platform_devices": list(devices),
    }


def fingerprint(domain: DomainElement, devices: Sequence[str]) -> str:
    import hashlib  # only here: the hook's path stays free of OpenSSL's start-up cost

    data = json.dumps(fingerprint_inputs(domain, devices), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def inputs_match(recorded: Any, domain: DomainElement, devices: Sequence[str]) -> bool:
    """Whether a stored record's inputs equal the domain's (the fingerprint's preimage)."""
    now = json.loads(json.dumps(fingerprint_inputs(domain, devices), sort_keys=True))
    return isinstance(recorded, dict) and recorded == now


class GuestDtStore:
    """Generated DTBs and their records under a state directory."""

    def __init__(self, state_dir: str | os.PathLike[str] = STATE_DIR) -> None:
        self.directory = Path(state_dir) / "guest-dt"

    def dtb_path(self, uuid: str) -> Path:
        if not uuid or not all(c in "0123456789abcdef-" for c in uuid.lower()):
            raise HostdevError(f"domain UUID {uuid!r} is malformed", "check the domain XML",
                               code="xml-invalid")
        return self.directory / f"{uuid.lower()}.dtb"

    def record_path(self, uuid: str) -> Path:
        return self.dtb_path(uuid).with_suffix(".json")

    def save(self, uuid: str, dtb: bytes, print_: str, inputs: dict[str, Any],
             chain: Sequence[GuestDevice]) -> Path:
        from dataclasses import asdict  # here: the hook's path never saves

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        path = self.dtb_path(uuid)
        atomic_write(path, dtb, 0o644)
        record = {"fingerprint": print_, "inputs": inputs,
                  "devices": [asdict(d) for d in chain]}
        atomic_write(self.record_path(uuid), json.dumps(record, indent=2).encode(), 0o644)
        return path

    def load_record(self, uuid: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record_path(uuid).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise HostdevError(f"the guest DT record {self.record_path(uuid)} is unreadable: "
                               f"{exc}", "run 'platform-hostdev sync DOMAIN' to regenerate it"
                               , code="journal-corrupt") from None
        return data if isinstance(data, dict) else None

    def placements_of(self, device: str) -> list[tuple[str, dict[str, Any]]]:
        """(domain UUID, chain) of every stored guest DT that places ``device``."""
        found = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            record = self.load_record(path.stem)
            for entry in (record or {}).get("devices", []):
                if isinstance(entry, dict) and entry.get("name") == device:
                    found.append((path.stem, entry))
        return found

    def remove(self, uuid: str) -> None:
        for path in (self.dtb_path(uuid), self.record_path(uuid)):
            path.unlink(missing_ok=True)


def guest_dt_store(host: Host) -> GuestDtStore:
    """The guest DT store of ``host`` (under its root's state directory)."""
    return GuestDtStore(host.fs.path(STATE_DIR))
