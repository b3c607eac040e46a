"""The public API (platform_hostdev/__init__.py) and the Host boundary built in one place."""
from __future__ import annotations

import ast
import inspect
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import platform_hostdev
import pytest
from platform_hostdev.cli import main as cli
from platform_hostdev.host.boundary import Host, host_at, live_host
from platform_hostdev.host.uevents import SynchronousWaiter, UdevWaiter

PACKAGE = Path(platform_hostdev.__file__).parent
PLUGIN = PACKAGE.parent
REPO = PLUGIN.parent
VDSM_HOOK = REPO / "hooks" / "vdsm" / "before_vm_start" / "50_platform_hostdev"


def _imported(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``code`` (beyond its own start)."""
    probe = ("import sys; before = set(sys.modules); " + code +
             "; print('\\n'.join(sorted(set(sys.modules) - before)))")
    done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(PLUGIN)}, check=True)
    return set(done.stdout.split())


def test_all_is_the_export_table_and_every_name_loads() -> None:
    exports = platform_hostdev._EXPORTS
    assert platform_hostdev.__all__ == sorted(exports)
    for name in platform_hostdev.__all__:
        value = getattr(platform_hostdev, name)
        assert getattr(value, "__module__", platform_hostdev._H + exports[name]).startswith(
            "platform_hostdev"), name
    with pytest.raises(AttributeError):
        platform_hostdev.no_such_name  # noqa: B018


def test_mypy_sees_every_public_name() -> None:
    """The TYPE_CHECKING imports name exactly the public names, from where they live."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", None) == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert seen == {name: platform_hostdev._H + module
                    for name, module in platform_hostdev._EXPORTS.items()}


def test_public_functions_and_classes_have_docstrings() -> None:
    missing = []
    for name in platform_hostdev.__all__:
        obj = getattr(platform_hostdev, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            doc = obj.__doc__ or ""
            if not doc.strip() or doc.startswith(f"{name}("):  # a NamedTuple's default doc
                missing.append(name)
    assert missing == []


def test_import_of_the_package_loads_nothing_else() -> None:
    """Only what its own two lines need (typing, which the hook loads anyway)."""
    assert _imported("import platform_hostdev") - _imported("import typing") == {
        "platform_hostdev", "__future__"}


def test_the_hook_does_not_load_the_api() -> None:
    """import platform_hostdev.hook.qemu stays as cheap as before the API: the package's
    __init__ adds nothing, and nothing of the API's modules comes along."""
    ours = {m for m in _imported("import platform_hostdev.hook.qemu")
            if m.startswith("platform_hostdev")}
    assert ours == {
        "platform_hostdev", "platform_hostdev.errors", "platform_hostdev.hook",
        "platform_hostdev.hook.qemu", "platform_hostdev.hook.env",
        "platform_hostdev.hook.giveback", "platform_hostdev.binding",
        "platform_hostdev.binding.journal", "platform_hostdev.binding.ownership",
        "platform_hostdev.binding.preflight", "platform_hostdev.host",
        "platform_hostdev.host.attributes", "platform_hostdev.host.boundary",
        "platform_hostdev.host.fs", "platform_hostdev.host.kmsg",
        "platform_hostdev.host.processes", "platform_hostdev.host.specs",
        "platform_hostdev.host.statefiles", "platform_hostdev.host.uevents",
        # the rules the hook shares with the commands (light: no lxml, no dataclasses)
        "platform_hostdev.domain", "platform_hostdev.domain.rules",
        "platform_hostdev.vfio", "platform_hostdev.vfio.groups", "platform_hostdev.vfio.uapi",
    }


def test_the_vdsm_hook_uses_only_the_public_api() -> None:
    imports = set()
    for node in ast.walk(ast.parse(VDSM_HOOK.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
        elif isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
    assert {m for m in imports if m.startswith("platform_hostdev")} == {"platform_hostdev"}


def test_the_live_or_fake_decision_is_made_once() -> None:
    """host_at() alone tells the live host from another root; clocks and kill(pid, 0)
    are read through the Host (host/boundary.py) everywhere."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "boundary.py":
            continue
        text = path.read_text()
        for needle in ('realpath(', "time.time", "time.monotonic", "time.sleep", "os.kill",
                       "import time"):
            if needle in text and not (needle == "realpath(" and '== "/"' not in text):
                offenders.append(f"{path.relative_to(PACKAGE)}: {needle}")
    assert offenders == []


def test_the_live_host_and_a_host_below_another_root(tmp_path: Path) -> None:
    live = host_at("/")
    assert live.live and isinstance(live.waiter, UdevWaiter)
    assert live.modprobe is not None and live.qemu_probe is not None and live.dumpdtb is not None
    assert live.observer is None  # production never observes steps
    fake = host_at(tmp_path)
    assert not fake.live and isinstance(fake.waiter, SynchronousWaiter)
    assert fake.modprobe is None  # modprobe would load into this machine's kernel
    assert fake.root == tmp_path
    assert host_at(tmp_path / ".." / tmp_path.name).root == tmp_path / ".." / tmp_path.name
    assert repr(live_host()) == "Host(root='/', live=True)"


def test_replace_keeps_every_other_boundary(tmp_path: Path) -> None:
    host = host_at(tmp_path)
    later = host.replace(clock=lambda: 1e12)
    assert later.clock() == 1e12 and host.clock() < 1e12
    assert (later.fs, later.waiter, later.qemu_probe) == (host.fs, host.waiter, host.qemu_probe)
    assert isinstance(later, Host)


def test_context_builds_its_host_from_the_root_once(tmp_path: Path) -> None:
    ctx = cli.Context(root=str(tmp_path), out=io.StringIO())
    assert ctx.host is ctx.host and ctx.host.root == tmp_path and not ctx.host.live
    injected = host_at(tmp_path)
    assert cli.Context(host=injected).host is injected


def test_connect_is_declared_once() -> None:
    declared = [p.relative_to(PACKAGE) for p in sorted(PACKAGE.rglob("*.py"))
                if '"--connect"' in p.read_text()]
    assert declared == [Path("cli/connect.py")]
    for command in ("define", "dumpxml", "attach-device", "detach-device", "edit",
                    "check-host", "sync"):
        parser = cli.build_parser([command])
        action = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        flags = {f for a in action._actions for f in a.option_strings}
        assert {"-c", "--connect"} <= flags, command


def test_every_command_configures_and_help_lists_them_all() -> None:
    parser = cli.build_parser(None)
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(choices) == list(cli.COMMANDS)
    out = io.StringIO()
    sys_stdout = sys.stdout
    try:
        sys.stdout = out
        assert cli.main(["--help"], cli.Context(out=out)) == 0
    finally:
        sys.stdout = sys_stdout
    assert all(name in out.getvalue() for name in cli.COMMANDS)


def test_only_the_command_run_is_imported(tmp_path: Path) -> None:
    loaded = _imported("from platform_hostdev.cli.main import build_parser; "
                       "build_parser(['nodedev-list'])")
    assert "platform_hostdev.cli.discovery" in loaded
    assert not {"platform_hostdev.cli.domain", "platform_hostdev.cli.checkhost",
                "platform_hostdev.cli.binding", "lxml", "lxml.etree"} & loaded


def test_define_and_sync_print_nothing(mocker: object, tmp_path: Path) -> None:
    """The library functions return their results; only the CLI prints."""
    from platform_hostdev.domain.hostdev import parse_xml

    from tests.support.golden import GOLDEN_DIR

    conn = mocker.Mock(name="virConnect")  # type: ignore[attr-defined]
    dom = conn.defineXMLFlags.return_value
    dom.name.return_value = "guest1"
    tree = parse_xml((GOLDEN_DIR / "translate" / "basic-in.xml").read_text(), "basic")
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    try:
        sys.stdout, sys.stderr = out, err
        host = host_at(tmp_path).replace(qemu_probe=lambda argv: (
            "QEMU emulator version 10.0.2\n" if argv[-1] == "--version"
            else 'name "vfio-platform", bus System\n'))
        prepared = platform_hostdev.prepare_domain(tree, None, host)
        result = platform_hostdev.define_domain(conn, prepared.translation, host, None)
    finally:
        sys.stdout, sys.stderr = saved
    assert (out.getvalue(), err.getvalue()) == ("", "")
    assert result.name == "guest1" and result.guest_dt is None
    assert result.note is not None and "platform-hostdev sync guest1" in result.note
    assert any("not checked on a host" in w or "not checked" in w for w in prepared.warnings)
    json.dumps(prepared.warnings)
