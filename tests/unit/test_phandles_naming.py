"""phandles (the link table) and naming (the kernel's device set and names)."""
from __future__ import annotations

import pytest
from platform_hostdev.dt.naming import device_name, predict_devices
from platform_hostdev.dt.phandles import link_rule, phandle_links
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError

from tests.support.fdtwriter import node
from tests.support.synthetic import CLK_PHANDLE, gic_soc, tree_of

GPIO = 7


def board() -> DeviceTree:
    return tree_of(gic_soc(
        node("gpio@1000", {"compatible": "vendor,gpio", "reg": [0x1000, 0x100],
                           "gpio-controller": True, "#gpio-cells": 2, "phandle": GPIO}),
        node("dev@2000", {"compatible": "vendor,dev", "reg": [0x2000, 0x100],
                          "clocks": [CLK_PHANDLE], "reset-gpios": [GPIO, 3, 1, 0, GPIO, 4, 0],
                          "ngpios": 4, "vendor,handle": 99}),
        node("dangling@3000", {"compatible": "vendor,dev", "reg": [0x3000, 0x100],
                               "clocks": [0x77]}),
        node("nocells@4000", {"compatible": "vendor,dev", "reg": [0x4000, 0x100],
                              "resets": [GPIO, 1]}),
        node("led@5000", {"compatible": "register-bit-led", "reg": [0x5000, 4],
                          "mask": 0x10}),
        node("i2c@6000", {"compatible": "vendor,i2c", "reg": [0x6000, 0x100],
                          "#address-cells": 1, "#size-cells": 0}, [
            node("rtc@51", {"compatible": "nxp,pcf8563", "reg": 0x51}),
        ]),
        node("off@7000", {"compatible": "vendor,dev", "reg": [0x7000, 0x10],
                          "status": "disabled"}),
        node("mfd@8000", {"compatible": ["vendor,mfd", "simple-mfd"], "reg": [0x8000, 0x100]}, [
            node("reboot", {"compatible": "syscon-reboot"}),
            node("nocompat", {}),
        ]),
        node("uart@9000", {"compatible": ["arm,pl011", "arm,primecell"],
                           "reg": [0x9000, 0x1000]}),
        top=(node("firmware", {}, [node("optee", {"compatible": "linaro,optee-tz"})]),
             node("opp-table", {"compatible": "operating-points-v2"}),
             node("hi@100000000", {"compatible": "vendor,hi", "reg": [1, 0, 0, 0x1000]})),
    ))


def test_links_follow_the_table_and_target_cells() -> None:
    tree = board()
    links = phandle_links(tree, tree.node("/soc/dev@2000"))
    assert [(lk.prop, lk.index, lk.target, lk.args) for lk in links] == [
        ("clocks", 0, "/clk", ()),
        ("reset-gpios", 0, "/soc/gpio@1000", (3, 1)),
        ("reset-gpios", 2, "/soc/gpio@1000", (4, 0)),  # the empty slot is index 1
    ]
    assert link_rule("ngpios") is None and link_rule("vendor,handle") is None
    assert link_rule("pinctrl-0") == 0 and link_rule("vdd-supply") == 0


def test_dangling_and_missing_cells_are_located() -> None:
    tree = board()
    with pytest.raises(DeviceTreeError, match=r"^node /soc/dangling@3000, property clocks: "
                                              r"phandle 0x77 refers to no node"):
        phandle_links(tree, tree.node("/soc/dangling@3000"))
    with pytest.raises(DeviceTreeError) as info:
        phandle_links(tree, tree.node("/soc/nocells@4000"))
    assert "has no #reset-cells" in info.value.what and "#reset-cells" in info.value.fix


def test_names_follow_of_device_make_bus_id() -> None:
    tree = board()
    assert device_name(tree.node("/soc/dev@2000")) == "2000.dev"
    assert device_name(tree.node("/soc/led@5000")) == "5000.4.led"  # mask 0x10: ffs-1 = 4
    assert device_name(tree.node("/soc/i2c@6000/rtc@51")) == "6000.i2c:rtc@51"
    assert device_name(tree.node("/soc/mfd@8000/reboot")) == "8000.mfd:reboot"
    assert device_name(tree.node("/firmware/optee")) == "firmware:optee"
    assert device_name(tree.node("/soc")) == "soc"
    assert device_name(tree.node("/hi@100000000")) == "100000000.hi"


def test_device_set_and_buses() -> None:
    predicted = {p.dt_path: p for p in predict_devices(board())}
    assert predicted["/soc/uart@9000"].bus == "amba"
    assert predicted["/soc/dev@2000"].parent_name == "soc"
    assert predicted["/soc/mfd@8000/reboot"].parent_name == "8000.mfd"
    assert predicted["/firmware/optee"].parent_name is None
    for absent in ("/soc/off@7000", "/soc/i2c@6000/rtc@51", "/soc/mfd@8000/nocompat",
                   "/opp-table", "/firmware"):
        assert absent not in predicted
    assert predicted["/hi@100000000"].name == "100000000.hi"
