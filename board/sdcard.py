"""The raspi3b board's SD card: a small ext2 image holding one known file.

Built on the host without mounting anything (``mke2fs -d`` populates the new
filesystem from a directory), cached as ``sdcard-<key>.img`` beside the
initramfs. QEMU attaches it to the BCM2835 SD bus (``-drive if=sd``) with
``snapshot=on``, so a run's writes go to a temporary overlay and the cached
image never changes. The guest's /init loads drivers/mmc/host/bcm2835.ko
(sdhost) and ext4.ko (which also mounts ext2: CONFIG_EXT4_USE_FOR_EXT2) and
mounts /dev/mmcblk0 read-write at :data:`MOUNT_POINT`.

QEMU refuses an SD image whose size is not a power of two (hw/sd/sd.c,
``sd_realize``: "Invalid SD card size ... SD card size has to be a power of
2"), hence :data:`IMAGE_BYTES`.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from board.errors import BuildError
from board.host import SD_TOOLS, check_host_tools

__all__ = ["IMAGE_BYTES", "KNOWN_FILE", "KNOWN_TEXT", "MOUNT_POINT", "write_sd_image"]

IMAGE_BYTES = 16 << 20
"""16 MiB: a power of two, as QEMU requires of an SD card."""
MOUNT_POINT = "/mnt/sd"
KNOWN_FILE = "board-sd.txt"
"""A file at the filesystem's root, read back by tests/guest/test_board_raspi3b.py."""
KNOWN_TEXT = "platform-hostdev raspi3b SD card\n"
_LABEL = "boardsd"
_MKE2FS_TIMEOUT = 120.0


def is_power_of_two(size: int) -> bool:
    """True for 1, 2, 4, 8, ... (QEMU's rule for SD card images)."""
    return size > 0 and size & (size - 1) == 0


def mke2fs_argv(image: Path, source: Path, size: int = IMAGE_BYTES) -> list[str]:
    """The mke2fs command that writes an ext2 filesystem of ``size`` bytes from ``source``."""
    return ["mke2fs", "-q", "-F", "-t", "ext2", "-L", _LABEL, "-E", "root_owner=0:0",
            "-d", str(source), str(image), f"{size // 1024}k"]


def write_sd_image(dest: Path, size: int = IMAGE_BYTES) -> None:
    """Write the SD card image to ``dest``: ext2, ``size`` bytes, holding :data:`KNOWN_FILE`."""
    if not is_power_of_two(size):
        raise ValueError(f"SD card size {size} is not a power of two (QEMU refuses it)")
    check_host_tools(SD_TOOLS)
    with tempfile.TemporaryDirectory(prefix="board-sd.") as tmp:
        source = Path(tmp)
        (source / KNOWN_FILE).write_text(KNOWN_TEXT)
        with dest.open("wb") as image:
            image.truncate(size)
        argv = mke2fs_argv(dest, source, size)
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True,
                           timeout=_MKE2FS_TIMEOUT)
        except subprocess.CalledProcessError as exc:
            raise BuildError(f"writing the SD card image failed: {' '.join(argv)}\n"
                             f"{(exc.stdout + exc.stderr).strip()}") from exc
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"mke2fs took over {_MKE2FS_TIMEOUT:.0f} s: {' '.join(argv)}") \
                from exc
    if dest.stat().st_size != size:
        raise BuildError(f"mke2fs left {dest} at {dest.stat().st_size} bytes, not {size}: "
                         "QEMU needs a power-of-two SD image")
