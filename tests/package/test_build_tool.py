"""scripts/build-deb's own checks: missing tools and a version out of step fail loudly."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.debpackage import REPO


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_deb", REPO / "scripts/build_deb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_build_tools_are_named_with_the_apt_command(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool()
    monkeypatch.setattr(tool, "SYSTEM_PATH", str(tmp_path))  # a PATH without any tool
    with pytest.raises(tool.BuildError) as info:
        tool.check_tools()
    message = str(info.value)
    assert "missing Debian packages dpkg-dev, git, lintian" in message
    assert "apt-get install debhelper dh-python" in message


def test_a_changelog_behind_setup_py_stops_the_build(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool()
    tool.check_tools()
    names = tool.source_files()
    assert "debian/changelog" in names and "setup.py" in names
    monkeypatch.setattr(tool, "OUT", tmp_path / "out")
    env = {"PATH": tool.SYSTEM_PATH, "LC_ALL": "C.UTF-8"}
    with pytest.raises(tool.BuildError, match=r"debian/changelog's version is '0\.1\.0' but "
                                              r"setup.py's is '9\.9\.9'.*dch -v 9\.9\.9"):
        tool.build(names, "9.9.9", env)
    assert not (tmp_path / "out").exists()


def test_the_work_tree_is_left_clean(deb: Path) -> None:
    # the build ran in a copy: nothing of debhelper's or pybuild's is in the tree
    for litter in ("debian/generated", "debian/platform-hostdev", "debian/.debhelper",
                   ".pybuild", "debian/files"):
        assert not (REPO / litter).exists(), litter
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q",
                              str(deb.relative_to(REPO))], check=False)
    assert ignored.returncode == 0  # build/deb/ is gitignored
