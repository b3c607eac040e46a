"""fdt: the DTB parser and the sysfs-tree reader, on synthetic blobs."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from platform_hostdev.dt.fdt import FDT_MAGIC, parse_dtb, read_dtb, read_sysfs_tree
from platform_hostdev.errors import DeviceTreeError

from tests.support.fdtwriter import cells, encode, node, strings, to_dtb

BOARD = node("", {"#address-cells": 1, "#size-cells": 1, "compatible": "a,b"}, [
    node("soc", {"ranges": True}, [node("uart@1000", {"reg": [0x1000, 0x100]})]),
])


def test_roundtrip_keeps_names_properties_and_order() -> None:
    root = parse_dtb(to_dtb(BOARD))
    assert root.name == ""
    assert root.properties == {"#address-cells": cells(1), "#size-cells": cells(1),
                               "compatible": b"a,b\0"}
    (soc,) = root.children
    assert soc.properties == {"ranges": b""}
    assert [c.name for c in soc.children] == ["uart@1000"]
    assert soc.children[0].properties["reg"] == cells(0x1000, 0x100)


def test_encode_helpers() -> None:
    assert encode(True) == b""
    assert encode(7) == b"\0\0\0\7"
    assert encode("x") == b"x\0"
    assert encode(["a", "bc"]) == strings("a", "bc") == b"a\0bc\0"
    assert encode([1, 2]) == cells(1, 2)


@pytest.mark.parametrize("cut", [0, 8, 39, 60, -1, -9])
def test_truncated_blob_is_a_located_error(cut: int) -> None:
    blob = to_dtb(BOARD)
    with pytest.raises(DeviceTreeError) as info:
        parse_dtb(blob[:cut], "t.dtb")
    assert info.value.what.startswith("node ")


def test_bad_magic_says_it_is_not_a_dtb() -> None:
    blob = bytearray(to_dtb(BOARD))
    struct.pack_into(">I", blob, 0, 0x12345678)
    with pytest.raises(DeviceTreeError, match="bad magic 0x12345678"):
        parse_dtb(bytes(blob))
    assert FDT_MAGIC == 0xD00DFEED


def test_non_ascii_node_name_is_refused() -> None:
    blob = to_dtb(node("", {}, [node("cafX", {})])).replace(b"cafX", b"caf\xe9")
    with pytest.raises(DeviceTreeError, match="not ASCII"):
        parse_dtb(blob)


def test_read_dtb_of_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DeviceTreeError) as info:
        read_dtb(tmp_path / "nope.dtb")
    assert "nope.dtb" in info.value.what and "--dtb" in info.value.fix


def test_sysfs_reader_reads_raw_property_files(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "soc" / "uart@1000").mkdir(parents=True)
    (base / "compatible").write_bytes(b"a,b\0")
    (base / "soc" / "uart@1000" / "reg").write_bytes(cells(0x1000, 0x100))
    root = read_sysfs_tree(base)
    assert root.properties == {"compatible": b"a,b\0"}
    assert root.children[0].children[0].properties["reg"] == cells(0x1000, 0x100)


def test_sysfs_reader_refuses_a_symlink(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (tmp_path / "secret").write_bytes(b"secret\0")
    os.symlink(tmp_path / "secret", base / "compatible")
    with pytest.raises(DeviceTreeError) as info:
        read_sysfs_tree(base)
    assert info.value.prop == "compatible" and "symlink" in info.value.what


def test_sysfs_reader_without_a_tree_says_use_dtb(tmp_path: Path) -> None:
    with pytest.raises(DeviceTreeError) as info:
        read_sysfs_tree(tmp_path / "missing")
    assert "--dtb" in info.value.fix


def test_a_dtb_file_is_read_no_further_than_max_fdt_size(tmp_path: Path) -> None:
    """The header check needs only the first MAX_FDT_SIZE bytes: /dev/zero or a huge file
    is refused without reading it to its end."""
    from platform_hostdev.dt.fdt import read_blob
    from platform_hostdev.dt.limits import MAX_FDT_SIZE
    from platform_hostdev.dt.tree import DeviceTree

    assert len(read_blob("/dev/zero")) == MAX_FDT_SIZE
    with pytest.raises(DeviceTreeError, match="bad magic 0x00000000"):
        DeviceTree.from_dtb("/dev/zero")
    padded = tmp_path / "padded.dtb"
    padded.write_bytes(to_dtb(BOARD) + b"\0" * (3 * MAX_FDT_SIZE))  # a DTB, then anything
    assert [c.name for c in read_dtb(padded).children] == ["soc"]
