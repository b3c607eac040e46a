"""The platform-bus allocator model checked against QEMU itself.

QEMU cannot create a vfio-platform device without a host device, but it
places the other dynamic sysbus devices (uefi-vars-sysbus, tpm-tis-device)
with the same allocator. Each case dumps QEMU's guest DT for a device order
and compares every node's offset with the model's.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.guestdt.platform_bus import BusDevice, allocate

QEMU = "qemu-system-aarch64"
SIZES = {"uefi": 0x20, "tpm": 0x5000}
NODE_PREFIX = {"uefi": "qemu-uefi-vars@", "tpm": "tpm_tis@"}


@pytest.fixture(scope="module")
def swtpm_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in (QEMU, "swtpm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup-host "
                        "(qemu-system-arm from bookworm-backports, swtpm)")
    state = tmp_path_factory.mktemp("tpm")
    sock = state / "sock"
    proc = subprocess.Popen(["swtpm", "socket", "--tpmstate", f"dir={state}", "--tpm2",
                             "--ctrl", f"type=unixio,path={sock}", "--flags",
                             "not-need-init"])
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("swtpm did not create its control socket within 10 s")
        time.sleep(0.05)
    yield sock
    proc.kill()
    proc.wait()


def _qemu_offsets(order: list[str], sock: Path, tmp: Path) -> list[int]:
    args = [QEMU, "-M", f"virt,dumpdtb={tmp / 'out.dtb'}", "-cpu", "max", "-m", "512",
            "-display", "none", "-nodefaults"]
    for i, kind in enumerate(order):
        if kind == "uefi":
            args += ["-device", f"uefi-vars-sysbus,jsonfile={tmp / f'vars{i}.json'}"]
        else:
            args += ["-chardev", f"socket,id=chrtpm,path={sock}",
                     "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                     "-device", "tpm-tis-device,tpmdev=tpm0"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bus = DeviceTree.from_dtb(tmp / "out.dtb").node("/platform-bus@c000000")
    offsets = {}
    for child in bus.children:
        offsets.setdefault(child.name.split("@")[0] + "@", []).append(child.cells("reg")[0])
    result = []
    for kind in order:
        result.append(offsets[NODE_PREFIX[kind]].pop(0) if kind == "tpm" else -1)
    # uefi-vars nodes are all named qemu-uefi-vars@<offset>: compare them as a set
    uefi = sorted(offsets.get(NODE_PREFIX["uefi"], []))
    return result + uefi


def _model_offsets(order: list[str]) -> list[int]:
    placements = allocate([BusDevice(f"{k}{i}", (SIZES[k],), 1 if k == "tpm" else 0)
                           for i, k in enumerate(order)])
    result = [p.regions[0][0] if k == "tpm" else -1 for p, k in zip(placements, order,
                                                                    strict=True)]
    uefi = sorted(p.regions[0][0] for p, k in zip(placements, order, strict=True)
                  if k == "uefi")
    return result + uefi


ORDERS = [["uefi"], ["tpm"], ["uefi", "tpm", "uefi"], ["tpm", "uefi", "uefi"],
          ["uefi"] * 3 + ["tpm"] + ["uefi"] * 2]
rng = random.Random(20261122)
for _ in range(4):
    n = rng.randint(2, 7)
    order = ["uefi"] * n
    order[rng.randrange(n)] = "tpm"
    ORDERS.append(order)


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_model_places_devices_where_qemu_does(order: list[str], swtpm_socket: Path,
                                              tmp_path: Path) -> None:
    assert _qemu_offsets(order, swtpm_socket, tmp_path) == _model_offsets(order)
