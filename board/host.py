"""The host programs the board needs, as one table: program -> Debian package."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from board.errors import MissingToolError

__all__ = ["BUILD_TOOLS", "FETCH_TOOLS", "HOST_TOOLS", "RUN_TOOLS", "SD_TOOLS", "check_host_tools"]

FETCH_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "/usr/share/keyrings/debian-archive-keyring.gpg": "debian-archive-keyring",
}
BUILD_TOOLS = {
    "make": "make",
    "aarch64-linux-gnu-gcc-12": "gcc-12-aarch64-linux-gnu",
    "aarch64-linux-gnu-ld": "binutils-aarch64-linux-gnu",
    "aarch64-linux-gnu-strip": "binutils-aarch64-linux-gnu",
}
RUN_TOOLS = {"qemu-system-aarch64": "qemu-system-arm"}
SD_TOOLS = {"mke2fs": "e2fsprogs"}
"""What the raspi3b board's SD card image needs (board/sdcard.py)."""
HOST_TOOLS = {**FETCH_TOOLS, **BUILD_TOOLS, **RUN_TOOLS, **SD_TOOLS}


def check_host_tools(tools: Mapping[str, str] = HOST_TOOLS) -> None:
    """Raise MissingToolError naming every missing program (or file) and its package."""
    missing = {
        tool: package for tool, package in tools.items()
        if not (Path(tool).is_file() if tool.startswith("/") else shutil.which(tool))
    }
    if missing:
        raise MissingToolError(missing)
