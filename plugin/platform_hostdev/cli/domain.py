"""Domain commands, like virsh's, for domains with platform hostdevs.

``define``, ``translate``, ``dumpxml``, ``attach-device``, ``detach-device``
and ``edit``. Every command that talks to libvirt takes ``-c/--connect URI``
(default: LIBVIRT_DEFAULT_URI, else qemu:///system; :mod:`connect`); tests
inject the connection as ``Context.conn``, the QEMU probe through the
context's Host and the editor as ``Context.run_editor`` (argv -> exit code).
The work is the library's (:func:`platform_hostdev.prepare_domain`,
:func:`platform_hostdev.define_domain`); this module reads files, talks to
the user and prints.

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
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lxml import etree

import platform_hostdev as api
from platform_hostdev.cli.connect import add_connect_option, connection, connection_uri
from platform_hostdev.cli.main import Context
from platform_hostdev.errors import printable
from platform_hostdev.virt.connection import (
    XML_INACTIVE,
    XML_SECURE,
    is_local_uri,
    libvirt_errors,
    lookup_domain,
)

__all__ = ["configure"]

_NO_HOTPLUG = ("QEMU cannot hot-plug platform devices (sysbus devices have no hotplug handler "
               "and the guest device tree is built once, at start)")


def configure(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments and handler of a domain command."""
    if name == "translate":
        p.add_argument("file", metavar="FILE", help="domain XML in the user form ('-' for stdin)")
        p.add_argument("--reverse", action="store_true",
                       help="libvirt form back to the user form")
        _host_check_option(p)
        p.add_argument("--json", action="store_true", help="XML, hostdevs and warnings as JSON")
        p.set_defaults(handler=cmd_translate)
    elif name == "define":
        p.add_argument("file", metavar="FILE", help="domain XML in the user form")
        add_connect_option(p)
        _host_check_option(p)
        p.set_defaults(handler=cmd_define)
    elif name == "dumpxml":
        p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
        p.add_argument("--inactive", action="store_true", help="the persistent definition")
        p.add_argument("--raw", action="store_true", help="libvirt's XML, untranslated")
        p.add_argument("--json", action="store_true", help="XML and hostdevs as JSON")
        add_connect_option(p)
        p.set_defaults(handler=cmd_dumpxml)
    elif name in ("attach-device", "detach-device"):
        p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
        p.add_argument("file", metavar="FILE", help="a <hostdev type='platform'> element")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--config", action="store_true", help="the persistent definition "
                          "(next boot, when the domain runs)")
        mode.add_argument("--live", action="store_true", help="the running domain (refused: "
                          "no hot-plug)")
        mode.add_argument("--current", action="store_true", help="the current state (default)")
        mode.add_argument("--persistent", action="store_true", help="live and persistent")
        add_connect_option(p)
        _host_check_option(p)
        p.set_defaults(handler=cmd_attach_device if name == "attach-device"
                       else cmd_detach_device)
    elif name == "edit":
        p.add_argument("domain", metavar="DOMAIN", help="domain name or UUID")
        add_connect_option(p)
        _host_check_option(p)
        p.set_defaults(handler=cmd_edit)


def _host_check_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-host-check", action="store_true",
                   help="do not look the devices up on this host (translating for another host)")


# Boundaries and shared steps -------------------------------------------------

def _inventory(args: argparse.Namespace, ctx: Context, uri: str | None) -> api.Inventory | None:
    """The host to check devices against, or None (rule in the module docstring)."""
    if getattr(args, "no_host_check", False):
        return None
    if ctx.dtb is not None:
        return ctx.inventory()
    if uri is not None and not is_local_uri(uri):
        return None
    if not ctx.host.has_device_tree():
        return None
    return ctx.inventory()


def _warn(ctx: Context, warnings: Sequence[str]) -> None:
    for warning in warnings:
        ctx.warn(f"warning: {warning}")


def _read(path: str) -> etree._ElementTree:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise api.HostdevError(f"cannot read {path}: {exc.strerror}", "check the file name",
                               code="file-unreadable", path=path) from None
    return api.parse_xml(data, path)


def _prepare(tree: etree._ElementTree, args: argparse.Namespace, ctx: Context,
             conn: Any | None) -> api.Translation:
    """Forward translation plus the emulator check, warnings printed."""
    from platform_hostdev.virt.qemu_caps import cache_dir

    uri = connection_uri(args, ctx) if conn is not None else None
    prepared = api.prepare_domain(tree, _inventory(args, ctx, uri), ctx.host, conn=conn,
                                  cache=cache_dir(ctx.env, os.geteuid() == 0))
    _warn(ctx, prepared.warnings)
    return prepared.translation


def _define(conn: Any, translation: api.Translation, args: argparse.Namespace,
            ctx: Context) -> Any:
    """Define the libvirt form and (re)generate its guest DT; report the guest DT."""
    inventory = _inventory(args, ctx, connection_uri(args, ctx)) if translation.hostdevs \
        else None
    result = api.define_domain(conn, translation, ctx.host, inventory)
    if result.note is not None:
        ctx.warn(f"note: {result.note}")
    if result.guest_dt is not None:
        ctx.print(f"Guest device tree generated: {result.guest_dt}")
    return result.domain


def _user_form(dom: Any, flags: int) -> etree._ElementTree:
    with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
        xml = dom.XMLDesc(flags)
    return api.backward(api.parse_xml(xml, "the domain XML from libvirt"))


def _affect(args: argparse.Namespace, dom: Any) -> None:
    """Refuse a live change (virsh flag meanings); only the persistent config may change."""
    with libvirt_errors("cannot read the domain state", "check the connection"):
        active = bool(dom.isActive())
    name = dom.name()
    if args.live:
        raise api.HostdevError(f"--live refused for domain {name}: {_NO_HOTPLUG}",
                               "use --config and restart the domain",
                               code="hotplug-unsupported", domain=name)
    if active and (args.persistent or not args.config):
        flag = "--persistent" if args.persistent else "--current"
        raise api.HostdevError(f"domain {name} is running and {flag} includes a live change: "
                               f"{_NO_HOTPLUG}",
                               "use --config: the change then takes effect at the next boot",
                               code="hotplug-unsupported", domain=name)


def _hostdev_file(path: str) -> tuple[etree._Element, api.PlatformHostdev]:
    root = _read(path).getroot()
    if not api.is_platform_hostdev(root):
        raise api.XmlError(f"{path} holds <{root.tag}>, not <hostdev type='platform'>",
                       "this command handles platform hostdevs; use virsh attach-device "
                           "for other devices", path=path)
    return root, api.PlatformHostdev.from_element(root, path)


def _hostdev_json(model: api.PlatformHostdev) -> dict[str, Any]:
    return {"dt_path": model.dt_path, "name": model.name, "managed": model.managed,
            "alias": model.alias, "mmap": model.mmap, "irqfd": model.irqfd,
            "mmap_timeout_ms": model.mmap_timeout_ms}


# Handlers ---------------------------------------------------------------------

def cmd_translate(args: argparse.Namespace, ctx: Context) -> int:
    if args.file == "-":
        import sys

        tree = api.parse_xml(sys.stdin.buffer.read(), "standard input")
    else:
        tree = _read(args.file)
    if args.reverse:
        result = api.backward(tree)
        data: dict[str, Any] = {"xml": api.to_string(result), "warnings": []}
    else:
        translation = api.forward(tree, _inventory(args, ctx, None))
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
    conn = connection(args, ctx)
    translation = _prepare(tree, args, ctx, conn)
    dom = _define(conn, translation, args, ctx)
    ctx.print(f"Domain '{dom.name()}' defined from {args.file}")
    return 0


def cmd_dumpxml(args: argparse.Namespace, ctx: Context) -> int:
    conn = connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    flags = XML_INACTIVE if args.inactive else 0
    if args.raw:
        with libvirt_errors("cannot read the domain XML", "check the domain and the connection"):
            xml = dom.XMLDesc(flags)
        tree = api.parse_xml(xml, "the domain XML from libvirt")
    else:
        tree = _user_form(dom, flags)
    from platform_hostdev.guestdt.store import guest_dt_store

    with libvirt_errors("cannot read the domain UUID", "check the connection"):
        uuid = dom.UUIDString()
    record = guest_dt_store(ctx.host).load_record(uuid) or {}
    chains = {d.get("name"): d for d in record.get("devices", []) if isinstance(d, dict)}
    if args.json:
        models = [api.PlatformHostdev.from_element(e) for e in
                  api.platform_hostdev_elements(api.backward(tree).getroot())]
        ctx.print_json({"domain": dom.name(), "xml": api.to_string(tree),
                        "hostdevs": [_hostdev_json(m) for m in models],
                        "guest_dt": record.get("devices", [])})
    else:
        if not args.raw:
            _annotate_chains(tree, chains)
        ctx.out.write(api.to_string(tree))
    return 0


def _annotate_chains(tree: etree._ElementTree, chains: dict[Any, dict[str, Any]]) -> None:
    """A comment in each platform hostdev: host DT -> VFIO -> guest address/SPI -> guest DT."""
    for element in api.platform_hostdev_elements(tree.getroot()):
        model = api.PlatformHostdev.from_element(element)
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
        comment = etree.Comment(printable(text).replace("--", "- -"))  # DT names: escaped
        comment.tail = element.text
        element.insert(0, comment)


def _change_config(args: argparse.Namespace, ctx: Context, edit: Callable[
        [etree._ElementTree, etree._Element, api.PlatformHostdev, api.Inventory | None], None],
        done: str) -> int:
    element, model = _hostdev_file(args.file)
    conn = connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    _affect(args, dom)
    tree = _user_form(dom, XML_INACTIVE | XML_SECURE)
    edit(tree, element, model, _inventory(args, ctx, connection_uri(args, ctx)))
    _define(conn, _prepare(tree, args, ctx, conn), args, ctx)
    ctx.print(done)
    with libvirt_errors("cannot read the domain state", "check the connection"):
        active = bool(dom.isActive())
    if active:
        ctx.print(f"note: domain {dom.name()} is running; the change takes effect at its next "
                  "boot (platform devices cannot be hot-plugged)")
    return 0


def cmd_attach_device(args: argparse.Namespace, ctx: Context) -> int:
    def attach(tree: etree._ElementTree, element: etree._Element, model: api.PlatformHostdev,
               inventory: api.Inventory | None) -> None:
        api.add_device(tree.getroot(), element)

    return _change_config(args, ctx, attach, "Device attached successfully")


def cmd_detach_device(args: argparse.Namespace, ctx: Context) -> int:
    def detach(tree: etree._ElementTree, element: etree._Element, model: api.PlatformHostdev,
               inventory: api.Inventory | None) -> None:
        wanted = _device_keys(model, inventory)
        matches = [e for e in api.platform_hostdev_elements(tree.getroot())
                   if wanted & _device_keys(api.PlatformHostdev.from_element(e), inventory)]
        if not matches:
            raise api.HostdevError(f"domain {args.domain} has no platform hostdev {model.label}",
                                   f"'platform-hostdev dumpxml {args.domain}' lists its "
                                   "hostdevs", code="device-not-found", domain=args.domain)
        if len(matches) > 1:
            raise api.HostdevError(f"{model.label} matches {len(matches)} hostdevs of "
                                   f"{args.domain}", "give both <devicetree path> and "
                                   "<device name>", code="duplicate-device",
                                   domain=args.domain)
        api.remove_device(matches[0])

    return _change_config(args, ctx, detach, "Device detached successfully")


def _device_keys(model: api.PlatformHostdev, inventory: api.Inventory | None) -> set[str]:
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
    import subprocess

    try:
        return subprocess.call(list(argv))
    except OSError as exc:
        raise api.HostdevError(f"cannot run the editor {argv[0]}: {exc.strerror}",
                               "set EDITOR (or VISUAL) to an installed editor",
                               code="editor-failed", editor=argv[0]) from None


def cmd_edit(args: argparse.Namespace, ctx: Context) -> int:
    conn = connection(args, ctx)
    dom = lookup_domain(conn, args.domain)
    name = dom.name()
    original = api.to_string(_user_form(dom, XML_INACTIVE | XML_SECURE))
    fd, path = tempfile.mkstemp(prefix=f"platform-hostdev-{name}-", suffix=".xml")
    with os.fdopen(fd, "w") as f:
        f.write(original)
    editor = ctx.env.get("VISUAL") or ctx.env.get("EDITOR") or "vi"
    run_editor = ctx.run_editor or _run_editor
    keep = True
    try:
        status = run_editor([*shlex.split(editor), path])
        if status != 0:
            raise api.HostdevError(f"the editor exited with status {status}; domain {name} "
                                   "was not changed", f"your edit is kept in {path}",
                                   code="editor-failed", domain=name, path=path)
        edited = Path(path).read_text()
        if edited == original:
            keep = False
            ctx.print(f"Domain '{name}' XML configuration not changed.")
            return 0
        try:
            _define(conn, _prepare(api.parse_xml(edited.encode(), path), args, ctx, conn),
                    args, ctx)
        except api.HostdevError as exc:
            raise api.HostdevError(f"{exc.what}; domain {name} was not changed",
                                   f"{exc.fix}; your edit is kept in {path}", code=exc.code,
                                   **{**exc.data, "domain": name, "path": path}) from None
        keep = False
        ctx.print(f"Domain '{name}' XML configuration edited.")
        return 0
    finally:
        if not keep:
            os.unlink(path)
