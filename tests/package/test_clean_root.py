"""The .deb installed by apt into a clean minimal Debian root, used there as an admin would."""
from __future__ import annotations

import re

from tests.package.cleanroot import CleanRoot
from tests.package.test_deb_contents import _commands
from tests.support.domains import libvirt_domain, user_domain

SITE = "/usr/lib/python3/dist-packages"
PLAIN = "<domain type='qemu'><name>plain</name><devices/></domain>\n"

# Completion as bash runs it on <TAB>: bash-completion loads the file by the command's
# name on first use (no one sources it), then the function it registered is called
# with COMP_WORDS/COMP_CWORD set for the words typed so far.
COMPLETE = r"""
. /usr/share/bash-completion/bash_completion
if complete -p platform-hostdev 2>/dev/null; then echo "loaded too early"; exit 3; fi
__load_completion platform-hostdev || { echo "no completion found"; exit 4; }
spec=$(complete -p platform-hostdev) || exit 5
echo "SPEC $spec"
func=${spec#*-F }; func=${func%% *}
ask() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    "$func" platform-hostdev "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    echo "ASK $*|$(printf '%s ' "${COMPREPLY[@]}")"
}
ask platform-hostdev ""
ask platform-hostdev nodedev-
ask platform-hostdev nodedev-list --b
ask platform-hostdev nodedev-list --bus ""
ask platform-hostdev hook ""
"""


def _ok(root: CleanRoot, argv: list[str], **kw: object) -> str:
    done = root.run(argv, **kw)  # type: ignore[arg-type]
    assert done.returncode == 0, f"{argv} exit {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_apt_installed_it_with_debians_libraries(clean_root: CleanRoot) -> None:
    assert re.search(r"Setting up platform-hostdev \(\S+\)", clean_root.log)
    assert "restart libvirtd" in clean_root.log  # the postinst's word to the admin
    status = _ok(clean_root, ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n",
                              "platform-hostdev", "python3-lxml", "python3-pyudev",
                              "python3-libvirt"])
    assert sorted(status.split("\n")[:-1]) == [
        "platform-hostdev ii ", "python3-libvirt ii ", "python3-lxml ii ", "python3-pyudev ii "]
    where = _ok(clean_root, ["python3", "-c", "import platform_hostdev, lxml, pyudev, libvirt;"
                             "print(platform_hostdev.__file__, lxml.__file__, pyudev.__file__)"])
    assert all(path.startswith(f"{SITE}/") for path in where.split()), where


def test_help(clean_root: CleanRoot) -> None:
    out = _ok(clean_root, ["platform-hostdev", "--help"])
    assert out.startswith("usage: platform-hostdev")
    for command in _commands():
        assert command in out


def test_man_page(clean_root: CleanRoot) -> None:
    where = _ok(clean_root, ["man", "-w", "platform-hostdev"]).strip()
    assert where == "/usr/share/man/man1/platform-hostdev.1.gz"
    page = _ok(clean_root, ["man", "-P", "cat", "platform-hostdev"], env={"MANWIDTH": "100"})
    assert re.search(r"^NAME\n\s+platform-hostdev\s+-\s+device-tree\s+platform", page, re.M), page
    assert "SYNOPSIS" in page and "FILES" in page
    for command in _commands():
        assert f"platform-hostdev {command}" in page, command
    # man-db's index (built by its trigger when the package was installed) has the entry
    assert _ok(clean_root, ["whatis", "platform-hostdev"]).startswith(
        "platform-hostdev (1)")


def test_bash_completion(clean_root: CleanRoot) -> None:
    out = _ok(clean_root, ["bash", "-c", COMPLETE])
    spec = [line for line in out.splitlines() if line.startswith("SPEC ")]
    assert spec and spec[0].endswith(" platform-hostdev"), out
    answers = dict(line[4:].split("|", 1) for line in out.splitlines()
                   if line.startswith("ASK "))
    assert sorted(answers["platform-hostdev "].split()) == _commands()
    assert sorted(answers["platform-hostdev nodedev-"].split()) == sorted(
        c for c in _commands() if c.startswith("nodedev-"))
    assert answers["platform-hostdev nodedev-list --b"].split() == ["--bus"]
    assert sorted(answers["platform-hostdev nodedev-list --bus "].split()) == ["amba",
                                                                              "platform"]
    assert sorted(answers["platform-hostdev hook "].split()) == ["install", "uninstall"]


def test_packaged_qemu_hook_runs_under_debians_python(clean_root: CleanRoot) -> None:
    hook = "/etc/libvirt/hooks/qemu.d/platform-hostdev"
    plain = clean_root.run([hook, "plain", "prepare", "begin", "-"], stdin=PLAIN)
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, "", "")
    # A domain with a platform hostdev takes the slow path: the module is imported from
    # dist-packages, and the device (the clean root has no /sys) is refused with our reason.
    xml = libvirt_domain("pkg-refused", ["ff0e0000.ethernet"]).decode()
    refused = clean_root.run([hook, "pkg-refused", "prepare", "begin", "-"], stdin=xml)
    assert refused.returncode != 0
    assert refused.stderr == (
        "platform-hostdev: prepare of domain pkg-refused refused: no platform or amba device "
        "named ff0e0000.ethernet on this host\n"
        "platform-hostdev: hint: check the name with 'platform-hostdev nodedev-list'\n")


def test_packaged_vdsm_hook_adds_the_device(clean_root: CleanRoot) -> None:
    hook = "/usr/libexec/vdsm/hooks/before_vm_start/50_platform_hostdev"
    vm = user_domain("pkg-vdsm", [])
    (clean_root.path / "tmp/vm.xml").write_text(vm)
    untouched = clean_root.run([hook], env={"_hook_domxml": "/tmp/vm.xml"})
    assert untouched.returncode == 0 and (clean_root.path / "tmp/vm.xml").read_text() == vm
    done = clean_root.run([hook], env={"_hook_domxml": "/tmp/vm.xml",
                                       "platform_hostdev": "ff0e0000.ethernet"})
    assert done.returncode == 0, done.stderr
    assert "vfio-platform,host=ff0e0000.ethernet" in (clean_root.path / "tmp/vm.xml").read_text()
