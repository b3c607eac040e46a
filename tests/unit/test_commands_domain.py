"""Domain commands against a pytest-mock libvirt connection: calls, flags, refusals."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import libvirt
import pytest
from platform_hostdev.cli import main as cli
from platform_hostdev.domain.hostdev import parse_xml
from platform_hostdev.domain.translate import forward
from platform_hostdev.host.boundary import host_at
from platform_hostdev.virt.connection import DEFINE_VALIDATE, XML_INACTIVE, XML_SECURE

from tests.support.golden import GOLDEN_DIR

BASIC = (GOLDEN_DIR / "translate" / "basic-in.xml").read_text()
DEVICE_HELP = 'name "vfio-platform", bus System, desc "VFIO-based platform device assignment"\n'
HOSTDEV = "<hostdev type='platform'><source><device name='fe000000.gpio'/></source></hostdev>"


def _runner(help_text: str = DEVICE_HELP, version: str = "10.0.2") -> Any:
    def run(argv: list[str]) -> str:
        return f"QEMU emulator version {version}\n" if "--version" in argv else help_text
    return run


def _ctx(mocker: Any, tmp_path: Path, running: bool = False, xml: str | None = None,
         runner: Any = None) -> tuple[cli.Context, Any, Any]:
    conn = mocker.Mock(name="virConnect")
    dom = mocker.Mock(name="virDomain")
    dom.name.return_value = "guest1"
    dom.UUIDString.return_value = "5f0c2a8e-0000-4000-8000-00000000beef"
    dom.isActive.return_value = 1 if running else 0
    dom.XMLDesc.return_value = xml if xml is not None else forward(
        parse_xml(BASIC, "b"), None).xml()
    conn.lookupByName.return_value = dom
    conn.defineXMLFlags.return_value = dom
    ctx = cli.Context(root=str(tmp_path), out=io.StringIO(), err=io.StringIO(),
                      env={"PLATFORM_HOSTDEV_CACHE": str(tmp_path / "cache")},
                      conn=conn,
                      host=host_at(tmp_path).replace(qemu_probe=runner or _runner()))
    return ctx, conn, dom


def _emulator(tmp_path: Path) -> str:
    fake = tmp_path / "qemu-system-aarch64"
    fake.write_text("")
    return str(fake)


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_define_translates_and_validates(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    src = _file(tmp_path, "d.xml", BASIC.replace("/usr/bin/qemu-system-aarch64",
                                                 _emulator(tmp_path)))
    assert cli.main(["define", src], ctx) == 0
    xml, flags = conn.defineXMLFlags.call_args.args
    assert flags == DEFINE_VALIDATE
    assert "vfio-platform,host=ff0e0000.ethernet" in xml and "type='platform'" not in xml
    err = ctx.err.getvalue()  # type: ignore[attr-defined]
    assert "deprecates vfio-platform" in err and "not checked on a host" in err
    assert "Domain 'guest1' defined" in ctx.out.getvalue()  # type: ignore[attr-defined]


def test_define_refuses_qemu_without_vfio_platform(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path, runner=_runner('name "virtio-net-device"\n', "10.2.0"))
    src = _file(tmp_path, "d.xml", BASIC.replace("/usr/bin/qemu-system-aarch64",
                                                 _emulator(tmp_path)))
    assert cli.main(["define", src], ctx) == 1
    assert "pin QEMU 10.1.x" in ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_qemu_probe_is_cached(mocker: Any, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    inner = _runner()

    def run(argv: list[str]) -> str:
        calls.append(argv)
        return inner(argv)
    ctx, conn, _ = _ctx(mocker, tmp_path, runner=run)
    src = _file(tmp_path, "d.xml", BASIC.replace("/usr/bin/qemu-system-aarch64",
                                                 _emulator(tmp_path)))
    assert cli.main(["define", src], ctx) == 0
    assert cli.main(["define", src], ctx) == 0
    assert len(calls) == 2  # --version and -device help, once
    assert conn.defineXMLFlags.call_count == 2


BAD_INPUTS = {
    "malformed": "<domain><name>x</name>",
    "xxe": "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
           "<domain><name>&x;</name></domain>",
    "laughs": "<!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><domain>&b;</domain>",
    "unknown-element": BASIC.replace("<alias name='ua-eth0'/>", "<alias name='ua-eth0'/><rom/>"),
    "conflict-or-duplicate": BASIC.replace("ff0f0000.serial", "ff0e0000.ethernet"),
    "dotdot": BASIC.replace("ff0f0000.serial", ".."),
    "slash-path": BASIC.replace("/soc/ethernet@ff0e0000", "/soc/../etc"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_define_bad_input_changes_nothing(mocker: Any, tmp_path: Path, case: str) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    assert cli.main(["define", _file(tmp_path, "bad.xml", BAD_INPUTS[case])], ctx) == 1
    assert ctx.err.getvalue().startswith("error: ")  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_translate_both_ways(tmp_path: Path) -> None:
    ctx = cli.Context(root=str(tmp_path), out=io.StringIO(), err=io.StringIO())
    src = _file(tmp_path, "d.xml", BASIC)
    assert cli.main(["translate", src], ctx) == 0
    out = ctx.out.getvalue()  # type: ignore[attr-defined]
    assert "qemu:commandline" in out
    back = cli.Context(root=str(tmp_path), out=io.StringIO(), err=io.StringIO())
    assert cli.main(["translate", "--reverse", _file(tmp_path, "o.xml", out)], back) == 0
    assert "type=\"platform\"" in back.out.getvalue()  # type: ignore[attr-defined]
    js = cli.Context(root=str(tmp_path), out=io.StringIO(), err=io.StringIO())
    assert cli.main(["translate", "--json", src], js) == 0
    assert '"qemu_model": "vfio-platform"' in js.out.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv, flags", [(["dumpxml", "guest1"], 0),
                                         (["dumpxml", "guest1", "--inactive"], XML_INACTIVE)])
def test_dumpxml_user_form(mocker: Any, tmp_path: Path, argv: list[str], flags: int) -> None:
    ctx, conn, dom = _ctx(mocker, tmp_path)
    assert cli.main(argv, ctx) == 0
    dom.XMLDesc.assert_called_once_with(flags)
    out = ctx.out.getvalue()  # type: ignore[attr-defined]
    assert 'type="platform"' in out and "qemu:commandline" not in out


def test_dumpxml_raw(mocker: Any, tmp_path: Path) -> None:
    ctx, _, _ = _ctx(mocker, tmp_path)
    assert cli.main(["dumpxml", "guest1", "--raw"], ctx) == 0
    assert "qemu:commandline" in ctx.out.getvalue()  # type: ignore[attr-defined]


def test_dumpxml_annotation_escapes_what_the_guest_dt_record_says(mocker: Any,
                                                                  tmp_path: Path) -> None:
    """The comment carries host and guest DT paths from the guest-DT record: a control
    character there (a DT name, a hand-edited record) is escaped, never an lxml error."""
    import json

    from lxml import etree

    ctx, _, _ = _ctx(mocker, tmp_path)
    store = tmp_path / "var/lib/platform-hostdev/guest-dt"
    store.mkdir(parents=True)
    (store / "5f0c2a8e-0000-4000-8000-00000000beef.json").write_text(json.dumps({"devices": [{
        "name": "ff0e0000.ethernet", "host_path": "/soc/ethernet@ff0e0000\x1b]0;owned\x07",
        "guest_path": "/platform-bus@c000000/e\ufffe@0", "regions": [], "irqs": []}]}))
    assert cli.main(["dumpxml", "guest1"], ctx) == 0
    out = ctx.out.getvalue()  # type: ignore[attr-defined]
    comments = [c.text for c in etree.fromstring(out.encode()).iter(etree.Comment)]
    assert (" guest: /soc/ethernet@ff0e0000\\x1b]0;owned\\x07 [] as "
            "/platform-bus@c000000/e\\ufffe@0 ") in comments


def test_attach_config_redefines(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, dom = _ctx(mocker, tmp_path)
    assert cli.main(["attach-device", "guest1", _file(tmp_path, "h.xml", HOSTDEV),
                     "--config", "--no-host-check"], ctx) == 0
    dom.XMLDesc.assert_called_with(XML_INACTIVE | XML_SECURE)
    xml = conn.defineXMLFlags.call_args.args[0]
    assert "host=fe000000.gpio,id=phd-2" in xml and "host=ff0e0000.ethernet" in xml


def test_attach_config_on_running_domain_says_next_boot(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path, running=True)
    assert cli.main(["attach-device", "guest1", _file(tmp_path, "h.xml", HOSTDEV),
                     "--config"], ctx) == 0
    assert "next boot" in ctx.out.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_called_once()


@pytest.mark.parametrize("flag, running", [("--live", False), ("--live", True),
                                           ("--current", True), ("--persistent", True)])
def test_live_changes_refused(mocker: Any, tmp_path: Path, flag: str, running: bool) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path, running=running)
    assert cli.main(["attach-device", "guest1", _file(tmp_path, "h.xml", HOSTDEV), flag],
                    ctx) == 1
    assert "hot-plug" in ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_attach_duplicate_refused(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    dup = HOSTDEV.replace("fe000000.gpio", "ff0f0000.serial")
    assert cli.main(["attach-device", "guest1", _file(tmp_path, "h.xml", dup)], ctx) == 1
    assert "appears in two" in ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_attach_non_platform_refused(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    assert cli.main(["attach-device", "guest1", _file(tmp_path, "h.xml", "<disk/>")], ctx) == 1
    conn.lookupByName.assert_not_called()


def test_detach(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    gone = "<hostdev type='platform'><source><device name='ff0f0000.serial'/></source></hostdev>"
    assert cli.main(["detach-device", "guest1", _file(tmp_path, "h.xml", gone)], ctx) == 0
    xml = conn.defineXMLFlags.call_args.args[0]
    assert "ff0f0000.serial" not in xml and "host=ff0e0000.ethernet" in xml


def test_detach_missing_device(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    assert cli.main(["detach-device", "guest1", _file(tmp_path, "h.xml", HOSTDEV)], ctx) == 1
    assert "has no platform hostdev" in ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_edit_unchanged_does_not_define(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    ctx.run_editor = lambda argv: 0
    ctx.env["EDITOR"] = "true"
    assert cli.main(["edit", "guest1"], ctx) == 0
    assert "not changed" in ctx.out.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_edit_changed_defines_and_bad_edit_is_kept(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    seen: list[str] = []

    def editor(argv: list[str]) -> int:
        assert argv[:2] == ["my-editor", "--wait"]
        path = Path(argv[-1])
        seen.append(str(path))
        path.write_text(path.read_text().replace("ff0f0000.serial", "fe000000.gpio"))
        return 0
    ctx.run_editor = editor
    ctx.env["EDITOR"] = "my-editor --wait"
    assert cli.main(["edit", "guest1", "--no-host-check"], ctx) == 0
    assert "host=fe000000.gpio" in conn.defineXMLFlags.call_args.args[0]
    assert not Path(seen[0]).exists()

    def bad(argv: list[str]) -> int:
        Path(argv[-1]).write_text("<domain>")
        return 0
    ctx.run_editor = bad
    conn.defineXMLFlags.reset_mock()
    assert cli.main(["edit", "guest1"], ctx) == 1
    assert "your edit is kept in" in ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.defineXMLFlags.assert_not_called()


def test_libvirt_error_mapped(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    conn.defineXMLFlags.side_effect = libvirt.libvirtError("XML error: bad thing")
    src = _file(tmp_path, "d.xml", BASIC.replace("/usr/bin/qemu-system-aarch64",
                                                 _emulator(tmp_path)))
    assert cli.main(["define", src], ctx) == 1
    err = ctx.err.getvalue()  # type: ignore[attr-defined]
    assert "libvirt refused the domain" in err and "hint:" in err


def test_unknown_domain(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    error = libvirt.libvirtError("no domain")
    mocker.patch.object(error, "get_error_code", return_value=libvirt.VIR_ERR_NO_DOMAIN)
    conn.lookupByName.side_effect = error
    conn.lookupByUUIDString.side_effect = libvirt.libvirtError("no uuid")
    assert cli.main(["dumpxml", "nope"], ctx) == 1
    assert "no domain named 'nope'" in ctx.err.getvalue()  # type: ignore[attr-defined]


def test_metadata_round_trip_in_libvirt_test_driver(tmp_path: Path) -> None:
    """libvirt's own test driver keeps our metadata (and drops qemu:commandline)."""
    conn = libvirt.open("test:///default")
    try:
        result = forward(parse_xml(BASIC, "b"), None)
        dom = conn.defineXMLFlags(result.xml(), 0)
        try:
            xml = dom.XMLDesc(0)
            assert "phd:hostdevs" in xml and "qemu:commandline" not in xml
            from platform_hostdev.domain.translate import backward, platform_hostdev_elements
            back = backward(parse_xml(xml, "libvirt"))
            names = [e.find("source/device").get("name")  # type: ignore[union-attr]
                     for e in platform_hostdev_elements(back.getroot())]
            assert names == ["ff0e0000.ethernet", "ff0f0000.serial"]
            assert back.getroot().find("memoryBacking") is None
        finally:
            dom.undefine()
    finally:
        conn.close()


def test_define_without_a_host_check_says_to_sync_later(mocker: Any, tmp_path: Path) -> None:
    ctx, conn, _ = _ctx(mocker, tmp_path)
    src = _file(tmp_path, "d.xml", BASIC.replace("/usr/bin/qemu-system-aarch64",
                                                 _emulator(tmp_path)))
    assert cli.main(["define", src, "--no-host-check"], ctx) == 0
    assert "run 'platform-hostdev sync guest1' on the host" in ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.domainXMLToNative.assert_not_called()


def test_sync_defines_with_validation_as_define_does(mocker: Any, tmp_path: Path,
                                                     virt_dtb: Path) -> None:
    """'sync DOMAIN' redefined the domain without libvirt's validation (defineXML) while
    the sync that follows 'define' validates: both go through define_domain now."""
    plain = ("<domain type='qemu'><name>guest1</name>"
             "<uuid>5f0c2a8e-0000-4000-8000-00000000beef</uuid>"
             "<os><type arch='aarch64' machine='virt'>hvm</type></os><devices/></domain>")
    ctx, conn, _ = _ctx(mocker, tmp_path, xml=plain)
    ctx.dtb = str(virt_dtb)
    assert cli.main(["sync", "guest1"], ctx) == 0, ctx.err.getvalue()  # type: ignore[attr-defined]
    conn.defineXML.assert_not_called()
    xml, flags = conn.defineXMLFlags.call_args.args
    assert flags == DEFINE_VALIDATE and "<name>guest1</name>" in xml
    assert "needs no generated device tree" in ctx.out.getvalue()  # type: ignore[attr-defined]
