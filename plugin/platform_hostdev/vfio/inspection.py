"""The live VFIO view of a device checked against its device-tree correlation.

:func:`compare` sets what the kernel's vfio driver reports
(:class:`~platform_hostdev.vfio.client.VfioView`) beside what the device tree says it
should report (:class:`~platform_hostdev.vfio.correlate.Correlation`) and lists
every difference as a :class:`Finding`:

* ``device-type``: the device flags lack PLATFORM (platform bus) or AMBA (amba bus);
* ``region-count``, ``region-size``, ``region-access`` (READ/WRITE differ);
* ``region-mmap-missing`` / ``region-mmap-unexpected``: MMAP is offered exactly
  when the DT address and size are page aligned;
* ``irq-count``; ``irq-level-not-automasked`` (a level interrupt must come
  MASKABLE|AUTOMASKED); ``irq-edge-automasked``; ``irq-eventfd-missing``.

Those are *disagreements*. A no-IOMMU group is a *warning* (kind ``noiommu``):
the view is right but the device has no DMA isolation, the kernel is tainted
and QEMU cannot use the group. Interrupts whose trigger the DT does not give
are not judged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from platform_hostdev.vfio.client import IrqInfo, RegionInfo, VfioView
from platform_hostdev.vfio.correlate import Correlation, IrqMap, RegionMap
from platform_hostdev.vfio.uapi import flag_bit, flag_names

__all__ = ["Finding", "Inspection", "compare", "inspect", "DISAGREEMENT", "WARNING"]

DISAGREEMENT = "disagreement"
WARNING = "warning"

_BUS_DEVICE_FLAG = {"platform": "PLATFORM", "amba": "AMBA"}


@dataclass(frozen=True)
class Finding:
    """One difference between the DT's expectation and the VFIO view."""

    kind: str
    severity: str
    message: str
    index: int | None = None
    expected: str = ""
    found: str = ""


@dataclass
class Inspection:
    """A correlation, the live view, and what differs between them."""

    correlation: Correlation
    view: VfioView
    findings: list[Finding] = field(default_factory=list)

    @property
    def disagreements(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == DISAGREEMENT]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def agree(self) -> bool:
        return not self.disagreements

    def kinds_at(self, prefix: str, index: int) -> list[str]:
        """Finding kinds about region or IRQ ``index`` (prefix "region" or "irq")."""
        return [f.kind for f in self.findings
                if f.index == index and f.kind.startswith(prefix + "-")]

    def to_json(self) -> dict[str, Any]:
        c, v = self.correlation, self.view
        return {
            "device": v.device,
            "bus": v.bus,
            "dt_path": c.dt_path,
            "compatible": list(c.compatible),
            "driver": v.driver,
            "backend": v.backend,
            "cdev": v.cdev,
            "group": v.group.to_json(),
            "iommu_type": v.iommu_type,
            "device_flags": {"expected": [_BUS_DEVICE_FLAG.get(v.bus, "?")],
                             "vfio": v.info.flag_names},
            "regions": [
                {"index": i, "dt": _region_json(_at(c.regions, i)),
                 "vfio": _vfio_region_json(_at(v.regions, i)),
                 "findings": self.kinds_at("region", i)}
                for i in range(max(len(c.regions), len(v.regions)))],
            "irqs": [
                {"index": i, "dt": _irq_json(_at(c.irqs, i)),
                 "vfio": _vfio_irq_json(_at(v.irqs, i)),
                 "findings": self.kinds_at("irq", i)}
                for i in range(max(len(c.irqs), len(v.irqs)))],
            "disagreements": [asdict(f) for f in self.disagreements],
            "warnings": [asdict(f) for f in self.warnings],
            "agree": self.agree,
        }


def _at(items: Any, index: int) -> Any:
    return items[index] if index < len(items) else None


def _region_json(r: RegionMap | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"source": f"{r.prop}[{r.entry}]", "cpu_address": hex(r.cpu_address),
            "size": hex(r.size), "flags": flag_names("region", r.expected_flags)}


def _vfio_region_json(r: RegionInfo | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"size": hex(r.size), "offset": hex(r.offset), "flags": r.flag_names}


def _irq_json(i: IrqMap | None) -> dict[str, Any] | None:
    if i is None:
        return None
    return {"source": f"{i.prop}[{i.entry}]", "controller": i.controller, "kind": i.kind,
            "number": i.number, "trigger": i.trigger,
            "flags": None if i.expected_flags is None else flag_names("irq", i.expected_flags)}


def _vfio_irq_json(i: IrqInfo | None) -> dict[str, Any] | None:
    if i is None:
        return None
    return {"flags": i.flag_names, "count": i.count}


def _names(kind: str, value: int) -> str:
    return "|".join(flag_names(kind, value)) or "none"


def _count(prefix: str, noun: str, expected: int, found: int) -> list[Finding]:
    if expected == found:
        return []
    return [Finding(f"{prefix}-count", DISAGREEMENT,
                    f"the DT gives {expected} {noun}, VFIO reports {found}",
                    expected=str(expected), found=str(found))]


def _device_findings(c: Correlation, v: VfioView) -> list[Finding]:
    expected = _BUS_DEVICE_FLAG.get(c.bus)
    if expected is None or v.info.flags & flag_bit("device", expected):
        return []
    return [Finding("device-type", DISAGREEMENT,
                    f"device flags are {_names('device', v.info.flags)}, but a {c.bus} device "
                    f"bound to {v.driver} should be {expected}",
                    expected=expected, found=_names("device", v.info.flags))]


def _region_findings(c: Correlation, v: VfioView) -> list[Finding]:
    found: list[Finding] = []
    found.extend(_count("region", "region(s)", len(c.regions), v.info.num_regions))
    access = flag_bit("region", "READ") | flag_bit("region", "WRITE")
    for dt, live in zip(c.regions, v.regions, strict=False):
        i = dt.index
        if dt.size != live.size:
            found.append(Finding(
                "region-size", DISAGREEMENT,
                f"region {i} ({dt.prop}[{dt.entry}] at 0x{dt.cpu_address:x}) is 0x{dt.size:x} "
                f"bytes in the DT, 0x{live.size:x} in VFIO",
                i, hex(dt.size), hex(live.size)))
        if dt.expected_flags & access != live.flags & access:
            found.append(Finding(
                "region-access", DISAGREEMENT,
                f"region {i} is {_names('region', live.flags & access)} in VFIO, "
                f"expected {_names('region', dt.expected_flags & access)}",
                i, _names("region", dt.expected_flags & access),
                _names("region", live.flags & access)))
        if dt.mmap and not live.mmap:
            found.append(Finding(
                "region-mmap-missing", DISAGREEMENT,
                f"region {i} is page aligned in the DT but VFIO does not offer MMAP",
                i, "MMAP", _names("region", live.flags)))
        elif live.mmap and not dt.mmap:
            found.append(Finding(
                "region-mmap-unexpected", DISAGREEMENT,
                f"region {i} (0x{dt.cpu_address:x}, 0x{dt.size:x} bytes) is not page aligned "
                "in the DT but VFIO offers MMAP", i, "no MMAP", _names("region", live.flags)))
    return found


def _irq_findings(c: Correlation, v: VfioView) -> list[Finding]:
    found: list[Finding] = []
    found.extend(_count("irq", "interrupt(s)", len(c.irqs), v.info.num_irqs))
    automasked = flag_bit("irq", "AUTOMASKED")
    eventfd = flag_bit("irq", "EVENTFD")
    for dt, live in zip(c.irqs, v.irqs, strict=False):
        i = dt.index
        if not live.flags & eventfd:
            found.append(Finding(
                "irq-eventfd-missing", DISAGREEMENT,
                f"IRQ {i} cannot signal an eventfd ({_names('irq', live.flags)})",
                i, "EVENTFD", _names("irq", live.flags)))
        if dt.expected_flags is None:
            continue
        level = bool(dt.expected_flags & automasked)
        if level and not live.automasked:
            found.append(Finding(
                "irq-level-not-automasked", DISAGREEMENT,
                f"IRQ {i} is {dt.trigger} in the DT but VFIO does not report AUTOMASKED "
                f"({_names('irq', live.flags)}): the host configured it as edge",
                i, _names("irq", dt.expected_flags), _names("irq", live.flags)))
        elif live.automasked and not level:
            found.append(Finding(
                "irq-edge-automasked", DISAGREEMENT,
                f"IRQ {i} is {dt.trigger} in the DT but VFIO reports AUTOMASKED "
                f"({_names('irq', live.flags)}): the host configured it as level",
                i, _names("irq", dt.expected_flags), _names("irq", live.flags)))
    return found


def _group_findings(v: VfioView) -> list[Finding]:
    if not v.group.noiommu:
        return []
    return [Finding(
        "noiommu", WARNING,
        f"UNSAFE: {v.group.node} is a no-IOMMU group: no DMA isolation, the kernel is "
        "tainted, and QEMU cannot use it (user-space drivers and tests only)",
        expected="an IOMMU group", found=v.group.node)]


def compare(correlation: Correlation, view: VfioView) -> list[Finding]:
    """Every disagreement (and warning) between the DT correlation and the VFIO view."""
    return (_device_findings(correlation, view) + _region_findings(correlation, view)
            + _irq_findings(correlation, view) + _group_findings(view))


def inspect(correlation: Correlation, view: VfioView) -> Inspection:
    """An :class:`Inspection` holding both sides and their :func:`compare` findings."""
    return Inspection(correlation, view, compare(correlation, view))
