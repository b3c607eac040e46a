"""The demo's libvirt part (scripts/demo_libvirt.py, step 3 of the README's main job) runs.

It starts its own libvirtd and walks translate, define, sync, domxml-to-native and
dumpxml on the virt board's DT; nothing else ran it, and it broke unnoticed once
(an import the package layout no longer offered).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.libvirt

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo_libvirt.py"


def test_the_demo_defines_the_domain_and_shows_qemus_command_line() -> None:
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for step in ("== define in a real libvirtd", "== sync:", "== virsh domxml-to-native",
                 "== dumpxml: back in the user form"):
        assert step in done.stdout, step
    assert "-device vfio-platform,host=a000000.virtio_mmio,id=phd-0" in done.stdout
