"""board.cpio: the newc archive the kernel unpacks (read back with a minimal parser)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from board.cpio import CpioWriter


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)); checks magic and 4-byte alignment."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert pos % 4 == 0
        header = data[pos:pos + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries[name] = (mode, body, (fields[9], fields[10]))


def test_entries_round_trip() -> None:
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.add_dir("dev")
    archive.add_char_device("dev/console", 5, 1)
    archive.add_file("init", b"#!/bin/sh\n", 0o755)
    archive.add_symlink("usr/bin/python3", "python3.11")
    archive.close()
    entries = read_newc(buffer.getvalue())
    assert stat.S_ISDIR(entries["dev"][0])
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)
    assert entries["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n", (0, 0))
    assert stat.S_ISLNK(entries["usr/bin/python3"][0])
    assert entries["usr/bin/python3"][1] == b"python3.11"


def test_duplicate_entry_is_refused() -> None:
    archive = CpioWriter(io.BytesIO())
    archive.add_dir("etc")
    with pytest.raises(ValueError, match="duplicate"):
        archive.add_dir("/etc/")


def test_add_tree_puts_parents_first_and_keeps_links(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/.hidden").write_bytes(b"x" * 5)
    (tmp_path / "lib").symlink_to("usr/lib")
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.add_tree(tmp_path)
    archive.close()
    names = list(read_newc(buffer.getvalue()))
    assert names.index("usr") < names.index("usr/lib") < names.index("usr/lib/.hidden")
    entries = read_newc(buffer.getvalue())
    assert stat.S_ISLNK(entries["lib"][0]) and entries["lib"][1] == b"usr/lib"
    assert entries["usr/lib/.hidden"][1] == b"xxxxx"
