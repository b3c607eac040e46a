"""Fuzzing the DTB parser with mutated real DTBs: only DeviceTreeError may escape.

Deterministic (derandomize=True, no example database) and bounded, so a run
is reproducible and quick. A mutated blob that still parses is pushed through
the whole model (naming, devices, correlation) under the same rule.
"""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from platform_hostdev.dt.fdt import parse_dtb
from platform_hostdev.dt.naming import predict_devices
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError
from platform_hostdev.host.inventory import Device
from platform_hostdev.host.pagesize import dtb_page_size
from platform_hostdev.vfio.correlate import correlate

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
