"""board.kmod and board.initramfs helpers: module order, parameters, .modinfo parsing."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from board.errors import BuildError
from board.initramfs import modules_load
from board.kmod import load_order, modinfo_depends, module_name


def fake_ko(name: str, depends: str) -> bytes:
    return b"\x7fELF junk\0license=GPL\0depends=" + depends.encode() + b"\0name=" + \
        name.encode() + b"\0vermagic=6.12\0"


def test_modinfo_depends() -> None:
    assert modinfo_depends(fake_ko("9p", "netfs,9pnet")) == ["netfs", "9pnet"]
    assert modinfo_depends(fake_ko("netfs", "")) == []
    assert modinfo_depends(b"no modinfo at all") == []


def test_module_names() -> None:
    assert module_name("kernel/fs/9p/9p.ko.xz") == "9p"
    assert module_name("updates/board/vfio-platform-base.ko") == "vfio_platform_base"


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    stock = {
        "kernel/fs/netfs/netfs.ko": "",
        "kernel/net/9p/9pnet.ko": "",
        "kernel/fs/9p/9p.ko": "netfs,9pnet",
        "kernel/drivers/vfio/vfio.ko": "",
    }
    for rel, deps in stock.items():
        path = tmp_path / (rel + ".xz")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(fake_ko(module_name(rel), deps)))
    (tmp_path / "modules.order").write_text("\n".join(stock) + "\n")
    return tmp_path


def test_load_order_puts_dependencies_first_and_decompresses(modules_dir: Path,
                                                             tmp_path: Path) -> None:
    order = load_order(modules_dir, ["9p"])
    assert [rel for rel, _ in order] == [
        "kernel/fs/netfs/netfs.ko", "kernel/net/9p/9pnet.ko", "kernel/fs/9p/9p.ko"]
    assert order[-1][1].startswith(b"\x7fELF")


def test_built_modules_replace_stock_ones(modules_dir: Path, tmp_path: Path) -> None:
    built = tmp_path / "built"
    built.mkdir()
    (built / "vfio.ko").write_bytes(fake_ko("vfio", ""))
    (built / "vfio-platform.ko").write_bytes(fake_ko("vfio_platform", "vfio"))
    order = load_order(modules_dir, ["vfio_platform"], [built / "vfio.ko",
                                                        built / "vfio-platform.ko"])
    assert [rel for rel, _ in order] == ["updates/board/vfio.ko", "updates/board/vfio-platform.ko"]
    assert modules_load(order) == ("updates/board/vfio.ko enable_unsafe_noiommu_mode=1\n"
                                   "updates/board/vfio-platform.ko reset_required=0\n")


def test_missing_module_names_the_chain(modules_dir: Path) -> None:
    (modules_dir / "kernel/fs/9p/9p.ko.xz").write_bytes(lzma.compress(fake_ko("9p", "fscache")))
    with pytest.raises(BuildError, match="fscache.*9p"):
        load_order(modules_dir, ["9p"])
