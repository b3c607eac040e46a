"""A fake Raspberry Pi 3 Model B host, as Debian's arm64 6.12 kernel shows it under QEMU raspi3b.

Built from Debian's own ``broadcom/bcm2837-rpi-3-b.dtb`` (the DTB corpus) with
the drivers the real board binds (seen on the emulated raspi3b with Debian's
6.12 kernel and the board's initramfs): bcm2835-dma, bcm2835-mbox, bcm2835-pm,
bcm2835-clk on 3f101000.cprman, pinctrl-bcm2835 on 3f200000.gpio (built in,
``suppress_bind_attrs``: no bind/unbind files), bcm2835-aux-clk,
bcm2835-aux-uart on the mini UART 3f215040.serial, uart-pl011 on the console
3f201000.serial (amba; built in, so also without bind/unbind files),
raspberrypi-firmware on soc:firmware and the firmware's clock, GPIO and power
drivers, pwrseq_simple on wifi-pwrseq, and
sdhost-bcm2835 (the module bcm2835, drivers/mmc/host/bcm2835.ko) on
3f202000.mmc with mmcblk0 "mounted" on /mnt. vfio is loaded in no-IOMMU mode
with vfio-platform reset_required=0, as on the board. The device links are
the fake kernel's fw_devlink model (tests/support/fakedevlinks.py).

Which drivers are modules and which built in follows the kernel's config
(CONFIG_MMC_BCM2835=m, the others =y); modules.builtin and /proc/kallsyms hold
the real names of the built-in drivers used here.
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.support.corpus import board_dtb
from tests.support.fakehost import FakeHost, build_fake_host
from tests.support.fakekernel import FakeKernel

__all__ = ["RASPI3B_DTB", "RASPI3B_DRIVERS", "RASPI3B_RELEASE", "build_raspi3b",
           "CONSOLE", "SD_HOST", "SD_MOUNT", "MINI_UART", "dress_raspi3b"]

RASPI3B_DTB = "broadcom/bcm2837-rpi-3-b.dtb"
RASPI3B_RELEASE = "6.12.117+deb12-arm64"
CONSOLE, SD_HOST, MINI_UART = "3f201000.serial", "3f202000.mmc", "3f215040.serial"
SD_MOUNT = "/mnt"
#: compatible -> the driver Debian's 6.12 kernel binds on the emulated raspi3b
RASPI3B_DRIVERS = {
    "brcm,bcm2835-dma": "bcm2835-dma",
    "brcm,bcm2835-mbox": "bcm2835-mbox",
    "brcm,bcm2835-pm": "bcm2835-pm",
    "brcm,bcm2835-cprman": "bcm2835-clk",
    "brcm,bcm2835-gpio": "pinctrl-bcm2835",
    "brcm,bcm2835-aux": "bcm2835-aux-clk",
    "brcm,bcm2835-aux-uart": "bcm2835-aux-uart",
    "arm,pl011": "uart-pl011",
    "raspberrypi,bcm2835-firmware": "raspberrypi-firmware",
    "raspberrypi,firmware-clocks": "raspberrypi-clk",
    "raspberrypi,firmware-gpio": "raspberrypi-exp-gpio",
    "raspberrypi,bcm2835-power": "raspberrypi-power",
    "mmc-pwrseq-simple": "pwrseq_simple",
    "brcm,bcm2835-sdhost": "sdhost-bcm2835",
}
_MODULES = {"sdhost-bcm2835": "bcm2835"}
# suppress_bind_attrs: pinctrl-bcm2835 always (drivers/pinctrl/bcm/pinctrl-bcm2835.c),
# uart-pl011 when built in (drivers/tty/serial/amba-pl011.c: IS_BUILTIN(CONFIG_SERIAL_AMBA_PL011))
_SUPPRESSED = ("pinctrl-bcm2835", "uart-pl011")
# lines of the kernel's modules.builtin (the package's lib/modules/<release>/modules.builtin)
_BUILTIN = ("kernel/drivers/pinctrl/bcm/pinctrl-bcm2835.ko",
            "kernel/drivers/gpio/gpio-raspberrypi-exp.ko",
            "kernel/drivers/clk/bcm/clk-raspberrypi.ko",
            "kernel/drivers/dma/bcm2835-dma.ko",
            "kernel/drivers/tty/serial/8250/8250_bcm2835aux.ko",
            "kernel/drivers/mmc/core/pwrseq_simple.ko",
            "kernel/drivers/firmware/raspberrypi.ko",
            "kernel/drivers/mailbox/bcm2835-mailbox.ko")
# the initcalls of those drivers (module_platform_driver / builtin_platform_driver(X): X_init)
_KALLSYMS = ("bcm2835_pinctrl_driver_init", "bcm2835_pinctrl_probe", "bcm2835_clk_driver_init",
             "bcm2835_aux_clk_driver_init", "bcm2835_mbox_driver_init",
             "rpi_firmware_driver_init", "bcm2835_dma_driver_init",
             "bcm2835aux_serial_driver_init", "pinctrl_init")


def _put(host: FakeHost, host_path: str, text: str) -> None:
    path = host.path(host_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(host: FakeHost, host_path: str, target: str) -> None:
    path = host.path(host_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(host.path(target), path.parent), path)


def dress_raspi3b(host: FakeHost) -> None:
    """The console on the PL011, mmcblk0 behind the SD host mounted, the kernel's lists."""
    pl011 = host.host_paths[CONSOLE]
    _link(host, "/sys/class/tty/ttyAMA0", f"{pl011}/tty/ttyAMA0")
    _link(host, f"{pl011}/tty/ttyAMA0/device", pl011)
    aux = host.host_paths[MINI_UART]
    _link(host, "/sys/class/tty/ttyS0", f"{aux}/tty/ttyS0")
    _link(host, f"{aux}/tty/ttyS0/device", aux)
    _put(host, "/proc/cmdline", "console=ttyAMA0 rdinit=/init\n")
    _put(host, "/sys/class/tty/console/active", "ttyAMA0\n")
    _put(host, "/proc/consoles", "ttyAMA0              -W- (EC p a)    204:64\n")
    disk = f"{host.host_paths[SD_HOST]}/mmc_host/mmc0/mmc0:0001/block/mmcblk0"
    host.path(disk).mkdir(parents=True)
    _link(host, "/sys/class/block/mmcblk0", disk)
    _link(host, "/sys/dev/block/179:0", disk)
    _put(host, "/proc/self/mountinfo",
         "1 1 0:2 / / rw - rootfs rootfs rw\n"
         f"31 1 179:0 / {SD_MOUNT} rw,relatime shared:9 - minix /dev/mmcblk0 rw\n")
    _put(host, f"/lib/modules/{RASPI3B_RELEASE}/modules.builtin",
         "".join(line + "\n" for line in _BUILTIN))
    _put(host, "/proc/kallsyms", "".join(
        f"ffffffc080{index:06x} t {symbol}\n" for index, symbol in enumerate(_KALLSYMS)))


def build_raspi3b(root: Path, dtb: Path | None = None) -> FakeKernel:
    """The fake raspi3b host below ``root`` (from ``dtb``, default the corpus's) and its
    fake kernel."""
    host = build_fake_host(root, dtb or board_dtb(RASPI3B_DTB), drivers=RASPI3B_DRIVERS,
                           vfio_loaded=True, noiommu=True, suppress_bind_attrs=_SUPPRESSED,
                           modules=_MODULES)
    dress_raspi3b(host)
    return FakeKernel(host, drivers=RASPI3B_DRIVERS, reset_required=False,
                      release=RASPI3B_RELEASE)
