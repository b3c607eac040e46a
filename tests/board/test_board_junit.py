"""Reading the guest's junit XML into per-test outcomes (tests/board/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.board.conftest import parse_junit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="6">
<testcase classname="tests.guest.test_a" name="test_ok[x]" time="0.1"/>
<testcase classname="tests.guest.test_a" name="test_bad" time="0.1">
  <failure message="assert 1 == 2">trace here</failure></testcase>
<testcase classname="tests.guest.test_a" name="test_skip" time="0.0">
  <skipped type="pytest.skip" message="no pl061">reason</skipped></testcase>
<testcase classname="tests.guest.test_a" name="test_xf" time="0.0">
  <skipped type="pytest.xfail" message="known bug"/></testcase>
<testcase classname="tests.guest.test_a" name="test_teardown" time="0.0"/>
<testcase classname="tests.guest.test_a" name="test_teardown" time="0.0">
  <error message="failed on teardown">boom</error></testcase>
<testcase classname="" name="tests.guest.test_broken" time="0.0">
  <error message="collection failure">SyntaxError</error></testcase>
</testsuite></testsuites>
"""


def test_outcomes_by_guest_test_id(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    cases = parse_junit(path)
    assert {case_id: case.outcome for case_id, case in cases.items()} == {
        "test_a.test_ok[x]": "passed",
        "test_a.test_bad": "failed",
        "test_a.test_skip": "skipped",
        "test_a.test_xf": "xfailed",
        "test_a.test_teardown": "error",
        "tests.guest.test_broken": "error",
    }
    assert cases["test_a.test_bad"].message == "assert 1 == 2"
    assert cases["test_a.test_bad"].details == "trace here"


def test_cases_keep_their_module(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    cases = parse_junit(path)
    assert cases["test_a.test_ok[x]"].module == "tests.guest.test_a"
    assert cases["tests.guest.test_broken"].module == "tests.guest.test_broken"
