"""The machine table, the raspi3b SD card image, and which guest modules each machine runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from board.errors import BoardError
from board.machines import MACHINES, get_machine
from board.sdcard import IMAGE_BYTES, KNOWN_FILE, KNOWN_TEXT, is_power_of_two, write_sd_image
from tests.board.conftest import (
    REPO,
    GuestCase,
    case_module,
    guest_command,
    guest_modules,
    module_machines,
)


def test_machines_and_their_errors() -> None:
    assert list(MACHINES) == ["virt", "raspi3b"]
    raspi = get_machine("raspi3b")
    assert (raspi.shares_9p, raspi.powers_off, raspi.sd_card) == (False, False, True)
    assert raspi.dtb == "broadcom/bcm2837-rpi-3-b.dtb"
    assert not {"9p", "virtio_mmio"} & set(raspi.stock_modules)
    assert {"bcm2835", "ext4"} <= set(raspi.stock_modules)
    assert not {"bcm2835", "ext4"} & set(get_machine("virt").stock_modules)
    with pytest.raises(BoardError, match="choose one of virt, raspi3b"):
        get_machine("raspi4")


def test_sd_image_is_a_power_of_two_ext2_holding_the_known_file(tmp_path: Path) -> None:
    if shutil.which("debugfs") is None:
        pytest.fail("this test reads the image back with debugfs (Debian package e2fsprogs)")
    assert is_power_of_two(IMAGE_BYTES) and not is_power_of_two(IMAGE_BYTES + 512)
    image = tmp_path / "sd.img"
    write_sd_image(image)
    assert image.stat().st_size == IMAGE_BYTES
    read = subprocess.run(["debugfs", "-R", f"cat /{KNOWN_FILE}", str(image)],
                          capture_output=True, text=True, check=True, timeout=60)
    assert read.stdout == KNOWN_TEXT
    with pytest.raises(ValueError, match="not a power of two"):
        write_sd_image(tmp_path / "odd.img", 3 << 20)


def write_module(root: Path, name: str, header: str) -> None:
    path = root / "tests/guest" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"import pytest\n{header}\n\ndef test_x():\n    pass\n")


def test_each_machine_runs_the_modules_its_mark_names(tmp_path: Path) -> None:
    write_module(tmp_path, "test_any.py", "")
    write_module(tmp_path, "test_virt.py", 'pytestmark = pytest.mark.machine("virt")')
    write_module(tmp_path, "test_pi.py", 'pytestmark = [pytest.mark.foo, '
                                         'pytest.mark.machine("raspi3b")]')
    write_module(tmp_path, "test_both.py", 'pytestmark = pytest.mark.machine("virt", "raspi3b")')
    (tmp_path / "tests/contract").mkdir()
    (tmp_path / "tests/contract/test_c.py").write_text("")
    assert list(guest_modules("virt", tmp_path)) == [
        "tests.guest.test_any", "tests.guest.test_both", "tests.guest.test_virt",
        "tests.contract.test_c"]
    assert list(guest_modules("raspi3b", tmp_path)) == [
        "tests.guest.test_any", "tests.guest.test_both", "tests.guest.test_pi"]
    assert guest_command("raspi3b", tmp_path)[-3:] == [
        "tests/guest/test_any.py", "tests/guest/test_both.py", "tests/guest/test_pi.py"]


def test_a_mark_naming_no_known_machine_is_an_error(tmp_path: Path) -> None:
    write_module(tmp_path, "test_bad.py", 'pytestmark = pytest.mark.machine("raspi5")')
    with pytest.raises(ValueError, match="test_bad.py.*raspi5"):
        guest_modules("virt", tmp_path)


def test_the_repository_guest_modules_per_machine() -> None:
    """Every guest module runs somewhere; raspi3b runs its board test and no virt device test."""
    virt, raspi = guest_modules("virt"), guest_modules("raspi3b")
    every = {".".join(p.relative_to(REPO).with_suffix("").parts)
             for p in (REPO / "tests/guest").glob("test_*.py")}
    assert every <= set(virt) | set(raspi)
    assert "tests.guest.test_raspi_board" in raspi and "tests.guest.test_raspi_board" not in virt
    assert {"tests.guest.test_board_kernel", "tests.guest.test_vfio_real",
            "tests.contract.test_binding_contract"} <= set(virt) - set(raspi)
    assert module_machines(REPO / "tests/guest/test_raspi_board.py") == ("raspi3b",)


def test_cases_are_matched_to_their_module() -> None:
    expected = ("tests.guest.test_a", "tests.contract.test_c")
    assert case_module(GuestCase("test_a.t", "passed", module="tests.guest.test_a"),
                       expected) == "tests.guest.test_a"
    assert case_module(GuestCase("x", "passed", module="tests.contract.test_c.TestK"),
                       expected) == "tests.contract.test_c"
    assert case_module(GuestCase("x", "passed", module="tests.guest.test_ab"), expected) is None


def test_cli_takes_a_machine_for_build_and_run() -> None:
    from board.__main__ import _parser

    args = _parser().parse_args(["run", "--machine", "raspi3b", "--", "true"])
    assert (args.machine, args.smp, args.command) == ("raspi3b", None, ["--", "true"])
    assert _parser().parse_args(["build"]).machine == "virt"
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--machine", "raspi4", "--", "true"])
