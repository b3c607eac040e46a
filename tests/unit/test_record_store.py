"""The binding journal and the ownership records are one RecordStore: the same rules for both.

Both keep one JSON file per device under /run, written atomically, listed by
device, under one lock. A record must name the device of its file: the
ownership records used not to check it, so an owner record B.json saying
device C was read as C's, C's file was "removed" at release, and B.json
stayed for ever (and release acted on C).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.journal import Journal, JournalRecord
from platform_hostdev.binding.ownership import OwnerRecord, Owners
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import RecordStore


def _journal(fs: HostFs) -> Journal:
    return Journal(fs)


def _owners(fs: HostFs) -> Owners:
    return Owners(fs)


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


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_record_of_another_device_is_refused(tmp_path: Path, make: Any, record: Any,
                                               directory: str) -> None:
    store = make(HostFs(tmp_path))
    store.write(record("c.dev"))
    os.rename(store.file("c.dev"), store.file("b.dev"))
    for read in (lambda: store.read("b.dev"), store.all):
        with pytest.raises(HostdevError) as info:
            read()
        assert f"{directory}/b.dev.json describes device 'c.dev'" in info.value.what
        assert f"delete {directory}/b.dev.json" in info.value.fix
    assert store.file("b.dev").exists()  # bad input changes nothing


@pytest.mark.parametrize("make, record, directory", STORES)
def test_a_corrupt_record_names_the_file_and_the_fix(tmp_path: Path, make: Any, record: Any,
                                                     directory: str) -> None:
    store = make(HostFs(tmp_path))
    store.path.mkdir(parents=True)
    store.file("a.dev").write_text(json.dumps({"device": "a.dev"}))
    with pytest.raises(HostdevError) as info:
        store.read("a.dev")
    assert f"{directory}/a.dev.json is corrupt" in info.value.what
    assert "a.dev" in info.value.fix and f"{directory}/a.dev.json" in info.value.fix


@pytest.mark.parametrize("make, record, directory", STORES)
@pytest.mark.parametrize("name", ["", "..", ".lock", "a/b", "../../etc/passwd"])
def test_names_that_are_no_sysfs_device_are_refused(tmp_path: Path, make: Any, record: Any,
                                                    directory: str, name: str) -> None:
    store = make(HostFs(tmp_path))
    with pytest.raises(HostdevError, match="not a sysfs device name"):
        store.file(name)
    assert not (tmp_path / "etc").exists()
