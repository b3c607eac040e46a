"""The backend of the contract tests: a fake kernel on the host, the real one in the board.

The same test module runs twice:

* on the host: a fake host built from QEMU's virt DT (``-M virt,dumpdtb``)
  with :class:`tests.support.fakekernel.FakeKernel` acting on the writes,
  set up as the board is (vfio loaded with enable_unsafe_noiommu_mode=1,
  vfio-platform with reset_required=0, pl061_gpio/rtc-pl031/uart-pl011 bound);
* inside the emulated board (``PLATFORM_HOSTDEV_BOARD=1``, set by
  board/guest_init.sh): root ``/``, the real sysfs, pyudev uevents and
  /dev/kmsg of Debian's arm64 6.12 kernel.

A missing prerequisite (qemu-system-aarch64 on the host; vfio modules, root
or pyudev in the board) fails the tests with a message naming it.

A module named ``test_*_<machine>.py`` holds a board other than QEMU's virt
(``test_devlinks_raspi3b.py``: the raspi3b board, with a fake raspi3b host on
the host side): see tests/support/machines.py.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.binding.journal import Journal, JournalRecord
from platform_hostdev.binding.operations import NOIOMMU_PARAM
from platform_hostdev.cli import main as cli
from platform_hostdev.host.attributes import WritableHostFs, read_bool_param
from platform_hostdev.host.boundary import Host, Observer, live_host
from platform_hostdev.host.fs import HostFs
from platform_hostdev.host.inventory import Inventory, load_inventory

from tests.support.machines import ignore_other_machines

INSIDE_BOARD = os.environ.get("PLATFORM_HOSTDEV_BOARD") == "1"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return ignore_other_machines(collection_path, config)


class SimulatedKill(BaseException):
    """Raised by a step hook: the operation stops dead, as if the process were killed.

    A BaseException that is neither KeyboardInterrupt nor an Exception: the
    binding code does not roll back for it, so the device and the journal are
    left exactly as a SIGKILL after that step would leave them.
    """


def kill_at(step: str, op: str) -> Observer:
    """A step observer that 'kills' the operation right after the journal records ``step``."""
    def hook(name: str, record: Any) -> None:
        if isinstance(record, JournalRecord) and record.step == step and record.op == op:
            raise SimulatedKill(f"killed after {op} step {step}")
    return hook


@dataclass
class Backend:
    """What a contract test drives: the kernel (fake or real) and the tool's boundaries."""

    kind: str                              # "fake" or "board"
    fs: HostFs
    host_factory: Callable[..., Host]      # boundaries replaced as keywords (observer=...)
    extras: dict[str, Any] = field(default_factory=dict)

    def host(self, **boundaries: Any) -> Host:
        """The host the tool gets: the fake kernel's, or the board's live one."""
        return self.host_factory(**boundaries)

    @property
    def root(self) -> Path:
        return Path(self.fs.root)

    def journal(self) -> Journal:
        return Journal(self.fs)

    def inventory(self) -> Inventory:
        return load_inventory(self.fs.root)

    def set_noiommu(self, on: bool) -> None:
        writer = self.fs if isinstance(self.fs, WritableHostFs) else \
            WritableHostFs(self.fs.root)
        writer.write_attr(NOIOMMU_PARAM, "1\n" if on else "0\n")

    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        ctx = cli.Context(host=self.host(), out=out, err=err)
        code = cli.main(list(argv), ctx)
        return code, out.getvalue(), err.getvalue()


def _fake_backend(tmp_path: Path) -> Backend:
    from tests.support.corpus import CorpusUnavailable, qemu_virt_dtb
    from tests.support.fakehost import build_fake_host
    from tests.support.fakekernel import QEMU_VIRT_DRIVERS, FakeKernel

    try:
        dtb = qemu_virt_dtb()
    except CorpusUnavailable as exc:
        pytest.fail(f"contract tests on the host need QEMU's virt DT: {exc}")
    # uart-pl011 is built in: no bind/unbind files (drivers/tty/serial/amba-pl011.c)
    host = build_fake_host(tmp_path / "root", dtb, drivers=QEMU_VIRT_DRIVERS,
                           vfio_loaded=True, noiommu=True, suppress_bind_attrs=("uart-pl011",))
    kernel = FakeKernel(host, reset_required=False)
    return Backend("fake", kernel, kernel.as_host, {"kernel": kernel})


def _board_backend() -> Backend:
    fs = WritableHostFs("/")
    missing = []
    if os.geteuid() != 0:
        missing.append("root (sysfs writes)")
    for bus, driver in (("platform", "vfio-platform"), ("amba", "vfio-amba")):
        if not fs.path(f"/sys/bus/{bus}/drivers/{driver}").is_dir():
            missing.append(f"the {driver} driver (/sys/bus/{bus}/drivers/{driver})")
    if read_bool_param(fs, NOIOMMU_PARAM) is None:
        missing.append(f"vfio built with no-IOMMU support ({NOIOMMU_PARAM})")
    try:
        import pyudev  # noqa: F401
    except ImportError:
        missing.append("pyudev (python3-pyudev in the initramfs)")
    if missing:
        pytest.fail("the board lacks what the contract tests need: " + "; ".join(missing))
    return Backend("board", fs, lambda **kw: live_host(fs).replace(**kw))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """The fake kernel on the host; the real kernel inside the board (noiommu state restored)."""
    if not INSIDE_BOARD:
        yield _fake_backend(tmp_path)
        return
    board = _board_backend()
    saved = read_bool_param(board.fs, NOIOMMU_PARAM)
    try:
        yield board
    finally:
        board.set_noiommu(bool(saved))
