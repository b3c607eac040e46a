#!/usr/bin/env python3
"""Build the API reference of ``platform_hostdev`` from its docstrings with pdoc.

Run from the repository root (scripts/test does, after the lint)::

    .venv/bin/python scripts/api_docs.py [--output build/api]

The HTML lands in ``build/api/`` (``build/api/platform_hostdev.html``; not
committed). The run fails (exit 1) when the package cannot be imported, when
a public name has no docstring of its own, or on any pdoc warning but one:
pdoc evaluates the annotations of a NamedTuple's generated constructor in the
namespace ``collections.namedtuple`` builds, where the module's own names are
missing (the fields and their types are still documented on the class).
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugin"))

_NAMEDTUPLE_INIT = re.compile(r"Error parsing type annotation .* for "
                              r"(platform_hostdev\.[A-Za-z_]+)\.__init__\.")


def _tolerated(message: str) -> bool:
    """A warning about a NamedTuple constructor's annotations (see the docstring)."""
    import platform_hostdev

    match = _NAMEDTUPLE_INIT.match(message)
    if match is None:
        return False
    obj = getattr(platform_hostdev, match[1].rsplit(".", 1)[1], None)
    return isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def undocumented() -> list[str]:
    """Public names without a docstring of their own."""
    import platform_hostdev

    missing = []
    for name in platform_hostdev.__all__:
        obj = getattr(platform_hostdev, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants: documented where they are defined
        doc = obj.__doc__ or ""
        if not doc.strip() or doc.startswith(f"{name}("):  # the default of a NamedTuple,
            missing.append(name)                          # a dataclass
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "build" / "api")
    args = parser.parse_args()
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc("platform_hostdev", output_directory=args.output)
    problems = [str(w.message) for w in caught if not _tolerated(str(w.message))]
    problems += [f"{name} has no docstring" for name in undocumented()]
    for problem in problems:
        print(f"api_docs: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"api_docs: API reference in {args.output}/platform_hostdev.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
