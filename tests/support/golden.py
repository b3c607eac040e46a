"""Golden files: compare an output with tests/golden/<name>, or rewrite it on request."""
from __future__ import annotations

import difflib
from pathlib import Path

__all__ = ["GOLDEN_DIR", "check_golden"]

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def check_golden(name: str, actual: str, update: bool) -> None:
    """Assert ``actual`` equals tests/golden/``name``; with ``update`` write it instead.

    A missing golden file is a failure (run pytest with --update-golden once,
    review the new file, commit it).
    """
    path = GOLDEN_DIR / name
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.is_file():
        raise AssertionError(f"golden file {path} is missing: run pytest with --update-golden "
                             "and review the file it writes")
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"golden/{name}", "actual", n=2))
        raise AssertionError(f"output differs from golden/{name} (rerun with --update-golden "
                             f"if the change is intended):\n{diff[:6000]}")
