"""The schemas and the hook executable come from the checkout the code runs from.

With an editable install of one checkout, a second checkout (a git worktree)
used to read the first one's xml_schemas/ and hooks/ through the installed data
packages: its tests rendered and ran the other checkout's hook.
"""
from __future__ import annotations

from pathlib import Path

from platform_hostdev.domain.hostdev import load_schema
from platform_hostdev.hook.install import hook_source
from platform_hostdev.shipped import shipped_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_source_tree_reads_its_own_files() -> None:
    assert shipped_dir("platform_hostdev.hookfiles") == REPO / "hooks"
    assert shipped_dir("platform_hostdev.xml_schemas") == REPO / "xml_schemas"
    assert hook_source() == (REPO / "hooks/qemu.d/platform-hostdev").read_text()
    assert load_schema("hostdev") is not None


def test_the_hooks_fast_path_looks_where_the_ownership_records_are() -> None:
    """The installed hook finds records without importing the package: its copy of the
    directory must be the one binding.ownership writes to."""
    import ast
    from pathlib import Path

    from platform_hostdev.binding.ownership import OWNERS_DIR

    hook = Path(__file__).resolve().parents[2] / "hooks" / "qemu.d" / "platform-hostdev"
    constants = {t.id: n.value.value for n in ast.parse(hook.read_text()).body
                 if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                 for t in n.targets if isinstance(t, ast.Name)}
    assert constants["OWNERS"] == OWNERS_DIR.lstrip("/")
