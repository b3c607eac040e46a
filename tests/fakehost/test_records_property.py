"""A damaged record affects its own device only (issue 12, "nothing stranded, ever").

Several devices each have a sound ownership record and a sound journal record;
one record of one device is then damaged: random bytes, a field replaced by a
value of any JSON type, a key dropped, the record of another device written
under its name, a directory in its place. Whatever the damage, the store
agrees with the record's own validation (``from_json``): a record it accepts
reads back as it, anything else is set aside within its directory, logged with
both names and listed by ``damaged()``, and refused by ``read()`` of that very
device, while every other device of both stores reads as before and ``all()``
returns them. No exception but the store's HostdevError may escape.

Deterministic (derandomize=True, no example database) and bounded.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from platform_hostdev.binding.journal import Journal, JournalRecord
from platform_hostdev.binding.ownership import OwnerRecord, Owners
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.statefiles import RecordStore

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)

DEVICES = ("a000000.virtio_mmio", "9030000.pl061", "ff0e0000.ethernet")


def owner(device: str) -> OwnerRecord:
    return OwnerRecord(device, "platform", "vm1", "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                       True, True, "started", group="3", node="/dev/vfio/3",
                       node_owner=[0, 0, 0o600], since=1.7e9, qemu_pid=4242, qemu_start=99,
                       cdev_owner=[], iommu_owner=[])


def journal(device: str) -> JournalRecord:
    return JournalRecord(device, "amba", "detach", "detached", "vfio-amba", "pl061_gpio", None,
                         pid=17, started=1.7e9,
                         consumers=(("platform", "soc:gpio-keys", "gpio-keys"),))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["/etc/shadow", "/dev/vfio/3", "/dev/vfio/devices/vfio0", "platform",
                       "amba", "vfio-amba", "started", "", ".", "..", "a/b", "7"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)

damages = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("field"), st.integers(0, 20), json_values),
    st.tuples(st.just("drop"), st.integers(0, 20)),
    st.tuples(st.just("rename"), st.sampled_from(DEVICES + ("b.dev",))),
    st.tuples(st.just("directory"), st.booleans()),
)


def _stores(root: Path, err: io.StringIO) -> dict[str, tuple[RecordStore[Any], Any]]:
    fs = HostFs(root)
    return {"owners": (Owners(fs, err=err), owner), "journal": (Journal(fs, err=err), journal)}


def _damage(store: RecordStore[Any], make: Any, device: str, damage: tuple[Any, ...]) -> bytes:
    """Damage the device's record file; the bytes written (b"" for a directory)."""
    path = store.file(device)
    sound = store._encode(make(device))
    kind = damage[0]
    if kind == "directory":
        path.unlink()
        path.mkdir()
        if damage[1]:
            (path / "inside.json").write_text(json.dumps(sound))
        return b""
    if kind == "bytes":
        data = damage[1]
    elif kind == "rename":
        data = json.dumps(store._encode(make(damage[1]))).encode()
    else:
        fields = dict(sound)
        key = sorted(fields)[damage[1] % len(fields)]
        if kind == "field":
            fields[key] = damage[2]
        else:
            del fields[key]
        data = json.dumps(fields).encode()
    path.write_bytes(data)
    return data


def _accepted(decode: Any, data: bytes, device: str) -> Any:
    """The record the validation alone makes of ``data`` for ``device``, None if refused."""
    try:
        record = decode(json.loads(data.decode()))
    except (ValueError, RecursionError):
        return None
    return record if record.device == device else None


@PROPERTY
@given(which=st.sampled_from(["owners", "journal"]), target=st.sampled_from(DEVICES),
       damage=damages, locked=st.booleans())
def test_a_damaged_record_affects_exactly_its_device(which: str, target: str,
                                                     damage: tuple[Any, ...],
                                                     locked: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        err = io.StringIO()
        stores = _stores(Path(tmp), err)
        for store, make in stores.values():
            for device in DEVICES:
                store.write(make(device))
        store, make = stores[which]
        data = _damage(store, make, target, damage)
        decode = OwnerRecord.from_json if which == "owners" else JournalRecord.from_json
        accepted = _accepted(decode, data, target) if damage[0] != "directory" else None
        others = [d for d in sorted(DEVICES) if d != target]
        if locked:  # the hook's way: all() under the store's lock
            with store.locked(5.0):
                found = store.all()
        else:
            found = store.all()
        if accepted is not None:  # the validation takes it: so does the store
            assert found == sorted([make(d) for d in others] + [accepted],
                                   key=lambda r: r.device)
            assert store.read(target) == accepted and store.damaged() == []
            return
        assert found == [make(d) for d in others]
        [damaged] = store.damaged()
        assert (damaged.device, damaged.set_aside) == (target, True)
        assert damaged.found == store.host_file(target)
        assert damaged.path.startswith(f"{store.directory}/.{target}.json.damaged-")
        assert f"{damaged.found} " in err.getvalue() and damaged.path in err.getvalue()
        if data:
            assert store.fs.path(damaged.path).read_bytes() == data  # kept as found
        assert not os.path.lexists(store.file(target))
        with pytest.raises(HostdevError) as refused:
            store.read(target)
        assert refused.value.code == "journal-corrupt" and damaged.path in refused.value.what
        for device in others:
            assert store.read(device) == make(device)
        other_store, other_make = stores["journal" if which == "owners" else "owners"]
        assert other_store.all() == [other_make(d) for d in sorted(DEVICES)]
        assert other_store.damaged() == []
        store.write(make(target))  # a sound record again: refused while the copy is there
        with pytest.raises(HostdevError):
            store.read(target)
        assert [r.device for r in store.all()] == others
