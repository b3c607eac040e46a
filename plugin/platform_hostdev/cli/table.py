"""Plain-text tables in the style of virsh list."""
from __future__ import annotations

from collections.abc import Sequence

from platform_hostdev.errors import printable

__all__ = ["render_table"]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 0) -> str:
    """Aligned columns; a cell's control characters (a newline, ESC from a DT name) are
    escaped (:func:`~platform_hostdev.errors.printable`), so a cell stays one cell."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    pad = " " * indent

    def line(cells: Sequence[str]) -> str:
        return (pad + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    out = [line(header), pad + "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [line(row) for row in rows]
    return "\n".join(out)
