"""Debian version ordering (deb-version(7)), as dpkg --compare-versions does it."""

from __future__ import annotations

import functools
import re

__all__ = ["compare_versions", "version_key"]

_PART = re.compile(r"(\D*)(\d*)")


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_fragment(left: str, right: str) -> int:
    """Compare an upstream_version or debian_revision fragment."""
    left_parts = _PART.findall(left)
    right_parts = _PART.findall(right)
    for (lstr, lnum), (rstr, rnum) in zip(left_parts, right_parts, strict=False):
        for index in range(max(len(lstr), len(rstr))):
            lc = _order(lstr[index]) if index < len(lstr) else 0
            rc = _order(rstr[index]) if index < len(rstr) else 0
            if lc != rc:
                return -1 if lc < rc else 1
        if int(lnum or 0) != int(rnum or 0):
            return -1 if int(lnum or 0) < int(rnum or 0) else 1
    if len(left_parts) != len(right_parts):
        longer, sign = (left_parts, 1) if len(left_parts) > len(right_parts) else (right_parts, -1)
        rest = "".join(text + num for text, num in longer[min(len(left_parts), len(right_parts)):])
        return _compare_fragment(rest, "") * sign if rest else 0
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as Debian version ``left`` sorts before, equal to or after ``right``."""
    lepoch, lup, lrev = _split(left)
    repoch, rup, rrev = _split(right)
    if lepoch != repoch:
        return -1 if lepoch < repoch else 1
    return _compare_fragment(lup, rup) or _compare_fragment(lrev, rrev)


version_key = functools.cmp_to_key(compare_versions)
