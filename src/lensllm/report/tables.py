"""Plain-text tables for the terminal and Markdown reports (no dependencies)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.{digits}f}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1,
               title: str | None = None) -> str:
    """A right-aligned monospace table (first column left-aligned)."""
    cells = [[fmt(v, digits) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[j]) for r in cells)) if cells else len(str(h))
              for j, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [str(values[0]).ljust(widths[0])]
        parts += [str(v).rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line([str(h) for h in headers]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   digits: int = 1) -> str:
    cells = [[fmt(v, digits) for v in row] for row in rows]
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out.extend("| " + " | ".join(r) + " |" for r in cells)
    return "\n".join(out)
