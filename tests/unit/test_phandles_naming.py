"""phandles (the link table) and naming (the kernel's device set and names)."""
from __future__ import annotations

from pathlib import Path

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


def populate_board() -> DeviceTree:
    """The extras of of_platform_default_populate_init(): reserved memory, /firmware, /chosen."""
    return tree_of(gic_soc(
        node("ramoops@9000", {"compatible": "ramoops", "reg": [0x9000, 0x1000]}),
        top=(
            node("reserved-memory", {"#address-cells": 2, "#size-cells": 2, "ranges": True}, [
                node("smem@86300000", {"compatible": "qcom,smem", "no-map": True,
                                       "reg": [0, 0x86300000, 0, 0x100000]}),
                node("rmtfs@86700000", {"compatible": "qcom,rmtfs-mem",
                                        "reg": [0, 0x86700000, 0, 0x100000],
                                        "status": "disabled"}),
                node("other@88000000", {"compatible": "shared-dma-pool",
                                        "reg": [0, 0x88000000, 0, 0x100000]}),
            ]),
            node("firmware", {}, [
                node("scm", {"compatible": ["vendor,scm", "simple-bus"]}, [
                    node("inner", {"compatible": "vendor,inner"})]),
            ]),
            node("chosen", {"#address-cells": 2, "#size-cells": 2, "ranges": True}, [
                node("framebuffer@90000000", {"compatible": "simple-framebuffer",
                                              "reg": [0, 0x90000000, 0, 0x800000],
                                              "status": "disabled"}),
                node("framebuffer@91000000", {"compatible": "simple-framebuffer",
                                              "reg": [0, 0x91000000, 0, 0x800000]}),
            ]),
        )))


def test_populate_creates_reserved_memory_firmware_and_chosen_devices() -> None:
    predicted = {p.dt_path: p for p in predict_devices(populate_board())}
    smem = predicted["/reserved-memory/smem@86300000"]
    assert (smem.name, smem.bus, smem.parent_name) == ("86300000.smem", "platform", None)
    assert "/reserved-memory/rmtfs@86700000" not in predicted    # disabled
    assert "/reserved-memory/other@88000000" not in predicted    # not in reserved_mem_matches
    # a matching node under a simple-bus is created first, at the top (parent None), once
    ramoops = [p for p in predict_devices(populate_board()) if p.dt_path == "/soc/ramoops@9000"]
    assert [(p.name, p.parent_name) for p in ramoops] == [("9000.ramoops", None)]
    # /firmware's children, but not their children even on a simple-bus (no bus table)
    assert predicted["/firmware/scm"].name == "firmware:scm"
    assert "/firmware/scm/inner" not in predicted
    # of_get_compatible_child() takes the FIRST simple-framebuffer child: here disabled
    assert not [p for p in predicted if p.startswith("/chosen")]


def test_chosen_framebuffer_when_the_first_is_available(kernel_dtbs: Path) -> None:
    tree = DeviceTree.from_dtb(kernel_dtbs / "qcom/msm8953-motorola-potter.dtb")
    predicted = {p.dt_path: p for p in predict_devices(tree)}
    fb = predicted["/chosen/framebuffer@90001000"]
    assert (fb.name, fb.bus, fb.parent_name) == ("90001000.framebuffer", "platform", None)
    # qcom boards: reserved-memory carveouts with a driver are devices, the others are not
    apq = DeviceTree.from_dtb(kernel_dtbs / "qcom/apq8016-sbc.dtb")
    carveouts = {p.name for p in predict_devices(apq) if p.dt_path.startswith("/reserved-memory")}
    # 12 carveouts; tz, mpss, wcnss, venus, ... have no compatible of the match table
    assert carveouts == {"86300000.smem", "86700000.rmtfs", "bff00000.ramoops"}


def test_disabled_chosen_framebuffer_and_ramoops_on_real_boards(kernel_dtbs: Path) -> None:
    relic = DeviceTree.from_dtb(kernel_dtbs / "allwinner/sun50i-a64-amarula-relic.dtb")
    assert not [p for p in predict_devices(relic) if p.dt_path.startswith("/chosen")]
    e850 = DeviceTree.from_dtb(kernel_dtbs / "exynos/exynos850-e850-96.dtb")
    assert "f0000000.ramoops" in {p.name for p in predict_devices(e850)}
