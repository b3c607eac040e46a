"""The libvirt config parser check-host reads qemu.conf with, and its pure checks."""
from __future__ import annotations

import pytest
from platform_hostdev.checkhost.conf import (
    DEFAULT_DEVICE_ACL,
    ConfSyntaxError,
    QemuConf,
    parse_conf,
    qemu_conf_checks,
)
from platform_hostdev.checkhost.model import FAIL, PASS, WARN, Check, exit_code
from platform_hostdev.host.fs import HostFs

STOCK = """\
# Master configuration file for the QEMU driver.
# All settings described here are optional - if omitted, sensible
# defaults are used.

#user = "root"
#cgroup_device_acl = [
#    "/dev/null", "/dev/full", "/dev/zero",
#]
"""


def test_stock_file_of_comments_only_is_empty() -> None:
    assert parse_conf(STOCK) == {}


def test_scalars_strings_ints_and_separators() -> None:
    text = 'user = "libvirt-qemu"\ngroup=\'kvm\'; max_files = 32768\nnote = """a\nb"""\n'
    assert parse_conf(text) == {"user": "libvirt-qemu", "group": "kvm", "max_files": 32768,
                                "note": "a\nb"}


def test_multiline_list_with_comments_and_trailing_comma() -> None:
    text = ('cgroup_device_acl = [\n  "/dev/null", # the bit bucket\n\n  "/dev/vfio/vfio",\n'
            ']\nnamespaces = [ ]\n')
    assert parse_conf(text) == {"cgroup_device_acl": ["/dev/null", "/dev/vfio/vfio"],
                                "namespaces": []}


def test_no_escapes_in_strings_as_virconf() -> None:
    assert parse_conf('path = "C:\\\\x"') == {"path": "C:\\\\x"}


@pytest.mark.parametrize(("text", "line", "problem"), [
    ('user "x"\n', 1, "expected '='"),
    ('\n\nuser = \n', 3, "expected a value"),
    ('acl = [ "a" "b" ]\n', 1, "expected ',' or ']'"),
    ('acl = [ "a",\n', 2, "expected a value"),
    ('user = "x" group = "y"\n', 1, "unexpected 'group'"),
    ('user = "unterminated\n', 1, "unexpected '\"'"),
    ('= 1\n', 1, "expected a setting name"),
])
def test_syntax_errors_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(ConfSyntaxError) as caught:
        parse_conf(text, "qemu.conf")
    assert f"qemu.conf line {line}: " in caught.value.what
    assert problem in caught.value.what
    assert "libvirtd refuses" in caught.value.fix


def test_acl_unset_means_defaults_and_fix_keeps_them(tmp_path: object) -> None:
    fs = HostFs(str(tmp_path))
    checks = qemu_conf_checks(fs, QemuConf({}, False), ["3"], for_domain=True)
    acl = next(c for c in checks if c.check == "qemu.conf cgroup_device_acl")
    assert acl.status == FAIL
    assert "/dev/vfio/vfio, /dev/vfio/3 missing from libvirt's default list" in acl.finding
    for entry in (*DEFAULT_DEVICE_ACL, "/dev/vfio/vfio", "/dev/vfio/3"):
        assert f'"{entry}"' in acl.fix


def test_acl_replacing_defaults_is_a_warning(tmp_path: object) -> None:
    conf = QemuConf({"cgroup_device_acl": ["/dev/vfio/vfio", "/dev/vfio/3", "/dev/foo"]}, True)
    checks = qemu_conf_checks(HostFs(str(tmp_path)), conf, ["3"], for_domain=True)
    acl = checks[0]
    assert acl.status == WARN and "lacks /dev/null" in acl.finding
    assert '"/dev/foo"' in acl.fix  # the user's own entries are kept


def test_acl_without_domain_only_warns(tmp_path: object) -> None:
    checks = qemu_conf_checks(HostFs(str(tmp_path)), QemuConf({}, False), [], for_domain=False)
    assert checks[0].status == WARN


def test_bad_namespaces_value_fails(tmp_path: object) -> None:
    checks = qemu_conf_checks(HostFs(str(tmp_path)), QemuConf({"namespaces": "mount"}, True), [],
                              for_domain=False)
    assert next(c for c in checks if c.check == "qemu.conf namespaces").status == FAIL


def test_check_lines_and_exit_code() -> None:
    ok = Check("a", PASS, "fine", "ignored")
    bad = Check("b", FAIL, "broken", "do this")
    assert ok.lines() == ["PASS: a: fine"]
    assert bad.lines() == ["FAIL: b: broken", "      fix: do this"]
    assert exit_code([ok]) == 0 and exit_code([ok, bad]) == 1
    assert bad.to_json() == {"check": "b", "status": "FAIL", "finding": "broken", "fix": "do this"}
