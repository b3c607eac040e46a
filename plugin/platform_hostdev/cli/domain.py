"""Domain commands, like virsh's, for domains with platform hostdevs.

``define``, ``translate``, ``dumpxml``, ``attach-device``, ``detach-device``
and ``edit``. Every command that talks to libvirt takes ``-c/--connect URI``
(default: LIBVIRT_DEFAULT_URI, else qemu:///system); tests inject the
connection as ``Context.conn``, a process runner as ``ctx.extras["runner"]``
(argv -> stdout, for the QEMU probe) and the editor as
``ctx.extras["run_editor"]`` (argv -> exit code).

Flags follow virsh: ``--config`` changes the persistent definition (on a
running domain it takes effect at next boot), ``--current`` (the default)
the current state, ``--persistent`` both, ``--live`` the running domain.
Platform devices cannot be hot-plugged (QEMU's sysbus has no hotplug
handler and the guest DT is built once), so every live change is refused.

Host check rule (see :mod:`validate`): devices are checked against the host
when it has a device tree (or ``--dtb`` is given) and the connection is
local; ``--no-host-check`` turns the check off. Otherwise a warning says the
devices were not checked.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lxml import etree

from platform_hostdev.cli.main import Context
from platform_hostdev.domain.hostdev import (
    PlatformHostdev,
    XmlError,
    is_platform_hostdev,
    parse_xml,
)
from platform_hostdev.domain.translate import (
    Translation,
    add_device,
    backward,
    forward,
    platform_hostdev_elements,
    remove_device,
    to_string,
)
from platform_hostdev.domain.validate import check_emulator, domain_emulator
from platform_hostdev.errors import HostdevError
from platform_hostdev.host.fs import DT_BASE, HostFs
from platform_hostdev.host.inventory import Inventory
from platform_hostdev.virt.connection import (
    XML_INACTIVE,
    XML_SECURE,
    default_uri,
    define_domain,
    is_local_uri,
    libvirt_errors,
    lookup_domain,
    open_connection,
)
from platform_hostdev.virt.qemu_caps import cache_dir, probe, run_process

__all__ = ["register"]

_NO_HOTPLUG = ("QEMU cannot hot-plug platform devices (sysbus devices have no hotplug handler "
               "and the guest device tree is built once, at start)")


def register(sub: Any) -> None:
    p = sub.add_parser("translate", help="print the libvirt form of a domain XML (offline)")
    p.add_argument("file", metavar="FILE", help="domain XML in the user form ('-' for stdin)")
    p.add_argument("--reverse", action="store_true", help="libvirt form back to the user form")
    _host_check_option(p)
    p.add_argument("--json", action="store_true", help="XML, hostdevs and warnings as JSON")
    p.set_defaults(handler=cmd_translate)

    p = sub.add_parser("define", help="define a domain from an XML file with platform hostdevs")
    p.add_argument("file", metavar="FILE", help="domain XML in the user form")
    _connect_option(p)
    _host_check_option(p)
    p.set_defaults(handler=cmd_define)

    p = sub.add_parser("dumpxml", help="a domain's XML in the user form")
    p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
    p.add_argument("--inactive", action="store_true", help="the persistent definition")
    p.add_argument("--raw", action="store_true", help="libvirt's XML, untranslated")
    p.add_argument("--json", action="store_true", help="XML and hostdevs as JSON")
    _connect_option(p)
    p.set_defaults(handler=cmd_dumpxml)

    for name, handler, verb in (("attach-device", cmd_attach_device, "add"),
                                ("detach-device", cmd_detach_device, "remove")):
        p = sub.add_parser(name, help=f"{verb} a platform hostdev (XML file) to/from a domain")
        p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
        p.add_argument("file", metavar="FILE", help="a <hostdev type='platform'> element")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--config", action="store_true", help="the persistent definition "
                          "(next boot, when the domain runs)")
        mode.add_argument("--live", action="store_true", help="the running domain (refused: "
                          "no hot-plug)")
        mode.add_argument("--current", action="store_true", help="the current state (default)")
        mode.add_argument("--persistent", action="store_true", help="live and persistent")
        _connect_option(p)
        _host_check_option(p)
        p.set_defaults(handler=handler)

    p = sub.add_parser("edit", help="edit a domain's XML in the user form with $EDITOR")
    p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
    _connect_option(p)
    _host_check_option(p)
    p.set_defaults(handler=cmd_edit)


def _connect_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--connect", metavar="URI", default=None,
                   help="libvirt URI (default: $LIBVIRT_DEFAULT_URI or qemu:///system)")


def _host_check_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-host-check", action="store_true",
                   help="do not look the devices up on this host (translating for another host)")


# Boundaries and shared steps -------------------------------------------------

def _uri(args: argparse.Namespace, ctx: Context) -> str:
    return args.connect or default_uri(ctx.env)


def _connection(args: argparse.Namespace, ctx: Context) -> Any:
    if ctx.conn is None:
        ctx.conn = open_connection(_uri(args, ctx))
    return ctx.conn


def _inventory(args: argparse.Namespace, ctx: Context, uri: str | None) -> Inventory | None:
    """The host to check devices against, or None (rule in the module docstring)."""
    if getattr(args, "no_host_check", False):
        return None
    if ctx.dtb is not None:
        return ctx.inventory()  # type: ignore[no-any-return,unused-ignore]
    if uri is not None and not is_local_uri(uri):
        return None
    if not HostFs(ctx.root).path("/" + DT_BASE).is_dir():
        return None
    return ctx.inventory()  # type: ignore[no-any-return,unused-ignore]


def _warn(ctx: Context, warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=ctx.err)


def _read(path: str) -> etree._ElementTree:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HostdevError(f"cannot read {path}: {exc.strerror}", "check the file name") from None
    return parse_xml(data, path)


def _prepare(tree: etree._ElementTree, args: argparse.Namespace, ctx: Context,
             conn: Any | None) -> Translation:
    """Forward translation plus the emulator check, warnings printed."""
    uri = _uri(args, ctx) if conn is not None else None
    translation = forward(tree, _inventory(args, ctx, uri))
    warnings = list(translation.warnings)
    if translation.hostdevs:
        emulator = domain_emulator(translation.tree.getroot(), conn)
        if emulator is not None and not os.path.exists(emulator):
            warnings.append(f"the emulator {emulator} is not on this machine; it was not "
                            "checked for vfio-platform")
        else:
            runner: Callable[[Sequence[str]], str] = ctx.extras.get("runner", run_process)
            cache = cache_dir(ctx.env, os.geteuid() == 0)
            warnings += check_emulator(emulator, lambda e: probe(e, runner, cache))
    _warn(ctx, warnings)
    return translation


def _define(conn: Any, translation: Translation, args: argparse.Namespace | None = None,
            ctx: Context | None = None) -> Any:
    """Define the libvirt form; with args/ctx, then (re)generate its guest DT (sync)."""
    dom = define_domain(conn, translation.xml(), "libvirt refused the domain",
                        "fix the domain XML as libvirt's message says; nothing was changed")
    if args is not None and ctx is not None and translation.hostdevs:
        _sync(conn, dom, args, ctx)
    return dom


def _sync(conn: Any, dom: Any, args: argparse.Namespace, ctx: Context) -> None:
    """The guest device tree, generated through libvirt right after a definition."""
    from platform_hostdev.cli.guestdt import store_for
    from platform_hostdev.guestdt.sync import sync_domain

    name = dom.name()
    inventory = _inventory(args, ctx, _uri(args, ctx))
    if inventory is None:
        print(f"note: no guest device tree was generated (the devices were not checked on "
              f"this host); run 'platform-hostdev sync {name}' on the host before starting "
              "the domain", file=ctx.err)
        return
    with libvirt_errors("cannot read the defined domain", "check the connection"):
        xml = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
    try:
        result = sync_domain(conn, parse_xml(xml, "the defined domain"), inventory,
                             store_for(ctx))
    except HostdevError as exc:
        raise HostdevError(f"domain {name} was defined, but its guest device tree cannot be "
                           f"generated: {exc.what}", exc.fix) from None
    define_domain(conn, to_string(result.tree), "libvirt refused the domain with its guest DTB",
                  f"run 'platform-hostdev sync {name}' to retry")
    if result.dtb_path is not None:
        ctx.print(f"Guest device tree generated: {result.dtb_path}")


def _user_form(dom: Any, flags: int) -> etree._ElementTree:
    with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
        xml = dom.XMLDesc(flags)
    return backward(parse_xml(xml, "the domain XML from libvirt"))


def _affect(args: argparse.Namespace, dom: Any) -> None:
    """Refuse a live change (virsh flag meanings); only the persistent config may change."""
    with libvirt_errors("cannot read the domain state", "check the connection"):
        active = bool(dom.isActive())
    name = dom.name()
    if args.live:
        raise HostdevError(f"--live refused for domain {name}: {_NO_HOTPLUG}",
                           "use --config and restart the domain")
    if active and (args.persistent or not args.config):
        flag = "--persistent" if args.persistent else "--current"
        raise HostdevError(f"domain {name} is running and {flag} includes a live change: "
                           f"{_NO_HOTPLUG}",
                           "use --config: the change then takes effect at the next boot")


def _hostdev_file(path: str) -> tuple[etree._Element, PlatformHostdev]:
    root = _read(path).getroot()
    if not is_platform_hostdev(root):
        raise XmlError(f"{path} holds <{root.tag}>, not <hostdev type='platform'>",
                       "this command handles platform hostdevs; use virsh attach-device "
                       "for other devices")
    return root, PlatformHostdev.from_element(root, path)


def _hostdev_json(model: PlatformHostdev) -> dict[str, Any]:
    return {"dt_path": model.dt_path, "name": model.name, "managed": model.managed,
            "alias": model.alias, "mmap": model.mmap, "irqfd": model.irqfd,
            "mmap_timeout_ms": model.mmap_timeout_ms}


# Handlers ---------------------------------------------------------------------

def cmd_translate(args: argparse.Namespace, ctx: Context) -> int:
    if args.file == "-":
        import sys

        tree = parse_xml(sys.stdin.buffer.read(), "standard input")
    else:
        tree = _read(args.file)
    if args.reverse:
        result = backward(tree)
        data: dict[str, Any] = {"xml": to_string(result), "warnings": []}
    else:
        translation = forward(tree, _inventory(args, ctx, None))
        if not args.json:
            _warn(ctx, translation.warnings)
        data = {"xml": translation.xml(), "warnings": translation.warnings,
                "hostdevs": [dict(_hostdev_json(h.hostdev), host_name=h.name, qemu_model=h.model,
                                  checked=h.checked) for h in translation.hostdevs]}
    if args.json:
        ctx.print_json(data)
    else:
        ctx.out.write(data["xml"])
    return 0


def cmd_define(args: argparse.Namespace, ctx: Context) -> int:
    tree = _read(args.file)
    conn = _connection(args, ctx)
    translation = _prepare(tree, args, ctx, conn)
    dom = _define(conn, translation, args, ctx)
    ctx.print(f"Domain '{dom.name()}' defined from {args.file}")
    return 0


def cmd_dumpxml(args: argparse.Namespace, ctx: Context) -> int:
    conn = _connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    flags = XML_INACTIVE if args.inactive else 0
    if args.raw:
        with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
            xml = dom.XMLDesc(flags)
        tree = parse_xml(xml, "the domain XML from libvirt")
    else:
        tree = _user_form(dom, flags)
    from platform_hostdev.cli.guestdt import store_for

    with libvirt_errors("cannot read the domain UUID", "check the connection"):
        uuid = dom.UUIDString()
    record = store_for(ctx).load_record(uuid) or {}
    chains = {d.get("name"): d for d in record.get("devices", []) if isinstance(d, dict)}
    if args.json:
        models = [PlatformHostdev.from_element(e) for e in
                  platform_hostdev_elements(backward(tree).getroot())]
        ctx.print_json({"domain": dom.name(), "xml": to_string(tree),
                        "hostdevs": [_hostdev_json(m) for m in models],
                        "guest_dt": record.get("devices", [])})
    else:
        if not args.raw:
            _annotate_chains(tree, chains)
        ctx.out.write(to_string(tree))
    return 0


def _annotate_chains(tree: etree._ElementTree, chains: dict[Any, dict[str, Any]]) -> None:
    """A comment in each platform hostdev: host DT -> VFIO -> guest address/SPI -> guest DT."""
    for element in platform_hostdev_elements(tree.getroot()):
        model = PlatformHostdev.from_element(element)
        chain = chains.get(model.name) or next(
            (c for c in chains.values() if c.get("host_path") == model.dt_path), None)
        if chain is None:
            continue
        parts = [f"region {r['vfio_index']} 0x{r['host_address']:x}+0x{r['size']:x} -> "
                 f"0x{r['guest_address']:x}" for r in chain.get("regions", [])]
        parts += [f"irq {i['vfio_index']} {i['host_line']} -> SPI {i['guest_spi']} "
                  f"{i['trigger']}" for i in chain.get("irqs", [])]
        text = (f" guest: {chain.get('host_path')} [{'; '.join(parts)}] as "
                f"{chain.get('guest_path')} ")
        comment = etree.Comment(text.replace("--", "- -"))
        comment.tail = element.text
        element.insert(0, comment)


def _change_config(args: argparse.Namespace, ctx: Context, edit: Callable[
        [etree._ElementTree, etree._Element, PlatformHostdev, Inventory | None], None],
        done: str) -> int:
    element, model = _hostdev_file(args.file)
    conn = _connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    _affect(args, dom)
    tree = _user_form(dom, XML_INACTIVE | XML_SECURE)
    edit(tree, element, model, _inventory(args, ctx, _uri(args, ctx)))
    _define(conn, _prepare(tree, args, ctx, conn), args, ctx)
    ctx.print(done)
    with libvirt_errors("cannot read the domain state", "check the connection"):
        active = bool(dom.isActive())
    if active:
        ctx.print(f"note: domain {dom.name()} is running; the change takes effect at its next "
                  "boot (platform devices cannot be hot-plugged)")
    return 0


def cmd_attach_device(args: argparse.Namespace, ctx: Context) -> int:
    def attach(tree: etree._ElementTree, element: etree._Element, model: PlatformHostdev,
               inventory: Inventory | None) -> None:
        add_device(tree.getroot(), element)

    return _change_config(args, ctx, attach, "Device attached successfully")


def cmd_detach_device(args: argparse.Namespace, ctx: Context) -> int:
    def detach(tree: etree._ElementTree, element: etree._Element, model: PlatformHostdev,
               inventory: Inventory | None) -> None:
        wanted = _device_keys(model, inventory)
        matches = [e for e in platform_hostdev_elements(tree.getroot())
                   if wanted & _device_keys(PlatformHostdev.from_element(e), inventory)]
        if not matches:
            raise HostdevError(f"domain {args.domain} has no platform hostdev {model.label}",
                               f"'platform-hostdev dumpxml {args.domain}' lists its hostdevs")
        if len(matches) > 1:
            raise HostdevError(f"{model.label} matches {len(matches)} hostdevs of {args.domain}",
                               "give both <devicetree path> and <device name>")
        remove_device(matches[0])

    return _change_config(args, ctx, detach, "Device detached successfully")


def _device_keys(model: PlatformHostdev, inventory: Inventory | None) -> set[str]:
    keys = {f"name:{model.name}"} if model.name else set()
    if model.dt_path:
        keys.add(f"path:{model.dt_path}")
    if inventory is not None:
        for spec in (model.name, model.dt_path):
            device = inventory.by_name.get(spec or "") or inventory.by_path.get(spec or "")
            if device is not None:
                keys.add(f"name:{device.name}")
    return keys


def _run_editor(argv: Sequence[str]) -> int:
    try:
        return subprocess.call(list(argv))
    except OSError as exc:
        raise HostdevError(f"cannot run the editor {argv[0]}: {exc.strerror}",
                           "set EDITOR (or VISUAL) to an installed editor") from None


def cmd_edit(args: argparse.Namespace, ctx: Context) -> int:
    conn = _connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    name = dom.name()
    original = to_string(_user_form(dom, XML_INACTIVE | XML_SECURE))
    fd, path = tempfile.mkstemp(prefix=f"platform-hostdev-{name}-", suffix=".xml")
    with os.fdopen(fd, "w") as f:
        f.write(original)
    editor = ctx.env.get("VISUAL") or ctx.env.get("EDITOR") or "vi"
    run_editor: Callable[[Sequence[str]], int] = ctx.extras.get("run_editor", _run_editor)
    keep = True
    try:
        status = run_editor([*shlex.split(editor), path])
        if status != 0:
            raise HostdevError(f"the editor exited with status {status}; domain {name} was "
                               "not changed", f"your edit is kept in {path}")
        edited = Path(path).read_text()
        if edited == original:
            keep = False
            ctx.print(f"Domain '{name}' XML configuration not changed.")
            return 0
        try:
            _define(conn, _prepare(parse_xml(edited.encode(), path), args, ctx, conn), args, ctx)
        except HostdevError as exc:
            raise HostdevError(f"{exc.what}; domain {name} was not changed",
                               f"{exc.fix}; your edit is kept in {path}") from None
        keep = False
        ctx.print(f"Domain '{name}' XML configuration edited.")
        return 0
    finally:
        if not keep:
            os.unlink(path)
