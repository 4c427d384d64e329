"""Reading result records for the board: valid ``scifm-bench/1`` files, grouped; anything else skipped.

Helpers write results in their own shapes while the schema settles, so a JSON file that is not a valid
record is skipped with a one-line warning (shown on the board) instead of stopping the render. A raw
benchmark output that a record was converted from (listed in the record's ``config.sources``, relative to
the record's folder; see ``benchmarks/make_records.py``) is not a skipped file: the record shows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scifm.core.provenance import SCHEMA, validate_record

# Suites in the order the issue lists them; any other suite follows alphabetically.
SUITE_ORDER = ("mlip", "pubchemqcr", "md", "prose", "dpot", "circuit", "circuitgcl")


@dataclass
class Record:
    path: Path
    data: dict[str, Any]

    @property
    def suite(self) -> str:
        return self.data["suite"]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def timestamp(self) -> str:
        return str(self.data["provenance"].get("timestamp") or "")


@dataclass
class Group:
    """All runs of one (suite, name): ``runs[0]`` is the newest, shown as the table."""

    suite: str
    name: str
    runs: list[Record] = field(default_factory=list)

    @property
    def latest(self) -> Record:
        return self.runs[0]


def load_records(results_dir: Path) -> tuple[list[Record], list[str]]:
    """Every ``*.json`` under ``results_dir`` (recursively, hidden files ignored).

    Returns the valid records and a warning per skipped file (``path: reason``, path relative to
    ``results_dir``), except the files that a valid record names as its ``config.sources``.
    """
    results_dir = Path(results_dir)
    records: list[Record] = []
    skipped: list[tuple[Path, str]] = []
    if not results_dir.is_dir():
        return records, [f"{results_dir}: results folder does not exist"]
    for path in sorted(results_dir.rglob("*.json")):
        rel = path.relative_to(results_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append((path, f"{rel}: unreadable JSON ({exc.__class__.__name__})"))
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            skipped.append((path, f"{rel}: not a {SCHEMA} record (schema: {found!r}); skipped"))
            continue
        try:
            validate_record(data)
        except ValueError as exc:
            skipped.append((path, f"{rel}: invalid {SCHEMA} record: {exc}; skipped"))
            continue
        records.append(Record(path, data))
    converted = set()
    for r in records:
        sources = (r.data.get("config") or {}).get("sources") or []
        if isinstance(sources, list):
            converted |= {(r.path.parent / s).resolve() for s in sources if isinstance(s, str)}
    warnings = [w for p, w in skipped if p.resolve() not in converted]
    return records, warnings


def suite_key(suite: str) -> tuple[int, str]:
    return (SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER), suite)


def group_records(records: list[Record]) -> dict[str, list[Group]]:
    """suite -> its groups (by record name), suites in board order, runs newest first."""
    groups: dict[tuple[str, str], Group] = {}
    for r in records:
        groups.setdefault((r.suite, r.name), Group(r.suite, r.name)).runs.append(r)
    out: dict[str, list[Group]] = {}
    for (suite, _), g in sorted(groups.items(), key=lambda kv: (suite_key(kv[0][0]), kv[0][1])):
        g.runs.sort(key=lambda r: (r.timestamp, r.path.name), reverse=True)
        out.setdefault(suite, []).append(g)
    return out
