"""Fuzzing the hook's input: whatever libvirt hands it, it exits cleanly and writes only its own.

In-process (hook.dispatch) on a fake host with the fake kernel, deterministic
(derandomize=True, no example database) and bounded. Each example runs a
random sequence of hook calls on the test's host, each with a mutated copy
of a valid translated domain XML (elements deleted, duplicated, renamed or
added; attributes set or removed; text replaced; device names swapped for
path tricks, NULs, control characters, very long or non-ASCII strings; raw
bytes cut or overwritten). Checked after every call:

* dispatch returns 0 or 1 (reconnect always 0) and nothing else escapes;
* every sysfs write (the fake kernel's ``writes``) is a device's own
  ``driver_override``, its bus's ``drivers_probe`` or a driver's
  ``bind``/``unbind``, and names a device the XML mentions (or one recorded
  earlier in the sequence);
* every other write, chown, chmod, rename, unlink, mkdir or symlink the hook
  makes (seen through a Python audit hook, with the fake kernel's own
  bookkeeping excluded) is under /run/platform-hostdev or /dev/vfio of the
  fake root;
* the tree below the fake root (tree_state) changed only in those places and
  in the sysfs files of the devices written to.

At the end of each example, ``recover`` past the start grace period leaves
every device on its original driver with no override, and no record or
journal behind (so the next example starts from the same host).

The DT readers the hook relies on are fuzzed the same way: read_sysfs_tree on
a mutated /sys/firmware/devicetree/base (only DeviceTreeError escapes) and
resolve_device with random names and DT paths (only HostdevError escapes, and
nothing is written).
"""
from __future__ import annotations

import contextvars
import io
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from platform_hostdev.binding.journal import Journal
from platform_hostdev.binding.operations import device_state
from platform_hostdev.binding.ownership import Owners
from platform_hostdev.domain import hostdev, translate  # noqa: F401  (imported now: no .pyc
from platform_hostdev.dt.fdt import read_sysfs_tree
from platform_hostdev.dt.naming import predict_devices
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError, HostdevError
from platform_hostdev.guestdt import store, sync  # noqa: F401   written during a call)
from platform_hostdev.hook.qemu import HookEnv, dispatch, release_stale, resolve_device
from platform_hostdev.host import qemuconf  # noqa: F401

from tests.fakehost.test_hook import make_kernel
from tests.support.domains import libvirt_domain, with_guest_dt
from tests.support.fakehost import tree_state, write_devicetree
from tests.support.fakekernel import FakeKernel

DEVICES = ["a000000.virtio_mmio", "a000200.virtio_mmio"]
OTHERS = ["a000400.virtio_mmio", "9030000.pl061", "9000000.pl011", "9020000.fw-cfg"]
OPS = ["prepare", "release", "reconnect", "migrate", "restore", "start", "stopped"]
STATE_DIRS = ("run/platform-hostdev", "dev/vfio")
FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
_AUDIT: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "hook_fuzz_audit", default=None)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.chown": 0, "os.chmod": 0, "os.remove": 0, "os.rmdir": 0, "os.mkdir": 0,
                "os.rename": 1, "os.symlink": 1, "os.link": 1, "os.truncate": 0,
                "os.utime": 0, "shutil.rmtree": 0, "shutil.copyfile": 1}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    seen = _AUDIT.get()
    if seen is None:
        return
    if event == "open":
        path, _mode, flags = args
        if isinstance(flags, int) and flags & _WRITE_FLAGS and not isinstance(path, int):
            seen.append((event, os.fsdecode(path)))
    elif event in _PATH_EVENTS:
        path = args[_PATH_EVENTS[event]]
        if isinstance(path, int):  # fchown/fchmod of an fd the hook opened: its open counted
            return
        seen.append((event, os.fsdecode(path)))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside audited()


@contextmanager
def audited() -> Iterator[list[tuple[str, str]]]:
    """Record the file-changing calls made in this block (read-only opens are not)."""
    seen: list[tuple[str, str]] = []
    token = _AUDIT.set(seen)
    try:
        yield seen
    finally:
        _AUDIT.reset(token)


class AuditedKernel(FakeKernel):
    """The fake kernel with its own bookkeeping kept out of the hook's audit record."""

    def write_attr(self, host_path: str, value: str) -> None:
        token = _AUDIT.set(None)
        try:
            super().write_attr(host_path, value)
        finally:
            _AUDIT.reset(token)


def make_host(root: Path, dtb: Path) -> AuditedKernel:
    plain = make_kernel(root, dtb)
    kernel = AuditedKernel(plain.host, reset_required=False)
    return kernel


# ------------------------------------------------------------------ XML mutation

NASTY_NAMES = [
    "/", "..", ".", "a/b", "../../../etc", "../a000000.virtio_mmio", "a000000.virtio_mmio/..",
    "a000000.virtio_mmio\0", "\0", "a000000.virtio_mmio\n", " a000000.virtio_mmio", "",
    "x" * 5000, "é" * 300, "\u202eoimm_oitriv.000000a", "a000000.virtio_mmio" * 50,
    "/virtio_mmio@a000000", "/virtio_mmio@a000000/..", "//virtio_mmio@a000000",
    "/pl061@9030000", "/", "/virtio_mmio@a000000\0", "-", "*", "$(reboot)",
    "9000000.pl011", "9030000.pl061", "a000400.virtio_mmio", "serial0", "%s%n",
]
names = st.one_of(st.sampled_from(NASTY_NAMES + DEVICES + OTHERS),
                  st.text(min_size=0, max_size=40),
                  st.text(alphabet="a0./_-@\0", min_size=1, max_size=12))
words = st.one_of(st.sampled_from(["yes", "no", "platform", "pci", "subsystem", "1", "-1",
                                   "99999999999999999999", "", "0x10", "on", "off"]),
                  st.text(max_size=20))
tags = st.sampled_from(["hostdev", "source", "device", "devicetree", "driver", "alias",
                        "address", "uuid", "name", "qemu:arg", "phd:hostdev", "phd:device",
                        "phd:source", "phd:devicetree", "phd:driver", "bogus"])
Mutation = tuple[str, int, Any, Any]
mutation = st.one_of(
    st.tuples(st.just("name"), st.integers(0, 99), names, st.none()),
    st.tuples(st.just("delete"), st.integers(0, 99), st.none(), st.none()),
    st.tuples(st.just("duplicate"), st.integers(0, 99), st.none(), st.none()),
    st.tuples(st.just("rename"), st.integers(0, 99), tags, st.none()),
    st.tuples(st.just("add"), st.integers(0, 99), tags, st.dictionaries(
        st.sampled_from(["name", "path", "managed", "type", "mode", "value", "position"]),
        words, max_size=3)),
    st.tuples(st.just("attr"), st.integers(0, 99),
              st.sampled_from(["name", "path", "managed", "type", "mode", "value",
                               "position", "added", "mmap", "irqfd", "mmap_timeout"]), words),
    st.tuples(st.just("unattr"), st.integers(0, 99), st.none(), st.none()),
    st.tuples(st.just("text"), st.integers(0, 99), words, st.none()),
    st.tuples(st.just("cut"), st.integers(0, 99), st.none(), st.none()),
    st.tuples(st.just("byte"), st.integers(0, 99), st.integers(0, 255), st.none()),
)
NS = {"phd": "http://platform-hostdev.org/schemas/domain/1.0",
      "qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}


def _qualified(tag: str) -> str:
    prefix, sep, local = tag.partition(":")
    return f"{{{NS[prefix]}}}{local}" if sep else tag


def mutate(xml: bytes, mutations: list[Mutation]) -> bytes:
    """Apply tree mutations with lxml, then byte mutations to the serialised result."""
    root = etree.fromstring(xml)
    raw: list[Mutation] = []
    for kind, where, a, b in mutations:
        elements = [e for e in root.iter() if isinstance(e.tag, str)]
        element = elements[where % len(elements)]
        parent = element.getparent()
        if kind == "name":
            targets = root.findall(".//phd:device", NS) + root.findall(".//phd:devicetree", NS)
            if targets:
                target = targets[where % len(targets)]
                attr = "name" if target.tag.endswith("device") else "path"
                try:
                    target.set(attr, a)
                except ValueError:  # NUL / control characters: lxml refuses them
                    raw.append(("swap", where, target.get(attr), a))
        elif kind == "delete" and parent is not None:
            parent.remove(element)
        elif kind == "duplicate" and parent is not None:
            parent.insert(parent.index(element), etree.fromstring(etree.tostring(element)))
        elif kind == "rename":
            element.tag = _qualified(a)
        elif kind == "add":
            child = etree.SubElement(element, _qualified(a))
            for key, value in b.items():
                _set(child, key, value)
        elif kind == "attr":
            _set(element, a, b)
        elif kind == "unattr" and element.attrib:
            del element.attrib[sorted(element.attrib)[where % len(element.attrib)]]
        elif kind == "text":
            try:
                element.text = a
            except ValueError:
                pass
        elif kind in ("cut", "byte"):
            raw.append((kind, where, a, b))
    data = etree.tostring(root)
    for kind, where, a, b in raw:
        if kind == "swap" and a is not None:
            data = data.replace(f'"{a}"'.encode(), f'"{b}"'.encode("utf-8", "surrogatepass"), 1)
        elif kind == "cut":
            data = data[:len(data) * where // 100]
        elif kind == "byte" and data:
            at = len(data) * where // 100 % len(data)
            data = data[:at] + bytes([a]) + data[at + 1:]
    return data


def _set(element: Any, key: str, value: str) -> None:
    try:
        element.set(key, value)
    except ValueError:
        pass


# ------------------------------------------------------------------ the checks

@dataclass
class Allowed:
    """What the hook may touch: state dirs, and the devices the XML named so far."""

    root: Path
    kernel: FakeKernel
    devices: set[str] = field(default_factory=set)

    def learn(self, xml: bytes) -> None:
        for name, dt_path in self.kernel.host.dt_paths.items():
            if name.encode() in xml or f'"{dt_path}"'.encode() in xml:
                self.devices.add(name)

    def sysfs_write(self, host_path: str, value: str) -> str | None:
        """Why this sysfs write is not allowed, or None."""
        real = os.path.realpath(self.kernel.path(host_path))
        for name in self.devices:
            if real == os.path.realpath(self.kernel.host.devices[name] / "driver_override"):
                return None
        rel = os.path.relpath(real, os.path.realpath(self.root))
        target = value.strip()
        if re.fullmatch(r"sys/bus/(platform|amba)/drivers_probe", rel) or \
                re.fullmatch(r"sys/bus/(platform|amba)/drivers/[^/]+/(un)?bind", rel):
            return None if target in self.devices else f"{rel} <- {target!r}: not named"
        return f"write to {rel}"

    def changed_path(self, rel: str) -> bool:
        if rel.startswith(STATE_DIRS) or rel == "dev/kmsg" or \
                any(d.startswith(rel + "/") for d in STATE_DIRS):
            return True
        link = self.root / rel
        if re.fullmatch(r"sys/class/vfio-dev/vfio\d+", rel) and (
                not link.is_symlink() or any(  # removed, or the kernel's link to a named device
                    os.path.realpath(link).startswith(
                        os.path.realpath(self.kernel.host.devices[name]) + "/vfio-dev/")
                    for name in self.devices)):
            return True  # vfio_device_add(): the class link of the vfio device bind made
        for name in self.devices:
            device_dir = os.path.relpath(self.kernel.host.devices[name], self.root)
            if rel.startswith(device_dir + "/") or re.fullmatch(
                    rf"sys/bus/(platform|amba)/drivers/[^/]+/{re.escape(name)}", rel):
                return True
        return False

    def audited_path(self, event: str, path: str) -> bool:
        real = os.path.realpath(path)
        root = os.path.realpath(self.root)
        if event == "os.mkdir" and any(os.path.join(root, d).startswith(real + "/")
                                       for d in STATE_DIRS):
            return True  # a parent of a state directory (mkdir parents=True)
        return any(real == os.path.join(root, d) or real.startswith(os.path.join(root, d) + "/")
                   for d in STATE_DIRS)


def tree_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Paths created, removed or changed (a directory's own mtime does not count)."""
    changed = []
    for path in before.keys() | after.keys():
        old, new = before.get(path), after.get(path)
        if old == new or (old and new and old[0] == new[0] == "dir"):
            continue
        changed.append(path)
    return sorted(changed)


def call(kernel: FakeKernel, op: str, xml: bytes, allowed: Allowed) -> tuple[int, str]:
    err = io.StringIO()
    env = HookEnv(kernel.as_host(), err=err)
    sub = "end" if op in ("release", "stopped") else "begin"
    xml = with_guest_dt(kernel.root, xml)  # synced, as the guest-DT check wants it
    allowed.learn(xml)
    before = tree_state(allowed.root)
    first_write = len(kernel.writes)
    with audited() as seen:
        code = dispatch(["vm1", op, sub, "-"], xml, env)
    after = tree_state(allowed.root)
    assert code in (0, 1), (op, code)
    if op == "reconnect":
        assert code == 0, err.getvalue()
    assert "Traceback" not in err.getvalue()
    bad = [why for path, value in kernel.writes[first_write:]
           if (why := allowed.sysfs_write(path, value)) is not None]
    assert bad == [], bad
    outside = [(event, path) for event, path in seen
               if not allowed.audited_path(event, path) and not path.endswith(".pyc")]
    assert outside == [], outside
    stray = [p for p in tree_changes(before, after) if not allowed.changed_path(p)]
    assert stray == [], stray
    if op in ("migrate", "restore", "start", "stopped"):
        assert kernel.writes[first_write:] == [] and seen == []
    return code, err.getvalue()


def recover_everything(kernel: FakeKernel) -> None:
    """'platform-hostdev recover' after the start grace period: everything comes back."""
    env = HookEnv(kernel.as_host(), err=io.StringIO())
    owners = Owners(kernel, clock=lambda: 1e12)
    with owners.locked():
        release_stale(env, owners, Journal(kernel))


def pristine(kernel: FakeKernel, drivers: dict[str, str | None]) -> list[str]:
    problems = []
    for name, driver in drivers.items():
        state = device_state(kernel, kernel.host.buses[name], name)
        if (state.driver, state.override) != (driver, None):
            problems.append(f"{name}: {state.driver} (override {state.override}), "
                            f"was {driver}")
    problems += [f"record {r.device}" for r in Owners(kernel).all()]
    problems += [f"journal {d}" for d in Journal(kernel).devices()]
    return problems


# ------------------------------------------------------------------ the tests

@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> AuditedKernel:
    """One host per test, shared by its examples: each example must leave it pristine
    (checked), which is cheaper than building a host per example."""
    return make_host(tmp_path / "root", virt_dtb)


def drivers_of(kernel: FakeKernel) -> dict[str, str | None]:
    return {n: device_state(kernel, kernel.host.buses[n], n).driver for n in kernel.host.devices}


# a third of the calls get the valid XML, so sequences reach deep (prepare, then release...)
calls = st.lists(st.tuples(st.sampled_from(OPS),
                           st.one_of(st.just([]), st.lists(mutation, min_size=1, max_size=3))),
                 min_size=1, max_size=4)


@settings(FUZZ, max_examples=120)
@given(sequence=calls, managed=st.booleans())
def test_mutated_domain_xml_sequences(kernel: AuditedKernel,
                                      sequence: list[tuple[str, list[Mutation]]],
                                      managed: bool) -> None:
    allowed = Allowed(kernel.root, kernel)
    drivers = drivers_of(kernel)
    valid = libvirt_domain("vm1", DEVICES, managed=managed)
    for op, mutations in sequence:
        xml = mutate(valid, mutations) if mutations else valid
        code, _ = call(kernel, op, xml, allowed)
        event(f"{op} {'mutated' if mutations else 'valid'} exit {code}")
    recover_everything(kernel)
    assert pristine(kernel, drivers) == []


@settings(FUZZ, max_examples=100)
@given(name=names, op=st.sampled_from(OPS))
def test_random_device_names(kernel: AuditedKernel, name: str, op: str) -> None:
    allowed = Allowed(kernel.root, kernel)
    drivers = drivers_of(kernel)
    xml = mutate(libvirt_domain("vm1", DEVICES[:1]), [("name", 0, name, None)])
    code, err = call(kernel, op, xml, allowed)
    event(f"{op} exit {code}")
    if op == "prepare" and name not in DEVICES + OTHERS[:1]:
        assert code == 1 and "refused" in err, (name, err)
    if op == "prepare":
        call(kernel, "release", xml, allowed)
    recover_everything(kernel)
    assert pristine(kernel, drivers) == []


def test_the_valid_domain_goes_through(kernel: AuditedKernel) -> None:
    """The fuzzer's starting point works, so its refusals are the mutations' doing."""
    allowed = Allowed(kernel.root, kernel)
    xml = libvirt_domain("vm1", DEVICES)
    assert call(kernel, "prepare", xml, allowed) == (0, "")
    assert all(device_state(kernel, "platform", d).driver == "vfio-platform" for d in DEVICES)
    assert call(kernel, "release", xml, allowed) == (0, "")
    assert pristine(kernel, {d: None for d in DEVICES}) == []


def test_the_checks_catch_a_stray_write(kernel: AuditedKernel) -> None:
    """A write outside the allowed set fails the checks (the fuzz tests can fail)."""
    allowed = Allowed(kernel.root, kernel)
    allowed.learn(libvirt_domain("vm1", DEVICES[:1]))
    assert allowed.sysfs_write("/sys/bus/platform/drivers_probe", DEVICES[1]) is not None
    assert allowed.sysfs_write(f"/sys/bus/platform/devices/{DEVICES[1]}/driver_override",
                               "x") is not None
    assert allowed.sysfs_write(f"/sys/bus/platform/devices/{DEVICES[0]}/driver_override",
                               "x") is None
    assert not allowed.audited_path("open", str(kernel.root / "etc/passwd"))
    assert not allowed.audited_path("open", str(kernel.root / "run/platform-hostdev/../x"))
    assert not allowed.audited_path("os.mkdir", str(kernel.root / "etc"))
    assert allowed.audited_path("os.mkdir", str(kernel.root / "run"))
    with audited() as seen:
        (kernel.root / "etc" / "stray").write_text("x")
        os.chmod(kernel.root / "etc" / "stray", 0o600)
    assert [e for e, _ in seen] == ["open", "os.chmod"]
    before = tree_state(kernel.root)
    (kernel.root / "etc" / "stray").write_text("xy")
    assert [p for p in tree_changes(before, tree_state(kernel.root))
            if not allowed.changed_path(p)] == ["etc/stray"]


# ------------------------------------------------------------------ DT readers

dt_edits = st.lists(st.tuples(
    st.sampled_from(["truncate", "garbage", "delete", "mkdir", "symlink", "rename", "fifo"]),
    st.integers(0, 10_000), st.binary(max_size=16)), min_size=1, max_size=6)


@settings(FUZZ, max_examples=60)
@given(edits=dt_edits)
def test_mutated_sysfs_devicetree(kernel: AuditedKernel,
                                  edits: list[tuple[str, int, bytes]]) -> None:
    base = kernel.path("/sys/firmware/devicetree/base")
    shutil.rmtree(base)  # the previous example's mutations
    write_devicetree(base, kernel.host.tree)
    for kind, where, blob in edits:
        entries = sorted(p for p in base.rglob("*") if not p.is_symlink())
        target = entries[where % len(entries)]
        if kind == "truncate" and target.is_file():
            target.write_bytes(target.read_bytes()[:where % 5])
        elif kind == "garbage" and target.is_file():
            target.write_bytes(blob)
        elif kind == "delete":
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        elif kind == "mkdir":
            (target if target.is_dir() else target.parent).joinpath(f"n@{where:x}").mkdir(
                exist_ok=True)
        elif kind == "symlink":
            link = (target if target.is_dir() else target.parent) / f"l{where}"
            if not link.exists() and not link.is_symlink():
                link.symlink_to("/etc")
        elif kind == "rename":
            renamed = target.with_name(target.name + "\udcff" if where % 2 else "x")
            if not renamed.exists():
                target.rename(renamed)
        elif kind == "fifo":
            fifo = (target if target.is_dir() else target.parent) / f"f{where}"
            if not fifo.exists():
                os.mkfifo(fifo)
    try:
        tree = DeviceTree(read_sysfs_tree(base), "sysfs")
        predict_devices(tree)
    except DeviceTreeError as exc:
        assert exc.what
    for name in kernel.host.devices:
        try:
            found = resolve_device(kernel, name, None, True)
        except HostdevError as exc:
            assert exc.what and "Traceback" not in exc.what
        else:
            assert found.name == name


@FUZZ
@given(name=st.one_of(st.none(), names), dt_path=st.one_of(st.none(), names))
def test_resolve_device_with_random_specs(kernel: AuditedKernel, name: str | None,
                                          dt_path: str | None) -> None:
    assume(name is not None or dt_path is not None)  # the schema requires one of them
    before = tree_state(kernel.root)
    with audited() as seen:
        try:
            found = resolve_device(kernel, name, dt_path, True)
        except HostdevError as exc:
            assert exc.what
        else:
            assert found.name in kernel.host.devices
            if name is not None:
                assert found.name == name
            if dt_path is not None:
                assert found.dt_path == dt_path == kernel.host.dt_paths[found.name]
    assert seen == [] and tree_state(kernel.root) == before
