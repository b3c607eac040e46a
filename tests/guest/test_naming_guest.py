"""Inside the board: the kernel's naming and populate rules, predicted from the live DT,
against the devices the real 6.12 kernel created."""
from __future__ import annotations

import os

from platform_hostdev.dt.naming import predict_devices
from platform_hostdev.dt.tree import DeviceTree

# QEMU virt; tests/guest/test_naming_guest_raspi3b.py runs the same test on the raspi3b.


def _real_dt_devices() -> dict[str, tuple[str, str]]:
    real = {}
    for bus in ("platform", "amba"):
        base = f"/sys/bus/{bus}/devices"
        for name in os.listdir(base):
            link = f"{base}/{name}/of_node"
            if os.path.islink(link):
                path = os.path.realpath(link)[len("/sys/firmware/devicetree/base"):] or "/"
                real[name] = (bus, path)
    return real


def test_predicted_devices_are_exactly_the_kernels() -> None:
    tree = DeviceTree.from_sysfs("/sys/firmware/devicetree/base")
    predicted = {d.name: (d.bus, d.dt_path) for d in predict_devices(tree)}
    assert predicted == _real_dt_devices()
