"""Guest tier: ``inspect`` on a device still on its host driver (runs before test_vfio_real).

Run inside the emulated board:
``python3 -m board run -- python3 -m pytest -p no:cacheprovider tests/guest``.
"""
from __future__ import annotations

import io
import os

import pytest
from platform_hostdev.cli.main import Context, main
from platform_hostdev.host.fs import HostFs

PL061 = "9030000.pl061"


def test_not_bound_is_exit_1_with_the_detach_hint() -> None:
    if not os.path.exists("/run/platform-hostdev-board"):
        pytest.fail("guest tests need the emulated board: run them through "
                    "'python3 -m board run -- python3 -m pytest tests/guest'", pytrace=False)
    assert HostFs("/").link_name(f"/sys/bus/amba/devices/{PL061}/driver") == "pl061_gpio"
    out, err = io.StringIO(), io.StringIO()
    assert main(["inspect", PL061], Context(out=out, err=err)) == 1
    assert "bound to pl061_gpio, not vfio-amba" in err.getvalue()
    assert f"hint: run 'platform-hostdev nodedev-detach {PL061}' first" in err.getvalue()
    assert out.getvalue() == ""
