"""Pure parsers of protection: the kernel command line and the routing tables."""
from __future__ import annotations

from platform_hostdev.host.protection import cmdline_consoles, default_route_interfaces

ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0002\t0\t0\t600\t00000000\t0\t0\t0
"""
IPV6 = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
    "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth2\n"
)


def test_console_and_earlycon_values() -> None:
    consoles, earlycons = cmdline_consoles(
        "BOOT_IMAGE=/vmlinuz root=/dev/vda2 console=tty0 console=ttyAMA0,115200n8 earlycon "
        "earlycon=pl011,mmio32,0x9000000 quiet")
    assert consoles == ["tty0", "ttyAMA0,115200n8"]
    assert earlycons == ["", "pl011,mmio32,0x9000000"]


def test_no_console_words() -> None:
    assert cmdline_consoles("root=/dev/sda1 consoleblank=0") == ([], [])


def test_default_routes_v4_up_only_and_v6_without_lo() -> None:
    assert default_route_interfaces(ROUTE, IPV6) == ["eth0", "eth1"]


def test_no_default_route() -> None:
    assert default_route_interfaces(ROUTE.splitlines()[0] + "\n", "") == []
