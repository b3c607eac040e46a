"""Errors under --json: ``{"error": {"code", "what", "fix", ...}}`` on stdout, exit codes
as without --json; without it the text stays ``error:``/``hint:`` on stderr."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.cli import main as cli

from tests.fakehost.test_hook import make_kernel, run_hook
from tests.support.domains import libvirt_domain
from tests.support.fakekernel import FakeKernel

VIRTIO = "a000000.virtio_mmio"


@pytest.fixture
def kernel(tmp_path: Path, virt_dtb: Path) -> FakeKernel:
    return make_kernel(tmp_path / "root", virt_dtb)


def _run(kernel: FakeKernel, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), cli.Context(host=kernel.as_host(), out=out, err=err))
    return code, out.getvalue(), err.getvalue()


def _error(out: str) -> dict[str, Any]:
    body = json.loads(out)
    assert list(body) == ["error"]
    error = body["error"]
    assert isinstance(error, dict) and error["what"] and error["fix"]
    return error


def _both(kernel: FakeKernel, *argv: str) -> tuple[int, dict[str, Any], str]:
    """Run with and without --json: same exit code; JSON on stdout vs text on stderr."""
    code, out, err = _run(kernel, *argv, "--json")
    assert err == ""
    text_code, text_out, text_err = _run(kernel, *argv)
    assert text_code == code and text_out == ""
    error = _error(out)
    assert text_err.startswith(f"error: {error['what']}\nhint: {error['fix']}\n")
    return code, error, text_err


@pytest.mark.parametrize("command", ["show", "nodedev-dumpxml", "nodedev-detach",
                                     "nodedev-reattach"])
def test_device_not_found(kernel: FakeKernel, command: str) -> None:
    code, error, _ = _both(kernel, command, "ethernet9")
    assert code == 1
    assert (error["code"], error["device"]) == ("device-not-found", "ethernet9")


def test_invalid_device_spec(kernel: FakeKernel) -> None:
    code, error, _ = _both(kernel, "show", "../etc")
    assert (code, error["code"]) == (1, "invalid-device-spec")


def test_xml_error(kernel: FakeKernel, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><devices><hostdev type='platform'")
    code, error, _ = _both(kernel, "translate", str(bad))
    assert (code, error["code"]) == (1, "xml-invalid")
    assert "not well-formed" in error["what"]


def test_unreadable_file(kernel: FakeKernel, tmp_path: Path) -> None:
    code, error, _ = _both(kernel, "translate", str(tmp_path / "missing.xml"))
    assert (code, error["code"], error["path"]) == (1, "file-unreadable",
                                                    str(tmp_path / "missing.xml"))


def test_binding_refusals_on_the_fake_kernel(kernel: FakeKernel) -> None:
    assert _run(kernel, "nodedev-detach", VIRTIO)[0] == 0
    code, error, _ = _both(kernel, "nodedev-detach", VIRTIO)
    assert (code, error["code"], error["device"]) == (1, "already-detached", VIRTIO)
    assert error["driver"] == "vfio-platform"
    assert _run(kernel, "nodedev-reattach", VIRTIO)[0] == 0
    code, error, _ = _both(kernel, "nodedev-reattach", VIRTIO)
    assert (code, error["code"], error["device"]) == (1, "not-detached", VIRTIO)


def test_device_owned_by_a_domain_is_in_use(kernel: FakeKernel) -> None:
    """The hook refuses with the human text (libvirt shows it); the code is on the error."""
    assert run_hook(kernel, "vm1", "prepare", libvirt_domain("vm1", [VIRTIO]))[0] == 0
    code, err = run_hook(kernel, "vm2", "prepare", libvirt_domain("vm2", [VIRTIO]))
    assert code == 1
    assert err.startswith(f"platform-hostdev: prepare of domain vm2 refused: device {VIRTIO} "
                          "is in use by domain vm1\nplatform-hostdev: hint: stop domain vm1")
    assert "{" not in err


def test_inspect_keeps_its_exit_code_for_an_error(kernel: FakeKernel, tmp_path: Path) -> None:
    (tmp_path / "b.dtb").write_bytes(b"")  # refused before it is read
    code, out, err = _run(kernel, "--dtb", str(tmp_path / "b.dtb"), "inspect", VIRTIO, "--json")
    assert (code, err) == (1, "")
    assert _error(out)["code"] == "host-state"


def test_check_host_json_error(kernel: FakeKernel, tmp_path: Path) -> None:
    bad = tmp_path / "domain.xml"
    bad.write_text("<domain>")
    code, error, _ = _both(kernel, "check-host", str(bad))
    assert (code, error["code"]) == (1, "xml-invalid")


@pytest.mark.parametrize("kernel_setup, argv, expected", [
    ({"vfio_loaded": False, "available": ()}, ["nodedev-detach", VIRTIO],
     ("vfio-unavailable", {"module": "vfio-platform", "bus": "platform"})),
    ({"noiommu": False}, ["nodedev-detach", VIRTIO], ("no-iommu", {"device": VIRTIO})),
    ({"reset_required": True}, ["nodedev-detach", VIRTIO],
     ("reset-required", {"device": VIRTIO, "compatible": "virtio,mmio"})),
    ({"reset_required": True}, ["nodedev-detach", VIRTIO, "--force"],
     ("probe-failed", {"device": VIRTIO, "errno": 2})),
], ids=["vfio-unavailable", "no-iommu", "reset-required", "probe-failed"])
def test_binding_refusal_codes(tmp_path: Path, virt_dtb: Path, kernel_setup: dict[str, Any],
                               argv: list[str], expected: tuple[str, dict[str, Any]]) -> None:
    from tests.support.fakehost import build_fake_host
    from tests.support.fakekernel import QEMU_VIRT_DRIVERS

    host_setup = {k: kernel_setup.pop(k) for k in ("vfio_loaded", "noiommu") if k in kernel_setup}
    host = build_fake_host(tmp_path / "root", virt_dtb, drivers=QEMU_VIRT_DRIVERS,
                           **{"vfio_loaded": True, "noiommu": True, **host_setup})
    kernel_setup.setdefault("reset_required", False)
    kernel = FakeKernel(host, **kernel_setup)
    code, out, err = _run(kernel, *argv, "--json")
    assert (code, err) == (1, "")
    error = _error(out)
    code_name, data = expected
    assert error["code"] == code_name
    assert {k: error.get(k) for k in data} == data
