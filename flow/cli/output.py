"""How the CLI shows results: aligned tables for people, JSON for programs (every command's --json)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def emit_json(value: Any) -> None:
    import json  # here: a table needs none of it, and `flow status` starts faster without

    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def table(rows: Sequence[Sequence[str]], ragged_last: bool = False) -> str:
    """Rows (the first is the header) as columns two spaces apart, each line without trailing
    blanks. `ragged_last`: the last column is free text (a reason), so it does not widen the rest."""
    if not rows:
        return ""
    aligned = len(rows[0]) - 1 if ragged_last else len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(aligned)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:aligned], widths, strict=True)]
        lines.append("  ".join([*cells, *row[aligned:]]).rstrip())
    return "\n".join(lines) + "\n"


__all__ = ["emit_json", "table"]
