"""Inside the board: the kernel's naming and populate rules, predicted from the live DT,
against the devices the real 6.12 kernel created."""
from __future__ import annotations

import os

from platform_hostdev.dt.naming import predict_devices
from platform_hostdev.dt.tree import DeviceTree

# virt only (no _<machine> suffix, tests/support/machines.py), not raspi3b yet: there
# the prediction adds 3f00b200.interrupt-controller and 40000000.interrupt-controller,
# which the kernel never creates: of_irq_init() marks every IRQCHIP_DECLARE'd node
# OF_POPULATED (drivers/of/irq.c), and dt/naming.py models that for the GIC family
# only (brcm,bcm2836-armctrl-ic and brcm,bcm2836-l1-intc are missing).


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
