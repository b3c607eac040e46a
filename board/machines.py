"""The machines the board boots: QEMU's ``virt`` (the default) and ``raspi3b`` (a real SoC).

Both boot the same Debian arm64 kernel and the same cached initramfs; /init
(board/guest_init.sh) reads ``board.machine=<name>`` from the kernel command
line and loads that machine's modules (``/etc/board/modules.<name>.load``).
What differs, per machine:

- ``virt``: generic virtio-mmio/PL0xx devices, QEMU's own DT. The repository,
  the per-run command and the results travel over 9p (virtio-pci), and the
  guest powers the machine off at the end.
- ``raspi3b``: the BCM2837 of a Raspberry Pi 3 model B, booted with Debian's
  own, unmodified ``broadcom/bcm2837-rpi-3-b.dtb``. QEMU fixes 4 CPUs and
  1 GiB (hw/arm/raspi.c: ``mc->min_cpus = mc->max_cpus``, and
  ``raspi_machine_init`` refuses any other RAM size). It has no PCI, no virtio
  and no 9p, so the repository rides in the initramfs and the results come
  back over the console (see board/transport.py); it cannot power off
  (``Power off not available: System halted instead``), so the host stops
  QEMU on the end marker. An SD card (board/sdcard.py) is attached to the
  sdhost controller and mounted read-write at /mnt/sd.
"""

from __future__ import annotations

from dataclasses import dataclass

from board.errors import BoardError

__all__ = ["MACHINES", "RASPI3B", "VIRT", "Machine", "get_machine"]


@dataclass(frozen=True)
class Machine:
    """One QEMU machine the board can boot."""

    name: str
    qemu_args: tuple[str, ...]
    """Arguments after the program name, up to (not including) -smp/-m/-kernel."""
    default_smp: int
    fixed_size: bool
    """True when QEMU accepts no other CPU count or RAM size (then no -smp, no -m)."""
    memory_mb: int
    stock_modules: tuple[str, ...]
    """Stock modules /init loads before the vfio modules (dependencies first)."""
    dtb: str | None = None
    """The DTB to boot, relative to usr/lib/linux-image-<release>/; None: QEMU's own."""
    shares_9p: bool = True
    """True: repo/control/results over 9p; False: repo in the initramfs, results on the console."""
    powers_off: bool = True
    """False when ``poweroff -f`` halts instead: the host ends QEMU on the exit marker."""
    sd_card: bool = False
    """True: an SD card image (board/sdcard.py) is attached and mounted at /mnt/sd."""
    autoload_modules: tuple[str, ...] = ()
    """Stock modules in the initramfs that /init does not load: udev's coldplug loads them
    (their MODALIAS, 80-drivers.rules), once a test has started udev."""


VIRT = Machine(
    name="virt",
    qemu_args=("-M", "virt", "-cpu", "max"),
    default_smp=1,
    fixed_size=False,
    memory_mb=1024,
    stock_modules=("netfs", "9pnet", "9pnet_virtio", "9p", "virtio_mmio"),
    autoload_modules=("qemu_fw_cfg",),
)
"""QEMU's virt machine: virtio-pci, virtio_mmio, 9p are what /init loads (virtio-pci,
virtio and virtio_ring are built in). qemu_fw_cfg (CONFIG_FW_CFG_SYSFS=m, the driver of
the platform device 9020000.fw-cfg) is left to udev: the boot-time reservation test."""

RASPI3B = Machine(
    name="raspi3b",
    qemu_args=("-M", "raspi3b", "-accel", "tcg,thread=single"),
    default_smp=4,
    fixed_size=True,
    memory_mb=1024,
    stock_modules=("bcm2835", "crc32c_generic", "ext4"),
    dtb="broadcom/bcm2837-rpi-3-b.dtb",
    shares_9p=False,
    powers_off=False,
    sd_card=True,
)
"""The Raspberry Pi 3 model B. Modules: drivers/mmc/host/bcm2835.ko (sdhost; mmc_core
and mmc_block are built in) and ext4 (it mounts the SD card's ext2 filesystem,
CONFIG_EXT4_USE_FOR_EXT2; jbd2, mbcache, crc16 come through modules.dep order).
crc32c_generic is only a soft dependency of ext4 (``softdep=pre: crypto-crc32c``), which
load_order does not follow, yet ext4_fill_super fails without it ("EXT4-fs
(mmcblk0): Cannot load crc32c driver.", mount: ENOENT), even for ext2.

``-accel tcg,thread=single``: one host thread round-robins the 4 vCPUs. On this
2-core host under load, multi-threaded TCG (4 vCPU threads) reached /init in
10-20 s, single-threaded in 8.5-8.7 s."""

MACHINES = {machine.name: machine for machine in (VIRT, RASPI3B)}


def get_machine(name: str) -> Machine:
    """The machine called ``name``; BoardError lists the known ones otherwise."""
    try:
        return MACHINES[name]
    except KeyError:
        raise BoardError(f"unknown board machine {name!r}: choose one of "
                         f"{', '.join(MACHINES)} (e.g. --machine raspi3b)") from None
