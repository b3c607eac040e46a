"""The binding journal: atomic replacement, validation, clear errors, the lock."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from platform_hostdev.binding.journal import (
    Journal,
    JournalBusyError,
    JournalError,
    JournalRecord,
)
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import StateUnwritableError, atomic_write
from pytest_mock import MockerFixture


def _record(**changes: object) -> JournalRecord:
    base = JournalRecord(device="9030000.pl061", bus="amba", op="detach", step="planned",
                         vfio_driver="vfio-amba", original_driver="pl061_gpio",
                         original_override=None, pid=42, started=1.5)
    return JournalRecord(**{**base.to_json(), **changes})


def test_round_trip_under_root(tmp_path: Path) -> None:
    journal = Journal(HostFs(tmp_path))
    record = _record()
    journal.write(record)
    assert journal.file("9030000.pl061") == tmp_path / "run/platform-hostdev/9030000.pl061.json"
    assert journal.read("9030000.pl061") == record
    assert journal.devices() == ["9030000.pl061"]
    journal.write(record.at("unbound"))
    assert journal.read("9030000.pl061") == record.at("unbound")
    journal.remove("9030000.pl061")
    assert journal.read("9030000.pl061") is None
    assert journal.devices() == []
    journal.remove("9030000.pl061")  # idempotent


def test_write_is_temp_then_rename_without_fsync(tmp_path: Path, mocker: MockerFixture) -> None:
    journal = Journal(HostFs(tmp_path))
    journal.write(_record())
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    mocker.patch("platform_hostdev.host.statefiles.os.fsync", side_effect=fsync)

    def replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append("replace")
        # the old record is intact until the rename, the new one complete before it
        assert json.loads(Path(dst).read_text())["step"] == "planned"
        assert json.loads(Path(src).read_text())["step"] == "unbound"
        real_replace(src, dst)

    mocker.patch("platform_hostdev.host.statefiles.os.replace", side_effect=replace)
    journal.write(_record(step="unbound"))
    assert calls == ["replace"]  # /run is a tmpfs: an fsync buys nothing there
    assert os.listdir(journal.path) == ["9030000.pl061.json"]  # no temp file left


def test_durable_write_fsyncs_file_then_directory(tmp_path: Path, mocker: MockerFixture) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    mocker.patch("platform_hostdev.host.statefiles.os.fsync",
                 side_effect=lambda fd: (calls.append("fsync"), real_fsync(fd)))
    mocker.patch("platform_hostdev.host.statefiles.os.replace",
                 side_effect=lambda a, b: (calls.append("replace"), real_replace(a, b)))
    target = tmp_path / "guest.dtb"
    atomic_write(target, b"new", 0o644)  # durable by default: the guest DT store's files
    assert calls == ["fsync", "replace", "fsync"]  # file, rename, directory
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o644
    calls.clear()
    atomic_write(target, b"newer", durable=False)
    assert calls == ["replace"] and target.read_bytes() == b"newer"


def test_atomic_write_never_follows_or_reuses_a_planted_temp_name(tmp_path: Path) -> None:
    """The temp name is predictable (pid): a symbolic link planted there must not make the
    write go into its target (or create one), a file left there must not be reused."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"the victim")
    victim.chmod(0o644)
    target = tmp_path / "record.json"
    temp = tmp_path / f".record.json.{os.getpid()}.tmp"
    plants = {
        "symlink": lambda: temp.symlink_to(victim),
        "dangling": lambda: temp.symlink_to(tmp_path / "created-through-the-link"),
        "file": lambda: (temp.write_bytes(b"left by a crashed process of the same pid"),
                         temp.chmod(0o666)),
    }
    for n, plant in enumerate(plants.values()):
        plant()
        atomic_write(target, b"new %d" % n, 0o600, durable=False)
        assert victim.read_bytes() == b"the victim" and victim.stat().st_mode & 0o777 == 0o644
        assert target.read_bytes() == b"new %d" % n and not target.is_symlink()
        assert target.stat().st_mode & 0o777 == 0o600
        assert sorted(os.listdir(tmp_path)) == ["record.json", "victim"]


def test_crash_before_rename_keeps_old_record(tmp_path: Path, mocker: MockerFixture) -> None:
    journal = Journal(HostFs(tmp_path))
    journal.write(_record())
    mocker.patch("platform_hostdev.host.statefiles.os.replace", side_effect=OSError(28, "No space"))
    with pytest.raises(StateUnwritableError, match="No space .ENOSPC.; the device state was not"):
        journal.write(_record(step="unbound"))
    assert journal.read("9030000.pl061") == _record()
    assert journal.devices() == ["9030000.pl061"]  # the temp file is not a record


@pytest.mark.parametrize("content, problem", [
    ("{not json", "Expecting property name"),
    ("[]", "not a JSON object"),
    (json.dumps({"device": "9030000.pl061"}), "'bus' missing"),
    (json.dumps({**_record().to_json(), "step": "exploded"}), "not a detach step"),
    (json.dumps({**_record().to_json(), "op": "move"}), "not detach or reattach"),
    (json.dumps({**_record().to_json(), "extra": 1}), "unknown keys"),
    (json.dumps({**_record().to_json(), "format": 9}), "format 9"),
    (json.dumps({**_record().to_json(), "original_driver": 3}), "original_driver"),
])
def test_corrupt_journal_is_a_clear_error(tmp_path: Path, content: str, problem: str) -> None:
    journal = Journal(HostFs(tmp_path))
    journal.path.mkdir(parents=True)
    journal.file("9030000.pl061").write_text(content)
    with pytest.raises(JournalError) as caught:
        journal.read("9030000.pl061")
    error = caught.value
    assert "/run/platform-hostdev/9030000.pl061.json is corrupt" in error.what
    assert problem in error.what
    [copy] = [n for n in os.listdir(journal.path) if n.startswith(".9030000.pl061.json.damaged-")]
    assert f"set aside as /run/platform-hostdev/{copy}" in error.what
    assert f"delete /run/platform-hostdev/{copy}" in error.fix
    assert not journal.file("9030000.pl061").exists()
    assert (journal.path / copy).read_text() == content  # kept as found, beside


def test_record_of_another_device_is_refused(tmp_path: Path) -> None:
    journal = Journal(HostFs(tmp_path))
    journal.write(_record())
    os.rename(journal.file("9030000.pl061"), journal.file("9010000.pl031"))
    with pytest.raises(JournalError, match="describes device '9030000.pl061'"):
        journal.read("9010000.pl031")


def test_lock_busy_gives_up_after_timeout(tmp_path: Path) -> None:
    ticks = iter(range(100))
    holder = Journal(HostFs(tmp_path))
    waiter = Journal(HostFs(tmp_path), clock=lambda: float(next(ticks)), sleep=lambda _: None)
    with holder.locked():
        with pytest.raises(JournalBusyError, match="holds /run/platform-hostdev/.lock"):
            with waiter.locked(timeout=3):
                pass
    with waiter.locked(timeout=3):  # released by the holder
        pass
