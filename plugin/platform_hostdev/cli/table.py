"""Plain-text tables in the style of virsh list."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 0) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    pad = " " * indent

    def line(cells: Sequence[str]) -> str:
        return (pad + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    out = [line(header), pad + "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [line(row) for row in rows]
    return "\n".join(out)
