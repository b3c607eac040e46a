"""Fuzzing the DTB readers: only the HostdevError family may escape, never a traceback.

Deterministic (derandomize=True, no example database) and bounded, so a run
is reproducible and quick.

* Mutated real DTBs: a blob that still parses is pushed through the whole
  model (naming, devices, correlation) under the same rule.
* Generated malformed trees (:func:`dt_trees`): random nesting with sibling
  names that repeat, names too long, names with ESC, newlines and BEL; the
  properties every reader interprets (``#address-cells``, ``#size-cells``,
  ``#interrupt-cells``, ``#clock-cells``, ``reg``, ``ranges``,
  ``interrupt-map`` and its mask, ``interrupts-extended``, phandles, ...)
  holding small, boundary and huge cell values (0x10000000, 0xFFFFFFFF:
  the issue-12 allocation bombs), raw bytes or hostile strings (control
  characters, U+FFFE, bidi overrides). Each is run through nodedev-list,
  show and nodedev-dumpxml of the command line (in-process: an exception
  other than HostdevError fails the test with its traceback) and the
  model's correlation; every line printed must be printable and every XML
  document must parse.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from platform_hostdev.cli.discovery import render_correlation
from platform_hostdev.domain.nodedev import nodedev_xml
from platform_hostdev.dt.fdt import RawNode, build_dtb, parse_dtb
from platform_hostdev.dt.naming import predict_devices
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError, HostdevError
from platform_hostdev.host.inventory import Device
from platform_hostdev.host.pagesize import dtb_page_size
from platform_hostdev.vfio.correlate import correlate

from tests.support.boards import run_cli
from tests.support.fdtwriter import cells, strings

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                     min_size=1, max_size=8)
cuts = st.one_of(st.none(), st.floats(0, 1, exclude_max=True))


def mutate(blob: bytes, edits: list[tuple[float, int]], cut: float | None) -> bytes:
    data = bytearray(blob)
    for where, value in edits:
        data[int(where * len(data))] = value
    return bytes(data if cut is None else data[:int(cut * len(data))])


def through_the_model(blob: bytes) -> None:
    try:
        tree = DeviceTree(parse_dtb(blob, "fuzz.dtb"), "fuzz.dtb")
        for predicted in predict_devices(tree):
            try:
                correlate(tree, Device(predicted.name, predicted.bus, predicted.dt_path, ()),
                          dtb_page_size(None))
            except DeviceTreeError:
                pass
    except DeviceTreeError as exc:
        assert exc.what.startswith("node "), exc.what


@FUZZ
@given(edits=mutations, cut=cuts)
def test_mutated_qemu_virt_dtb(virt_dtb: Path, edits: list[tuple[float, int]],
                               cut: float | None) -> None:
    through_the_model(mutate(virt_dtb.read_bytes(), edits, cut))


@FUZZ
@given(edits=mutations, cut=cuts)
def test_mutated_header_and_structure(kernel_dtbs: Path, edits: list[tuple[float, int]],
                                      cut: float | None) -> None:
    blob = (kernel_dtbs / "arm/juno.dtb").read_bytes()
    # concentrate the edits on the header and the first structure block bytes
    head = mutate(blob[:256], edits, None)
    through_the_model(mutate(head + blob[256:], [], cut))


# cell values: small counts, phandles of the generated nodes, the kernel's boundaries, bombs
CELL = st.one_of(st.integers(0, 4), st.integers(1, 8), st.sampled_from(
    [15, 16, 17, 0x10000000, 0x7FFFFFFF, 0xFFFFFFFF]))
PIECES = st.sampled_from(list("abz,-@.09") + ["\x1b[31m", "\n", "\x07", "\r", "\ufffe",
                                              "\u202e", "\x9b", "\x7f"])
HOSTILE = st.lists(PIECES, max_size=8).map("".join)
COMPATIBLES = st.sampled_from(["simple-bus", "arm,gic-400", "arm,cortex-a15-gic", "arm,pl061",
                               "arm,primecell", "fixed-clock", "v,dev", "ns16550a",
                               "arm,gic-v3", "simple-mfd"])
CELL_PROPS = ["#address-cells", "#size-cells", "#interrupt-cells", "#clock-cells",
              "#gpio-cells", "#reset-cells", "reg", "ranges", "dma-ranges", "interrupt-map",
              "interrupt-map-mask", "interrupt-parent", "interrupts", "interrupts-extended",
              "clocks", "resets", "gpios", "mask", "iommus", "#iommu-cells"]
VALUES = {
    **{prop: st.lists(CELL, max_size=20).map(lambda v: cells(*v)) for prop in CELL_PROPS},
    "compatible": st.one_of(st.lists(COMPATIBLES, min_size=1, max_size=3),
                            st.lists(HOSTILE, min_size=1, max_size=2)).map(
                                lambda v: strings(*v)),
    "status": st.sampled_from([strings("okay"), strings("disabled"), b"ok", b""]),
    "interrupt-controller": st.just(b""),
    "device_type": st.sampled_from([strings("pci"), strings("memory")]),
    "model": HOSTILE.map(lambda v: strings(v)),
}
RAW = st.binary(max_size=9)  # now and then raw bytes where a reader expects cells or strings
# names: mostly distinct, now and then a sibling's twin or one with control characters
NAMES = st.one_of(
    st.builds("{}@{:x}".format, st.sampled_from(["dev", "intc", "bus", "uart", "gpio", "clk"]),
              st.integers(0, 0xFFFFF)),
    st.builds("{}@{:x}".format, st.sampled_from(["dev", "intc", "bus", "uart", "gpio", "clk"]),
              st.integers(0, 0xFFFFF)),
    st.sampled_from(["dev@1000", "n", "x@0,1"]),
    st.lists(PIECES, min_size=1, max_size=6).map("".join))
PROPS = st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: st.one_of(VALUES[k], VALUES[k], VALUES[k], RAW)
                                        for k in keys}))


def _ascii(name: str) -> str:
    return name if name.isascii() else name.encode("ascii", "backslashreplace").decode()


def _board(root_props: dict[str, bytes], soc_props: dict[str, bytes], soc: list[RawNode],
           top: list[RawNode]) -> RawNode:
    """A GIC board (phandle 1) with a simple-bus holding ``soc`` (each a device unless it
    says otherwise) and ``top`` beside it; every node without one gets the next phandle,
    so the cells 1..8 the generator draws mostly name a node."""
    for child in soc:
        child.properties.setdefault("compatible", strings("v,dev"))
    gic = RawNode("intc@8000000", {"compatible": strings("arm,gic-400"),
                                   "#interrupt-cells": cells(3), "interrupt-controller": b"",
                                   "phandle": cells(1), "reg": cells(0x8000000, 0x10000)})
    bus = RawNode("soc", {"compatible": strings("simple-bus"), "#address-cells": cells(1),
                          "#size-cells": cells(1), "ranges": b"", **soc_props}, soc)
    root = RawNode("", {"#address-cells": cells(1), "#size-cells": cells(1),
                        "interrupt-parent": cells(1), **root_props}, [gic, *top, bus])
    stack, number = [root], 2
    while stack:
        node = stack.pop()
        if "phandle" not in node.properties:
            node.properties["phandle"] = cells(number)
            number += 1
        stack.extend(reversed(node.children))
    return root


def dt_trees() -> st.SearchStrategy[RawNode]:
    """Root nodes of generated malformed boards (see the module docstring)."""
    leaves = st.builds(lambda n, p: RawNode(_ascii(n), p), NAMES, PROPS)

    def parents(children: st.SearchStrategy[list[RawNode]]) -> st.SearchStrategy[RawNode]:
        return st.builds(lambda n, p, c: RawNode(_ascii(n), p, c), NAMES, PROPS, children)

    nodes = st.recursive(leaves, lambda inner: parents(st.lists(inner, max_size=3)),
                         max_leaves=12)
    return st.builds(_board, PROPS, PROPS, st.lists(nodes, max_size=5),
                     st.lists(nodes, max_size=3))


GENERATED = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow,
                                            HealthCheck.data_too_large])


def _printable(text: str) -> bool:
    return all(line.isprintable() for line in text.splitlines())


def through_commands_and_model(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.dtb"
        path.write_bytes(blob)
        listing = run_cli("--dtb", str(path), "nodedev-list", "--json")
        assert listing.code in (0, 1) and _printable(listing.err), listing.err
        if listing.code == 1:
            error = json.loads(listing.out)["error"]
            assert error["code"] == "dt-malformed" and error["what"].startswith("node ")
            event(f"refused: {error['what'].split(': ', 1)[1][:40]}")
            return
        devices = json.loads(listing.out)
        event(f"listed {min(len(devices), 3)}+ devices")
        for entry in devices[:6]:
            for argv in (["show", entry["dt_path"]], ["nodedev-dumpxml", entry["dt_path"]]):
                result = run_cli("--dtb", str(path), *argv)
                assert result.code in (0, 1), (argv, result.err)
                assert _printable(result.out) and _printable(result.err)
                event(f"{argv[0]} exit {result.code}")
                if argv[0] == "nodedev-dumpxml" and result.code == 0:
                    etree.fromstring(result.out.encode())
    tree = DeviceTree.from_blob(blob, "fuzz.dtb")
    for predicted in predict_devices(tree):
        try:
            node = tree.node(predicted.dt_path)
            device = Device(predicted.name, predicted.bus, predicted.dt_path, node.compatible)
            correlation = correlate(tree, device, dtb_page_size(None))
        except HostdevError:
            continue
        assert _printable(render_correlation(correlation))
        etree.fromstring(nodedev_xml(device, correlation).encode())
        json.dumps(correlation.to_json())


@GENERATED
@given(root=dt_trees())
def test_generated_malformed_trees_give_only_hostdev_errors(root: RawNode) -> None:
    through_commands_and_model(build_dtb(root))
