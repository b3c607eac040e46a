"""Text from a device tree on its way to a terminal or into XML: errors.printable().

Node names may hold any byte but NUL and '/' (the kernel takes them as they
are; drivers/of/fdt.c populate_node()), and string properties any UTF-8,
U+FFFE included: shown, they must not drive the terminal (ESC sequences,
newlines faking lines) nor make lxml refuse ("All strings must be XML
compatible") or write a document no parser reads.
"""
from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from platform_hostdev.cli.table import render_table
from platform_hostdev.errors import DeviceTreeError, printable, printable_lines

HOSTILE = "v,\x1b[31mred\x1b[0m\nhint: fake\r\x07\x9b2J\u202egnp\ufffe\x00\ud800\x7f"


def test_controls_and_non_characters_are_escaped_as_repr_writes_them() -> None:
    assert printable(HOSTILE) == ("v,\\x1b[31mred\\x1b[0m\\nhint: fake\\r\\x07\\x9b2J"
                                  "\\u202egnp\\ufffe\\x00\\ud800\\x7f")
    assert printable("/soc/ethernet@ff0e0000") == "/soc/ethernet@ff0e0000"
    assert printable("café, ü") == "café, ü"  # printable non-ASCII stays
    assert printable_lines("a\x1b\nb\tc") == "a\\x1b\nb\\tc"


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(st.text(st.characters(min_codepoint=0, max_codepoint=sys.maxunicode)))
def test_whatever_the_text_lxml_takes_it_and_reads_it_back(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable() and printable(shown) == shown
    element = etree.Element("compatible", path=shown)
    element.text = shown
    back = etree.fromstring(etree.tostring(element, encoding="utf-8"))
    assert back.text == (shown or None) and back.get("path") == shown


def test_a_located_error_escapes_the_tree_text_and_keeps_it_in_data() -> None:
    error = DeviceTreeError("/soc/x\x1b]0;owned\x07@1", "compat\nible", "bad \x1b[2J value",
                            "fix /soc/x\x1b]0;owned\x07@1")
    assert error.what == ("node /soc/x\\x1b]0;owned\\x07@1, property compat\\nible: "
                          "bad \\x1b[2J value")
    assert error.fix == "fix /soc/x\\x1b]0;owned\\x07@1"
    assert error.to_json()["node"] == "/soc/x\x1b]0;owned\x07@1"  # JSON escapes it itself


def test_a_table_cell_stays_one_cell() -> None:
    table = render_table(["NAME", "COMPATIBLE"], [["1000.x", "v,a\nfake  row"], ["b", "c"]])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2] == "1000.x  v,a\\nfake  row"
    assert "\x1b" not in render_table(["A"], [["\x1b[31m"]])
