"""The package's imports point one way: a module imports only its own layer and those below.

Layers, bottom up: errors <- dt <- shipped (where the schemas and the hook
files are) <- host <- vfio <- binding <- virt <- domain <- guestdt <- hook <-
checkhost <- the package's public API (platform_hostdev itself) <- cli <-
__main__. So dt imports nothing of the package but errors and
nothing but ``python -m platform_hostdev`` imports cli. Within vfio, the uapi
tables import nothing of the package and the correlation reads only them, not
the ioctl client. Every import counts: at module level, inside functions,
under ``if TYPE_CHECKING:``, in ``try`` blocks, relative ones, and module names
written as strings (the command table of cli.main).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = "platform_hostdev"
SOURCE = Path(__file__).resolve().parents[2] / "plugin" / PACKAGE
LAYERS = ("errors", "dt", "shipped", "host", "vfio", "binding", "virt", "domain", "guestdt", "hook",
          "checkhost", "api", "cli", "main")
# (importer, imported) pairs refused although the layers allow them
FORBIDDEN = (
    ("platform_hostdev.vfio.correlate", "platform_hostdev.vfio.client"),
    ("platform_hostdev.vfio.uapi", "platform_hostdev"),
)
_MODULE_STRING = re.compile(rf"{PACKAGE}(\.\w+)+")


class Import(NamedTuple):
    importer: str      # dotted module name
    imported: str      # dotted module name (a module of the package)
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    """The layer of a module of the package; KeyError names a module no layer holds."""
    parts = module.split(".")
    if parts == [PACKAGE]:
        return "api"
    top = parts[1]
    if top == "__main__":
        return "main"
    if top not in LAYERS or top in ("api", "main"):
        raise KeyError(f"{module} is in no layer: add {top!r} to LAYERS in {__file__}")
    return top


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, importer: str, is_package: bool, known: set[str]) -> Iterator[Import]:
    """Every reference to a module of the package in one module's source."""
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, is_package, node)
            # "from pkg.vfio import client" imports the module pkg.vfio.client
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _MODULE_STRING.fullmatch(node.value) and node.value in known:
            names = [node.value]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                yield Import(importer, name, getattr(node, "lineno", 0))


def violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """What is wrong with the imports of ``modules`` (name -> (source, is_package))."""
    known = set(modules)
    found = []
    for importer, (source, is_package) in sorted(modules.items()):
        for imp in sorted(set(imports_of(source, importer, is_package, known))):
            here, there = layer(imp.importer), layer(imp.imported)
            where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
            if LAYERS.index(there) > LAYERS.index(here):
                found.append(f"{where}: layer {there} is above {here}")
            for low, high in FORBIDDEN:
                if imp.importer == low and (imp.imported == high
                                            or imp.imported.startswith(high + ".")):
                    found.append(f"{where}: {low} must not import {high}")
    return found


def package_modules() -> dict[str, tuple[str, bool]]:
    return {module_name(path, SOURCE): (path.read_text(), path.name == "__init__.py")
            for path in sorted(SOURCE.rglob("*.py"))}


def test_the_package_has_modules_in_every_layer_it_names() -> None:
    modules = package_modules()
    assert len(modules) > 50
    assert {layer(m) for m in modules} >= set(LAYERS) - {"api"}


def test_no_import_points_up() -> None:
    assert violations(package_modules()) == []


def _fake(sources: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """A package of these modules (names below platform_hostdev) and a few empty ones."""
    modules = {f"{PACKAGE}.{name}": (text, False) for name, text in sources.items()}
    modules.setdefault(f"{PACKAGE}.cli.hook", ("", False))
    modules.setdefault(f"{PACKAGE}.vfio.client", ("", False))
    modules.setdefault(f"{PACKAGE}.errors", ("", False))
    return modules


@pytest.mark.parametrize("source", [
    "from platform_hostdev.cli.hook import HOOK_DIR\n",
    "import platform_hostdev.cli.hook\n",
    "def f():\n    from platform_hostdev.cli.hook import render_hook\n",
    "from typing import TYPE_CHECKING\n"
    "if TYPE_CHECKING:\n    from platform_hostdev.cli import hook\n",
    "try:\n    from ..cli.hook import x\nexcept ImportError:\n    pass\n",
    "MODULES = ('platform_hostdev.cli.hook',)\n",
])
def test_an_upward_import_is_seen_wherever_it_is_written(source: str) -> None:
    found = violations(_fake({"checkhost.model": source}))
    assert found and "layer cli is above checkhost" in found[0]


@pytest.mark.parametrize("source, allowed", [
    ("from platform_hostdev.errors import HostdevError\n", True),
    ("from platform_hostdev.host.fs import HostFs\n", False),
    ("import platform_hostdev\n", False),
])
def test_dt_imports_only_errors(source: str, allowed: bool) -> None:
    modules = _fake({"dt.tree": source})
    modules[f"{PACKAGE}.host.fs"] = ("", False)
    assert (violations(modules) == []) is allowed


def test_the_correlation_reads_the_uapi_tables_not_the_client() -> None:
    assert violations(_fake({"vfio.correlate": "from .uapi import flag_bit\n",
                                   "vfio.uapi": ""})) == []
    found = violations(_fake({"vfio.correlate": "from platform_hostdev.vfio.client import x\n"}))
    assert found == ["platform_hostdev.vfio.correlate (line 1) imports "
                     "platform_hostdev.vfio.client: platform_hostdev.vfio.correlate must not "
                     "import platform_hostdev.vfio.client"]
    assert violations(_fake({"vfio.uapi": "from platform_hostdev.errors import E\n"}))


def test_nothing_but_the_entry_point_imports_cli() -> None:
    assert violations(_fake({"__main__": "from platform_hostdev.cli.main import main\n",
                                   "cli.main": ""})) == []
    assert violations(_fake({"hook.qemu": "from platform_hostdev.cli import main\n",
                                   "cli.main": ""}))


def test_a_module_in_no_layer_is_named() -> None:
    with pytest.raises(KeyError, match="'shiny'"):
        violations(_fake({"shiny.thing": "from platform_hostdev.errors import E\n"}))
