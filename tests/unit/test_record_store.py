"""The binding journal and the ownership records are one RecordStore: the same rules for both.

Both keep one JSON file per device under /run, written atomically, listed by
device, under one lock. A record must name the device of its file: the
ownership records used not to check it, so an owner record B.json saying
device C was read as C's, C's file was "removed" at release, and B.json
stayed for ever (and release acted on C).
"""
from __future__ import annotations

import errno
import fcntl
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from platform_hostdev.binding.journal import Journal, JournalRecord
from platform_hostdev.binding.ownership import OwnerRecord, Owners
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import DamagedRecord, RecordStore, StateUnwritableError


def _journal(fs: HostFs, **kw: Any) -> Journal:
    return Journal(fs, **kw)


def _owners(fs: HostFs, **kw: Any) -> Owners:
    return Owners(fs, **kw)


def _journal_record(device: str) -> JournalRecord:
    return JournalRecord(device, "amba", "detach", "planned", "vfio-amba", "pl061_gpio", None)


def _owner_record(device: str) -> OwnerRecord:
    return OwnerRecord(device, "platform", "vm1", "u-1", True, True, "prepared", node_owner=[],
                       cdev_owner=[], iommu_owner=[])  # JSON gives sequences back as lists


STORES: list[tuple[Callable[[HostFs], RecordStore[Any]], Callable[[str], Any], str]] = [
    (_journal, _journal_record, "/run/platform-hostdev"),
    (_owners, _owner_record, "/run/platform-hostdev/owners"),
]


@pytest.mark.parametrize("make, record, directory", STORES)
def test_round_trip_listing_and_removal(tmp_path: Path, make: Any, record: Any,
                                        directory: str) -> None:
    store = make(HostFs(tmp_path))
    store.write(record("b.dev"))
    store.write(record("a.dev"))
    assert store.devices() == ["a.dev", "b.dev"]
    assert store.all() == [record("a.dev"), record("b.dev")]
    assert store.read("a.dev") == record("a.dev")
    assert store.file("a.dev") == tmp_path / directory.lstrip("/") / "a.dev.json"
    assert sorted(os.listdir(store.path)) == ["a.dev.json", "b.dev.json"]  # no temp file
    store.remove("a.dev")
    store.remove("a.dev")  # idempotent
    assert store.devices() == ["b.dev"] and store.read("a.dev") is None


def _aside(store: RecordStore[Any], device: str) -> list[str]:
    """The names of the set-aside copies of a device's record."""
    return sorted(n for n in os.listdir(store.path) if n.startswith(f".{device}.json.damaged-"))


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_record_of_another_device_is_set_aside_and_refused(tmp_path: Path, make: Any,
                                                            record: Any,
                                                            directory: str) -> None:
    """B.json saying device C: B is refused and the file set aside (it used to stay for
    ever); C, which has no record of its own, is refused too (the copy is its record)."""
    store = make(HostFs(tmp_path))
    store.write(record("c.dev"))
    store.write(record("d.dev"))
    os.rename(store.file("c.dev"), store.file("b.dev"))
    assert store.all() == [record("d.dev")]  # the others go on
    [copy] = _aside(store, "b.dev")
    assert not store.file("b.dev").exists()
    for device in ("b.dev", "c.dev"):
        with pytest.raises(HostdevError) as info:
            store.read(device)
        assert info.value.code == "journal-corrupt"
        assert f"{directory}/b.dev.json describes device 'c.dev'" in info.value.what
        assert f"set aside as {directory}/{copy}" in info.value.what
        assert f"{device} is refused" in info.value.what
        assert (f"move {directory}/{copy} back to {directory}/c.dev.json" in info.value.fix
                and f"else delete {directory}/{copy}" in info.value.fix)
    [damage] = store.damaged()
    assert damage == DamagedRecord("b.dev", f"{directory}/{copy}",
                                   "describes device 'c.dev'", f"{directory}/b.dev.json",
                                   True, damage.fix, "c.dev")
    os.rename(store.path / copy, store.file("c.dev"))  # as the hint says
    assert store.read("c.dev") == record("c.dev") and store.read("b.dev") is None
    assert store.damaged() == []


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_corrupt_record_names_the_file_and_the_fix(tmp_path: Path, make: Any, record: Any,
                                                     directory: str) -> None:
    store = make(HostFs(tmp_path))
    store.path.mkdir(parents=True)
    store.file("a.dev").write_text(json.dumps({"device": "a.dev"}))
    with pytest.raises(HostdevError) as info:
        store.read("a.dev")
    [copy] = _aside(store, "a.dev")
    assert f"{directory}/a.dev.json is corrupt" in info.value.what
    assert "a.dev" in info.value.fix and f"{directory}/{copy}" in info.value.fix
    assert (store.path / copy).read_text() == json.dumps({"device": "a.dev"})  # kept as found


def _owner_json(**changes: Any) -> dict[str, Any]:
    return {**_owner_record("a.dev")._asdict(), **changes}


def _journal_json(**changes: Any) -> dict[str, Any]:
    return {**_journal_record("a.dev").to_json(), **changes}


BAD_OWNERS = [
    dict(since="yesterday"), dict(since=-1), dict(since=float("nan")), dict(since=True),
    dict(since=float("inf")), dict(pid="1"), dict(pid=-1), dict(pid=True), dict(pid=2**40),
    dict(pid=1.0), dict(qemu_pid="1"), dict(qemu_pid=False), dict(qemu_start=-5),
    dict(qemu_start=2**64), dict(node_owner=[0]), dict(node_owner=[0, 0, True]),
    dict(node_owner=[-1, 0, 0o600]), dict(node_owner=[0, 0, 0o17777]),
    dict(node_owner="0 0 384"), dict(cdev_owner=[0, 0]), dict(iommu_owner=[0, 0, 1.5]),
    dict(iommu_owner=[2**32 - 1, 0, 0]), dict(node="/etc/shadow"),
    dict(node="/dev/vfio/../../etc/shadow"), dict(node="/dev/vfio/7/"),
    dict(node="/dev/vfio/\u0663"), dict(cdev="/etc/shadow"), dict(cdev="/dev/vfio/7"),
    dict(cdev="/dev/vfio/devices/vfio0/../../../etc/shadow"), dict(group="../x"),
    dict(group=7), dict(group="noiommu-7"), dict(group=""), dict(managed=1),
    dict(detached_by_us="yes"), dict(managed=None), dict(bus="pci"), dict(bus=""),
    dict(state="running"), dict(state=None), dict(domain="a/b"), dict(domain="a\nb"),
    dict(domain=""), dict(domain=3), dict(uuid=""), dict(uuid=[]), dict(device=".x"),
    dict(device="a/b"), dict(device=""), dict(device="a\u0000b"), dict(extra=1),
]
BAD_JOURNALS = [
    dict(pid="1"), dict(pid=-1), dict(pid=True), dict(started="yesterday"),
    dict(started=float("-inf")), dict(started=False), dict(bus="pci"),
    dict(vfio_driver="vfio-platform"), dict(vfio_driver="pl061_gpio"),
    dict(original_driver="../x"), dict(original_driver=""), dict(original_override="a/b"),
    dict(original_override=3), dict(original_known=1), dict(format=True),
    dict(format="1"), dict(step="exploded"), dict(step=3), dict(op="move"),
    dict(consumers=[["platform", ".x", "d"]]), dict(consumers=[["platform", "x"]]),
    dict(consumers=[["platform", "x", "d/e"]]), dict(consumers=[["", "x", "d"]]),
    dict(consumers=[["platform", "x", 3]]), dict(consumers="x"), dict(consumers=[[]]),
    dict(device="../a"), dict(extra=1),
]


@pytest.mark.parametrize("make, data", [(_owners, _owner_json(**bad)) for bad in BAD_OWNERS]
                         + [(_journal, _journal_json(**bad)) for bad in BAD_JOURNALS],
                         ids=[f"owner-{sorted(b.items())}" for b in BAD_OWNERS]
                         + [f"journal-{sorted(b.items())}" for b in BAD_JOURNALS])
def test_every_field_is_checked_by_type_and_a_bad_one_affects_only_its_device(
        tmp_path: Path, make: Any, data: dict[str, Any], capsys: Any) -> None:
    store = make(HostFs(tmp_path))
    good = (_owner_record if make is _owners else _journal_record)("b.dev")
    store.write(good)
    (store.path / "a.dev.json").write_text(json.dumps(data))
    assert store.all() == [good]
    assert not store.file("a.dev").exists() and len(_aside(store, "a.dev")) == 1
    with pytest.raises(HostdevError) as info:
        store.read("a.dev")
    assert info.value.code == "journal-corrupt" and "is corrupt" in info.value.what
    assert [d.device for d in store.damaged()] == ["a.dev"]
    assert store.read("b.dev") == good
    assert "set aside as" in capsys.readouterr().err


def test_the_records_the_hook_and_the_binding_write_read_back(tmp_path: Path) -> None:
    """The checks refuse nothing the code writes: a "started" record with QEMU's pid and
    start time, a no-IOMMU node, a cdev, a domain name starting with '.', a journal with
    consumers on another bus (a device link's consumer may be on any bus)."""
    owners, journal = _owners(HostFs(tmp_path)), _journal(HostFs(tmp_path))
    owners.path.mkdir(parents=True)
    for data in (
            _owner_json(domain=".hidden vm", group="7", node="/dev/vfio/noiommu-7",
                        node_owner=[0, 0, 0o600], cdev="/dev/vfio/devices/vfio12",
                        cdev_owner=[64055, 994, 0o660], iommu_owner=[0, 0, 0o666], since=0,
                        pid=4194304, state="started", qemu_pid=1234, qemu_start=2**63),
            _owner_json(state="preparing", since=1.5e9, node="/dev/vfio/7", group="7")):
        owners.file("a.dev").write_text(json.dumps(data))
        assert owners.read("a.dev") == OwnerRecord(**data)
    record = _journal_record("a.dev")._replace(
        consumers=(("platform", "soc:pwrseq", "pwrseq_simple"), ("i2c", "1-0050", "at24")),
        original_override="pl061_gpio", pid=7, started=12.5, original_known=False)
    journal.write(record)
    assert journal.read("a.dev") == record


@pytest.mark.parametrize("make, record, directory", STORES)
@pytest.mark.parametrize("damage", ["bytes", "directory", "symlink", "nesting", "huge", "fifo",
                                    "empty"])
def test_unreadable_files_are_set_aside_and_refused(tmp_path: Path, make: Any, record: Any,
                                                    directory: str, damage: str) -> None:
    """Non-UTF-8 bytes (UnicodeDecodeError), a directory (IsADirectoryError), a symbolic
    link, JSON nested past the recursion limit: the store's error, never an exception of
    its own, and the others read on."""
    store = make(HostFs(tmp_path))
    store.write(record("b.dev"))
    victim = tmp_path / "victim"
    victim.write_text(json.dumps(store._encode(record("a.dev"))))
    bad = store.file("a.dev")
    {"bytes": lambda: bad.write_bytes(b'{"device": "a.dev\xff\xfe"}'),
     "directory": lambda: bad.mkdir(),
     "symlink": lambda: bad.symlink_to(victim),
     "nesting": lambda: bad.write_text("[" * 100_000),
     "huge": lambda: bad.write_bytes(b" " * (2 << 20) + b"{}"),
     "fifo": lambda: os.mkfifo(bad),
     "empty": lambda: bad.write_bytes(b"")}[damage]()
    assert store.devices() == ["a.dev", "b.dev"]
    assert store.all() == [record("b.dev")]
    [copy] = _aside(store, "a.dev")
    with pytest.raises(HostdevError) as info:
        store.read("a.dev")
    assert info.value.code == "journal-corrupt"
    assert f"{directory}/a.dev.json " in info.value.what and copy in info.value.what
    assert store.devices() == ["b.dev"] and store.read("b.dev") == record("b.dev")
    assert victim.read_text() == json.dumps(store._encode(record("a.dev")))  # untouched


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_set_aside_copy_keeps_its_device_refused_until_it_is_removed(
        tmp_path: Path, make: Any, record: Any, directory: str) -> None:
    now = iter([1000.0, 1000.0])
    store = make(HostFs(tmp_path))
    store._now = lambda: next(now)
    store.path.mkdir(parents=True)
    for _ in range(2):  # two the same second: both kept
        store.file("a.dev").write_text("{")
        assert store.all() == []
    assert _aside(store, "a.dev") == [".a.dev.json.damaged-1000", ".a.dev.json.damaged-1000.1"]
    store.write(record("a.dev"))  # a sound record again: still refused while a copy is there
    with pytest.raises(HostdevError, match="set aside as .*damaged-1000"):
        store.read("a.dev")
    assert store.all() == []
    fresh = make(HostFs(tmp_path))  # another process: the reason is read from the copy
    assert [(d.device, d.path, d.set_aside) for d in fresh.damaged()] == [
        ("a.dev", f"{directory}/.a.dev.json.damaged-1000", True),
        ("a.dev", f"{directory}/.a.dev.json.damaged-1000.1", True)]
    assert all(d.reason.startswith("is corrupt (Expecting") for d in fresh.damaged())
    for name in _aside(store, "a.dev"):
        (store.path / name).unlink()
    assert store.read("a.dev") == record("a.dev") and store.all() == [record("a.dev")]


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_damaged_record_is_not_moved_while_another_process_holds_the_lock(
        tmp_path: Path, make: Any, record: Any, directory: str) -> None:
    """It may be that process's record half-way through its rewrite: left in place, and
    refused (set aside by the next reader that has the lock)."""
    store = make(HostFs(tmp_path))
    store.write(record("b.dev"))
    store.file("a.dev").write_text("{")
    fd = os.open(store.path / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: as another process
        assert store.all() == [record("b.dev")]
        with pytest.raises(HostdevError, match="left in place"):
            store.read("a.dev")
        assert store.file("a.dev").exists() and _aside(store, "a.dev") == []
        assert [(d.path, d.set_aside) for d in store.damaged()] == [
            (f"{directory}/a.dev.json", False)]
    finally:
        os.close(fd)
    with store.locked(1.0):
        assert store.all() == [record("b.dev")]
    assert len(_aside(store, "a.dev")) == 1 and not store.file("a.dev").exists()


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_damaged_record_is_logged_with_both_paths_on_the_given_stream(
        tmp_path: Path, make: Any, record: Any, directory: str) -> None:
    err = io.StringIO()
    store = make(HostFs(tmp_path), err=err)
    store.path.mkdir(parents=True)
    store.file("a.dev").write_text('{"device": 3}')
    assert store.all() == []
    [copy] = _aside(store, "a.dev")
    assert err.getvalue() == (
        f"platform-hostdev: {store.what} {directory}/a.dev.json is corrupt ('device' is 3, "
        "not a sysfs name (not empty, no '/', no NUL, not starting with '.')); set aside as "
        f"{directory}/{copy}; a.dev is refused until it is removed\n")


def _unwritable(info: Any, path: str, errno_name: str) -> str:
    error = info.value
    assert isinstance(error, StateUnwritableError) and error.code == "state-unwritable"
    assert path in error.what and errno_name in error.what
    assert "the device state was not changed by this write" in error.what
    assert error.data["errno"] == errno_name and error.data["path"] == path
    return str(error.fix)


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_file_where_the_state_directory_belongs_is_state_unwritable(
        tmp_path: Path, make: Any, record: Any, directory: str) -> None:
    fs = HostFs(tmp_path)
    fs.path("/run").mkdir()
    fs.path("/run/platform-hostdev").write_text("")
    store = make(fs)
    assert store.devices() == [] and store.read("a.dev") is None and store.damaged() == []
    with pytest.raises(StateUnwritableError) as info:
        store.write(record("a.dev"))
    fix = _unwritable(info, directory, "ENOTDIR" if directory.endswith("owners") else "EEXIST")
    assert "remove the file /run/platform-hostdev" in fix
    with pytest.raises(StateUnwritableError) as info:
        with store.locked(1.0):
            pass
    fix = _unwritable(info, f"{directory}/.lock",
                      "ENOTDIR" if directory.endswith("owners") else "EEXIST")
    assert "remove the file /run/platform-hostdev" in fix


@pytest.mark.parametrize("make, record, directory", STORES)
@pytest.mark.parametrize("number, hint", [
    (errno.ENOSPC, "free space"), (errno.EROFS, "remount /run read-write"),
    (errno.EACCES, "run as root"), (errno.EIO, "then retry"),
])
def test_a_failed_write_is_state_unwritable_and_changes_nothing(
        tmp_path: Path, make: Any, record: Any, directory: str, number: int,
        hint: str) -> None:
    store = make(HostFs(tmp_path))
    store.write(record("a.dev"))
    store.write(record("b.dev"))
    name = errno.errorcode[number]
    failing = OSError(number, os.strerror(number))
    with mock.patch("platform_hostdev.host.statefiles.os.write", side_effect=failing):
        with pytest.raises(StateUnwritableError) as info:
            store.write(record("a.dev")._replace(bus="amba"))
        assert hint in _unwritable(info, f"{directory}/a.dev.json", name)
    with mock.patch("platform_hostdev.host.statefiles.os.replace", side_effect=failing):
        with pytest.raises(StateUnwritableError) as info:
            store.write(record("a.dev")._replace(bus="amba"))
        _unwritable(info, f"{directory}/a.dev.json", name)
    with mock.patch("pathlib.Path.unlink", side_effect=failing):
        with pytest.raises(StateUnwritableError) as info:
            store.remove("a.dev")
        _unwritable(info, f"{directory}/a.dev.json", name)
    with mock.patch("pathlib.Path.mkdir", side_effect=failing):
        with pytest.raises(StateUnwritableError) as info:
            store.write(record("c.dev"))
        _unwritable(info, directory, name)
        with pytest.raises(StateUnwritableError) as info:
            with store.locked(1.0):
                pass
        _unwritable(info, f"{directory}/.lock", name)
    assert store.read("a.dev") == record("a.dev") and store.devices() == ["a.dev", "b.dev"]
    assert sorted(os.listdir(store.path)) == ["a.dev.json", "b.dev.json"]  # no temp left
    store.file("a.dev").write_text("{")
    with mock.patch("platform_hostdev.host.statefiles.os.rename", side_effect=failing):
        assert store.all() == [record("b.dev")]  # left in place, the others go on
        with pytest.raises(StateUnwritableError) as info:
            store.read("a.dev")
        assert "cannot set aside the damaged" in info.value.what
        _unwritable(info, f"{directory}/a.dev.json", name)
    assert store.file("a.dev").read_text() == "{"


@pytest.mark.parametrize("make, record, directory", STORES)
@pytest.mark.parametrize("name", ["", "..", ".lock", "a/b", "../../etc/passwd"])
def test_names_that_are_no_sysfs_device_are_refused(tmp_path: Path, make: Any, record: Any,
                                                    directory: str, name: str) -> None:
    store = make(HostFs(tmp_path))
    with pytest.raises(HostdevError, match="not a sysfs device name"):
        store.file(name)
    assert not (tmp_path / "etc").exists()
