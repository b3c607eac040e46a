"""Errors with stable codes: the vocabulary, every error kind's code, the JSON body."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import platform_hostdev
import pytest
from platform_hostdev.errors import CODES, DeviceNotFoundError, DeviceTreeError, HostdevError

PACKAGE = Path(platform_hostdev.__file__).parent
REQUIRED = {
    "device-not-found", "invalid-device-spec", "dt-malformed", "xml-invalid", "device-in-use",
    "group-not-viable", "not-migratable", "unbind-forbidden", "host-uses-device",
    "vfio-unavailable", "no-iommu", "reset-required", "probe-failed", "restore-failed",
    "journal-corrupt", "state-busy", "libvirt-error", "permission-denied", "not-detached",
    "already-detached", "interrupted-operation", "state-unwritable",
}
ERROR_CLASSES = ("HostdevError", "HostError", "XmlError", "BindingError", "VfioError")


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "platform_hostdev.")
            if not m.name.endswith("__main__")]


def _error_classes() -> list[type[HostdevError]]:
    for name in _modules():
        importlib.import_module(name)
    found: list[type[HostdevError]] = []
    todo: list[type[HostdevError]] = [HostdevError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return [c for c in found if c.__module__.startswith("platform_hostdev")]


def test_the_vocabulary_is_the_table_kebab_case_and_complete() -> None:
    assert REQUIRED <= CODES
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in CODES), sorted(CODES)
    assert len(CODES) >= 30  # the table was parsed, not just a few lines of it


def test_every_error_class_has_a_code_of_the_table() -> None:
    classes = _error_classes()
    assert len(classes) >= 25
    assert {c.__name__: c.code for c in classes if c.code not in CODES} == {}
    specific = {c.__name__: c.code for c in classes}
    assert specific["DeviceNotFoundError"] == "device-not-found"
    assert specific["InvalidDeviceSpecError"] == "invalid-device-spec"
    assert specific["DeviceTreeError"] == "dt-malformed"
    assert specific["XmlError"] == "xml-invalid"
    assert specific["DeviceInUseError"] == "device-in-use"
    assert specific["GroupNotViableError"] == "group-not-viable"
    assert specific["HostUseError"] == "host-uses-device"
    assert specific["VfioUnavailableError"] == "vfio-unavailable"
    assert specific["NoIommuError"] == "no-iommu"
    assert specific["ResetRequiredError"] == "reset-required"
    assert specific["ProbeFailedError"] == "probe-failed"
    assert specific["RestoreError"] == "restore-failed"
    assert specific["JournalError"] == "journal-corrupt"
    assert specific["JournalBusyError"] == specific["OwnersBusyError"] == "state-busy"
    assert specific["StateUnwritableError"] == "state-unwritable"
    assert specific["LibvirtError"] == "libvirt-error"
    assert specific["VfioPermissionError"] == "permission-denied"
    assert specific["NotDetachedError"] == specific["NotBoundError"] == "not-detached"
    assert specific["AlreadyDetachedError"] == "already-detached"
    assert specific["InterruptedOperationError"] == "interrupted-operation"
    assert specific["UeventTimeoutError"] == "uevent-timeout"


def _calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                calls.append((str(path.relative_to(PACKAGE)), node.lineno, node))
    return calls


def test_every_bare_raise_names_its_code_and_every_code_is_in_the_table() -> None:
    bare, unknown = [], []
    for path, line, call in _calls():
        codes = [k.value for k in call.keywords if k.arg == "code"]
        named = isinstance(call.func, ast.Name) and call.func.id in ERROR_CLASSES
        if named and call.func.id == "HostdevError" and not codes:  # type: ignore[union-attr]
            bare.append(f"{path}:{line}")
        for value in codes:
            if isinstance(value, ast.Constant) and value.value not in CODES:
                unknown.append(f"{path}:{line}: {value.value}")
    assert bare == [], "HostdevError raised without code=: " + ", ".join(bare)
    assert unknown == [], unknown
    assert sum(1 for _, _, c in _calls() if any(k.arg == "code" for k in c.keywords)) >= 60


def test_json_body_carries_code_what_fix_and_the_data() -> None:
    exc = HostdevError("device x is in use by domain vm1", "stop vm1", code="device-in-use",
                       device="x", domain="vm1", pids=(1, 2), absent=None)
    assert exc.to_json() == {"code": "device-in-use", "what": "device x is in use by domain vm1",
                             "fix": "stop vm1", "device": "x", "domain": "vm1", "pids": [1, 2]}
    assert str(exc) == "device x is in use by domain vm1 (stop vm1)"  # the human text stays
    assert DeviceNotFoundError("eth9").to_json()["device"] == "eth9"
    tree = DeviceTreeError("/soc/x", "reg", "too short").to_json()
    assert (tree["code"], tree["node"], tree["property"]) == ("dt-malformed", "/soc/x", "reg")


def test_data_cannot_replace_code_what_or_fix() -> None:
    exc = HostdevError("what", "fix", code="host-state", path="/sys/x")
    exc.data["what"] = "other"
    assert exc.to_json()["what"] == "what"


@pytest.mark.parametrize("cls", ["HostError", "XmlError"])
def test_an_instance_may_carry_a_more_specific_code(cls: str) -> None:
    error_type = getattr(platform_hostdev, cls)
    assert error_type("w", "f").code == error_type.code
    assert error_type("w", "f", code="permission-denied").code == "permission-denied"
