"""The machine table, the raspi3b SD card image, and which guest modules each machine runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from board.errors import BoardError
from board.machines import MACHINES, get_machine
from board.sdcard import IMAGE_BYTES, KNOWN_FILE, KNOWN_TEXT, is_power_of_two, write_sd_image
from tests.board.conftest import GuestCase, case_module, guest_command, guest_modules
from tests.support import machines as support_machines


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


def write_module(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("def test_x():\n    pass\n")


def test_each_machine_runs_the_modules_its_name_assigns(tmp_path: Path) -> None:
    for rel in ("tests/guest/test_any.py", "tests/guest/test_pi_raspi3b.py",
                "tests/guest/helper_raspi3b.py", "tests/contract/test_c.py",
                "tests/contract/test_c_raspi3b.py", "tests/other/test_x_raspi3b.py"):
        write_module(tmp_path, rel)
    assert list(guest_modules("virt", tmp_path)) == [
        "tests.guest.test_any", "tests.contract.test_c"]
    assert list(guest_modules("raspi3b", tmp_path)) == [
        "tests.guest.test_pi_raspi3b", "tests.contract.test_c_raspi3b"]
    assert guest_command("raspi3b", tmp_path)[-2:] == [
        "tests/guest/test_pi_raspi3b.py", "tests/contract/test_c_raspi3b.py"]
    with pytest.raises(ValueError, match="no guest test module names the virt machine"):
        guest_command("virt", tmp_path / "empty")


def test_the_board_and_the_test_suite_know_the_same_machines() -> None:
    assert ("virt", *support_machines.MACHINES) == tuple(MACHINES)


def test_the_repository_guest_modules_per_machine() -> None:
    """raspi3b runs its board test and no virt device test; virt runs no raspi3b module."""
    virt, raspi = guest_modules("virt"), guest_modules("raspi3b")
    assert not set(virt) & set(raspi)
    assert {"tests.guest.test_board_raspi3b", "tests.guest.test_host_safety_raspi3b",
            "tests.contract.test_devlinks_raspi3b"} <= set(raspi)
    assert {"tests.guest.test_board_kernel", "tests.guest.test_vfio_real",
            "tests.contract.test_binding_contract"} <= set(virt)


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
