"""Files shipped with the package: the RelaxNG schemas and the hook executables.

setup.py installs the top-level ``xml_schemas/`` and ``hooks/`` of the source
tree as the data packages ``platform_hostdev.xml_schemas`` and
``platform_hostdev.hookfiles``. Code running from a source tree
(``plugin/platform_hostdev``, e.g. a git worktree beside an editable install
of another checkout) reads that tree's own copies, so it never pairs its code
with another checkout's schemas or hook; an installed package reads its data
packages.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["shipped_dir"]

_SOURCE = {"platform_hostdev.xml_schemas": "xml_schemas", "platform_hostdev.hookfiles": "hooks"}


def shipped_dir(package: str) -> Path:
    """The directory of a data package (a key of the table above)."""
    top = Path(__file__).resolve().parents[2]
    if (top / "plugin" / "platform_hostdev").is_dir() and (top / _SOURCE[package]).is_dir():
        return top / _SOURCE[package]
    from importlib import resources  # lazily: its import costs the hook ~5 ms

    return Path(str(resources.files(package)))
