"""Domain XML for tests: the user form and its translated (libvirt) form."""
from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence

from platform_hostdev.hostdev_xml import parse_xml
from platform_hostdev.translate import forward, to_string

__all__ = ["user_domain", "libvirt_domain"]


def user_domain(name: str, devices: Sequence[str], *, managed: bool = True,
                uuid: str | None = None, memory_mib: int = 512, vcpus: int = 1,
                extra_devices: str = "") -> str:
    """An aarch64 virt domain in the user form with one platform hostdev per device name."""
    hostdevs = "".join(
        f"""
    <hostdev mode='subsystem' type='platform' managed='{"yes" if managed else "no"}'>
      <source><device name='{d}'/></source>
    </hostdev>""" for d in devices)
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid or uuidlib.uuid5(uuidlib.NAMESPACE_URL, name)}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>{hostdevs}{extra_devices}
  </devices>
</domain>
"""


def libvirt_domain(name: str, devices: Sequence[str], **kw: object) -> bytes:
    """The translated form libvirt stores and hands to hooks."""
    tree = parse_xml(user_domain(name, devices, **kw), "test domain")  # type: ignore[arg-type]
    return to_string(forward(tree, None).tree).encode()
