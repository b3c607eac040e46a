"""What the .deb holds: files, permissions, conffiles, control fields, generated docs."""
from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

from platform_hostdev.cli.main import build_parser

from tests.support.debpackage import REPO, deb_field, deb_listing

SITE = "/usr/lib/python3/dist-packages"
HOOK = "/etc/libvirt/hooks/qemu.d/platform-hostdev"
VDSM_HOOK = "/usr/libexec/vdsm/hooks/before_vm_start/50_platform_hostdev"
MAN = "/usr/share/man/man1/platform-hostdev.1.gz"
COMPLETION = "/usr/share/bash-completion/completions/platform-hostdev"
UDEV_RULE = "/usr/lib/udev/rules.d/60-platform-hostdev.rules"
UNIT = "/lib/systemd/system/platform-hostdev-reserve.service"
# Where the package may put files
ALLOWED = ("/etc/libvirt/hooks/qemu.d/", "/usr/bin/", f"{SITE}/", "/usr/libexec/vdsm/hooks/",
           "/usr/share/man/man1/", "/usr/share/bash-completion/completions/",
           "/usr/share/doc/platform-hostdev/", UDEV_RULE, UNIT)


def _version() -> str:
    match = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text())
    assert match is not None
    return match.group(1)


def _member(deb: Path, path: str) -> bytes:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    return subprocess.run(["tar", "-xOf", "-", f".{path}"], input=tar, capture_output=True,
                          check=True).stdout


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_name_version_architecture(deb: Path) -> None:
    assert deb.name == f"platform-hostdev_{_version()}_all.deb"
    assert deb_field(deb, "Package") == "platform-hostdev"
    assert deb_field(deb, "Version") == _version()
    assert deb_field(deb, "Architecture") == "all"


def test_depends_on_debians_python_libraries(deb: Path) -> None:
    depends = {d.strip().split()[0] for d in deb_field(deb, "Depends").split(",")}
    assert {"python3-lxml", "python3-pyudev", "python3-libvirt"} <= depends
    assert "python3:any" in depends or "python3" in depends


def test_hooks_are_root_owned_executables(deb: Path) -> None:
    listing = deb_listing(deb)
    for path in (HOOK, VDSM_HOOK, "/usr/bin/platform-hostdev"):
        assert listing[path] == ("-rwxr-xr-x", "root/root"), path
    for path in (MAN, COMPLETION, UDEV_RULE, UNIT):
        assert listing[path] == ("-rw-r--r--", "root/root"), path
    assert "/etc/libvirt/hooks/qemu" not in listing  # VDSM's on oVirt hosts: never ours


def test_files_stay_where_the_package_may_put_them(deb: Path) -> None:
    files = [p for p, (mode, _) in deb_listing(deb).items() if not mode.startswith("d")]
    assert files and all(p.startswith(ALLOWED) for p in files), \
        [p for p in files if not p.startswith(ALLOWED)]


def test_the_hook_is_a_conffile_run_by_debians_python(deb: Path) -> None:
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True,
                               text=True, check=True).stdout.split()
    assert conffiles == [HOOK]
    text = _member(deb, HOOK).decode()
    assert text.splitlines()[0] == "#!/usr/bin/python3 -S"
    assert 'PACKAGE_PATH = ()' in text and 'HOST_ROOT = "/"' in text
    assert text == (REPO / "hooks/qemu.d/platform-hostdev").read_text()
    vdsm = _member(deb, VDSM_HOOK).decode()
    assert vdsm == (REPO / "hooks/vdsm/before_vm_start/50_platform_hostdev").read_text()
    assert vdsm.startswith("#!/usr/bin/python3\n")


def test_the_reservation_rule_and_unit_are_the_trees_and_the_unit_is_enabled(deb: Path) -> None:
    assert _member(deb, UDEV_RULE) == (REPO / "debian/udev/60-platform-hostdev.rules").read_bytes()
    assert _member(deb, UNIT) == \
        (REPO / "debian/systemd/platform-hostdev-reserve.service").read_bytes()
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True,
                              text=True, check=True).stdout
    assert "deb-systemd-helper" in postinst and "platform-hostdev-reserve.service" in postinst


def test_every_module_and_schema_is_installed(deb: Path) -> None:
    listing = deb_listing(deb)
    plugin = REPO / "plugin"
    modules = sorted(str(p.relative_to(plugin)) for p in plugin.rglob("*.py")
                     if "__pycache__" not in p.parts)
    assert len(modules) > 50
    missing = [m for m in modules if f"{SITE}/{m}" not in listing]
    assert not missing
    for module in modules:
        assert listing[f"{SITE}/{module}"] == ("-rw-r--r--", "root/root"), module
    schemas = sorted(p.name for p in (REPO / "xml_schemas").glob("*.rng"))
    assert {"hostdev.rng", "metadata.rng"} <= set(schemas)
    for name in schemas:
        path = f"{SITE}/platform_hostdev/xml_schemas/{name}"
        assert _member(deb, path) == (REPO / "xml_schemas" / name).read_bytes(), name


def test_man_page_is_generated_from_the_parser(deb: Path) -> None:
    page = gzip.decompress(_member(deb, MAN)).decode()
    assert page.startswith('.TH PLATFORM-HOSTDEV 1 ')
    assert f'"platform-hostdev {_version()}"' in page.splitlines()[0]
    assert re.search(r"^\.SH NAME\nplatform-hostdev \\- \S", page, re.M)
    for command in _commands():
        assert re.search(rf"\\fI\\,{re.escape(command)}\\/\\fR", page), command
    assert "/etc/libvirt/hooks/qemu.d/platform\\-hostdev" in page


def test_bash_completion_is_generated_from_the_parser(deb: Path) -> None:
    script = _member(deb, COMPLETION).decode()
    match = re.search(r"^_shtab_platform_hostdev_subparsers=\(([^)]*)\)", script, re.M)
    assert match is not None
    assert sorted(w.strip("'") for w in match.group(1).split()) == _commands()
    assert re.search(r"^complete .*-F _shtab_platform_hostdev platform-hostdev$", script, re.M)


def test_maintainer_scripts_restart_nothing(deb: Path) -> None:
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True,
                              text=True, check=True).stdout
    assert "restart libvirtd" in postinst  # the administrator is told ...
    commands = [line.strip() for line in postinst.splitlines()
                if line.strip() and not line.strip().startswith(("#", "echo"))]
    # ... and nothing runs it (the lines are shell syntax, not commands of a service manager)
    assert not [c for c in commands if re.match(r"(systemctl|invoke-rc\.d|service|"
                                                r"deb-systemd-invoke)\b", c)], commands


def test_lintian_reported_no_errors(deb: Path) -> None:
    report = (deb.parent / "lintian.txt").read_text()
    assert not [line for line in report.splitlines() if line.startswith("E:")], report
