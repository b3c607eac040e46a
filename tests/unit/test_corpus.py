"""Every DTB of Debian's arm64 6.12 kernel package through the whole DT model.

For each board (one test per DTB, so a failure names it) and each enabled
node with ``reg``: naming, address translation and IRQ decoding; then every
predicted device through correlate(). Only DeviceTreeError may escape, and it
must be located ("node X[, property Y]: ..."). The located errors are
collected (printed in the terminal summary) and must stay few.

Every interrupt controller must be listed in the binding table
(platform_hostdev.dt.irq_bindings), decoded or explicitly unknown, with a
#interrupt-cells its binding allows; and every "unknown" entry must be one
the corpus has.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from platform_hostdev.dt.address import reg_entries
from platform_hostdev.dt.interrupts import controller_binding, resolve_interrupts
from platform_hostdev.dt.irq_bindings import UNMODELLED
from platform_hostdev.dt.naming import device_name, predict_devices
from platform_hostdev.dt.tree import DeviceTree
from platform_hostdev.errors import DeviceTreeError
from platform_hostdev.host.inventory import Device
from platform_hostdev.host.pagesize import dtb_page_size
from platform_hostdev.vfio.correlate import correlate

from tests.support.corpus import CORPUS_STATS, CorpusStats, CorpusUnavailable, corpus_dtbs

pytestmark = pytest.mark.corpus

PAGE = dtb_page_size(None)
LOCATED = re.compile(r"^node /[^\n]*?(, property [^:\n]+)?: .+")
MAX_ERRORS_PER_DTB = 2
MAX_ERRORS_TOTAL = 10   # 6.12.117: 1 (qcom/sdx75-idp.dtb, a real #interconnect-cells mismatch)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dtb" not in metafunc.fixturenames:
        return
    if "not corpus" in (metafunc.config.getoption("markexpr") or ""):
        metafunc.parametrize("dtb", [None], ids=["deselected"])
        return
    try:
        dtbs = corpus_dtbs()
    except CorpusUnavailable as exc:
        metafunc.parametrize("dtb", [exc], ids=["corpus-unavailable"])
        return
    metafunc.parametrize("dtb", dtbs, ids=[f"{p.parent.name}/{p.name}" for p in dtbs])


BINDING_KEYS = pytest.StashKey[set[str]]()


def controller_problems(tree: DeviceTree, keys: set[str]) -> list[str]:
    """Interrupt controllers the binding table does not list, or lists with other cells."""
    problems = []
    for node in tree:
        if "interrupt-controller" not in node.properties:
            continue
        binding = controller_binding(node)
        if not binding.key:
            parent = node.parent.compatible if node.parent is not None else []
            problems.append(f"{node.path}: compatible {node.compatible or '(none)'} "
                            f"(parent {parent}) is not in the binding table")
            continue
        keys.add(binding.key)
        cells = node.u32("#interrupt-cells") if "#interrupt-cells" in node.properties else None
        if binding.known and cells is not None and cells not in binding.cells:
            problems.append(f"{node.path}: #interrupt-cells = {cells}, but the binding of "
                            f"{binding.key} takes {binding.cells}")
    return problems


def _stats(config: pytest.Config) -> CorpusStats:
    stats = config.stash.get(CORPUS_STATS, None)
    if stats is None:
        stats = config.stash[CORPUS_STATS] = CorpusStats()
    return stats


def check_dtb(path: Path) -> tuple[int, int, int, list[str]]:
    """Run the model over one DTB; (nodes, nodes with reg, devices, located error texts)."""
    tree = DeviceTree.from_dtb(path)
    errors: list[str] = []

    def attempt(step: Any, *args: Any) -> Any:
        try:
            return step(*args)
        except DeviceTreeError as exc:
            assert LOCATED.match(exc.what), f"{step.__name__}: unlocated error {exc.what!r}"
            if exc.what not in errors:
                errors.append(exc.what)
            return None

    with_reg = 0
    for node in tree:
        if "reg" not in node.properties or node.parent is None or not node.is_available():
            continue
        with_reg += 1
        attempt(device_name, node)
        attempt(reg_entries, node)
        attempt(resolve_interrupts, tree, node)
    predicted = attempt(predict_devices, tree) or []
    for p in predicted:
        attempt(correlate, tree, Device(p.name, p.bus, p.dt_path, ()), PAGE)
    return len(tree), with_reg, len(predicted), errors


def test_dtb_through_the_model(dtb: Path | CorpusUnavailable | None,
                               request: pytest.FixtureRequest) -> None:
    if isinstance(dtb, CorpusUnavailable):
        pytest.fail(str(dtb), pytrace=False)
    assert dtb is not None
    nodes, with_reg, devices, errors = check_dtb(dtb)
    keys = request.config.stash.setdefault(BINDING_KEYS, set())
    problems = controller_problems(DeviceTree.from_dtb(dtb), keys)
    assert not problems, f"{dtb.parent.name}/{dtb.name}: " + "; ".join(problems)
    stats = _stats(request.config)
    stats.dtbs += 1
    stats.nodes += nodes
    stats.nodes_with_reg += with_reg
    stats.devices += devices
    name = f"{dtb.parent.name}/{dtb.name}"
    stats.errors += [f"{name}: {e}" for e in errors]
    for error in errors:
        print(f"{name}: {error}")
    assert devices > 0, f"{name}: no platform device predicted at all"
    assert len(errors) <= MAX_ERRORS_PER_DTB, f"{name}: {len(errors)} located errors: {errors}"


def test_corpus_errors_stay_few(request: pytest.FixtureRequest) -> None:
    stats = request.config.stash.get(CORPUS_STATS, None)
    if stats is None or not stats.dtbs:  # run alone: go over the corpus here
        stats = CorpusStats()
        try:
            dtbs = corpus_dtbs()
        except CorpusUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        for path in dtbs:
            nodes, with_reg, devices, errors = check_dtb(path)
            stats.dtbs += 1
            stats.nodes += nodes
            stats.devices += devices
            stats.errors += [f"{path.parent.name}/{path.name}: {e}" for e in errors]
        request.config.stash[CORPUS_STATS] = stats
    print("\n".join(stats.summary()))
    assert len(stats.errors) <= MAX_ERRORS_TOTAL, "\n".join(stats.summary())


def test_every_unknown_binding_is_one_the_corpus_has(request: pytest.FixtureRequest) -> None:
    keys = request.config.stash.get(BINDING_KEYS, None)
    if keys is None or not keys:  # run alone: go over the corpus here
        keys = set()
        try:
            dtbs = corpus_dtbs()
        except CorpusUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        for path in dtbs:
            assert not controller_problems(DeviceTree.from_dtb(path), keys), path
    stale = sorted(UNMODELLED - keys)
    assert not stale, f"listed as found in Debian's DTBs but not there (remove them): {stale}"
