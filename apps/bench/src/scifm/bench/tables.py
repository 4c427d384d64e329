"""A record's rows as a table: column order, header labels, formatted cells and the best value per column."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ARROW = {"lower": "↓", "higher": "↑", None: ""}


@dataclass
class Column:
    key: str
    label: str
    unit: str | None
    better: str | None
    numeric: bool
    fmt: str | None = None

    @property
    def header(self) -> str:
        text = self.label + (f" ({self.unit})" if self.unit else "")
        return f"{text} {ARROW[self.better]}".rstrip()


@dataclass
class Cell:
    value: Any
    text: str
    best: bool


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def format_value(v: Any, fmt: str | None = None) -> str:
    """Numbers to at most ~4 significant digits (or the column's format spec); None to an en dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return format(v, fmt) if fmt else str(v)
    if isinstance(v, float):
        if fmt:
            return format(v, fmt)
        a = abs(v)
        if a != 0 and (a >= 1e6 or a < 1e-3):
            return f"{v:.3e}"
        if a >= 1000:
            return f"{v:.0f}"
        return f"{v:.4g}"
    return str(v)


def build_table(record: dict[str, Any]) -> Table:
    rows = record["rows"]
    specs = record["columns"]
    ident: list[str] = []
    for row in rows:  # identifier columns first, in the order rows name them
        for k in row:
            if k not in specs and k not in ident:
                ident.append(k)
    keys = ident + [k for k in specs if any(k in r for r in rows)]
    columns = []
    for k in keys:
        spec = specs.get(k, {})
        numeric = all(_is_number(r.get(k)) or r.get(k) is None for r in rows) and any(
            _is_number(r.get(k)) for r in rows
        )
        columns.append(
            Column(
                k, spec.get("label") or k, spec.get("unit"), spec.get("better"), numeric, spec.get("format")
            )
        )
    best: dict[str, float] = {}
    for c in columns:
        values = [r[c.key] for r in rows if _is_number(r.get(c.key))]
        # one value is no ranking: nothing is marked in a single-row column
        if c.better in ("lower", "higher") and len(values) > 1:
            best[c.key] = min(values) if c.better == "lower" else max(values)
    table_rows = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c.key)
            is_best = c.key in best and _is_number(v) and math.isclose(v, best[c.key], rel_tol=1e-12)
            cells.append(Cell(v, format_value(v, c.fmt), bool(is_best)))
        table_rows.append(cells)
    return Table(columns, table_rows)


def provenance_line(record: dict[str, Any]) -> str:
    """One line: when, which commit, which hardware, how long."""
    p = record["provenance"]
    hw = p.get("hardware") or {}
    parts = [str(p.get("timestamp") or "unknown time")]
    commit = p.get("git_commit")
    if commit:
        parts.append(f"commit {commit[:10]}" + (" (uncommitted changes)" if p.get("git_dirty") else ""))
    dev = hw.get("gpu") or hw.get("cpu")
    if dev:
        parts.append(str(dev))
    if hw.get("threads") is not None:
        parts.append(
            f"{hw['threads']} threads"
            + (f", torch {hw['torch_threads']}" if hw.get("torch_threads") is not None else "")
        )
    if p.get("wall_time_s") is not None:
        parts.append(f"wall {format_value(float(p['wall_time_s']))} s")
    if record.get("seed") is not None:
        parts.append(f"seed {record['seed']}")
    return " · ".join(parts)
