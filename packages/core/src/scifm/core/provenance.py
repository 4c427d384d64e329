"""Benchmark result records (schema ``scifm-bench/1``) and the provenance every record carries.

A record is one JSON file ``benchmarks/results/<suite>/<name>.json``::

    {"schema": "scifm-bench/1", "suite": "mlip", "name": "default-train", "title": "human title",
     "rows": [{"model": "painn", "forces_mae_meV_per_A": 41.2, ...}, ...],      # the table rows
     "columns": {"forces_mae_meV_per_A": {"better": "lower", "unit": "meV/Å", "label": "F MAE"}},
     "plots": ["relative/path/from/this/json.png"],
     "config": {...}, "seed": 0,
     "provenance": {"git_commit": ..., "git_dirty": ..., "packages": {...}, "hardware": {...},
                    "python": ..., "platform": ..., "timestamp": "...Z", "command": ..., "wall_time_s": ...}}

``columns`` describes the metric columns (``better`` is ``"lower"``, ``"higher"`` or ``None`` for
columns that are not ranked); row keys that are not in ``columns`` are identifiers (model, dataset, ...).
Benchmark scripts call :func:`write_record`; the leaderboard reads records with :func:`validate_record`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from scifm.core.errors import DataError

SCHEMA = "scifm-bench/1"
BETTER = ("lower", "higher", None)
# Versions recorded in every record: the numerical stack plus every sci-fm distribution.
PACKAGES = (
    "torch",
    "lightning",
    "torch-geometric",
    "e3nn",
    "numpy",
    "ase",
    "h5py",
    "vesin",
    "openmm",
    "rdkit",
    "tblite",
    "pyscf",
    "matplotlib",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

__all__ = ["SCHEMA", "provenance", "validate_record", "write_record", "read_record", "utc_timestamp"]


def utc_timestamp(now: _dt.datetime | None = None) -> str:
    """ISO-8601 UTC time to the second, e.g. ``2025-01-31T12:00:00Z``."""
    now = now or _dt.datetime.now(_dt.UTC)
    return now.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _git_state(cwd: Path) -> tuple[str | None, bool | None]:
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return None, None
    # Untracked files (run directories, new results) do not change what the tracked code computes.
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return commit, (None if status is None else bool(status))


def _packages() -> dict[str, str]:
    names = set(PACKAGES)
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith("scifm-") or name == "sci-fm":
            names.add(name)
    out = {}
    for name in sorted(names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hardware() -> dict[str, Any]:
    try:
        threads = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        threads = os.cpu_count()
    hw: dict[str, Any] = {
        "cpu": _cpu_model(),
        "gpu": None,
        "threads": threads,
        "torch_threads": None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            names = [torch.cuda.get_device_name(i) for i in range(n)]
            hw["gpu"] = names[0] if len(set(names)) == 1 else ", ".join(names)
            hw["gpu_count"] = n
    except Exception:  # a broken CUDA install must not stop a benchmark from being recorded
        pass
    return hw


def provenance(
    command: str | None = None, wall_time_s: float | None = None, repo: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Where and how a result was made: git commit, package versions, hardware, time, command.

    ``repo`` is the git work tree to ask for the commit (default: the current directory).
    """
    commit, dirty = _git_state(Path(repo) if repo is not None else Path.cwd())
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": _packages(),
        "hardware": _hardware(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timestamp": utc_timestamp(),
        "command": command if command is not None else " ".join(sys.argv),
        "wall_time_s": None if wall_time_s is None else float(wall_time_s),
    }


def _problem(msg: str) -> ValueError:
    return ValueError(msg)


def _check_value(v: Any, where: str) -> None:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            raise _problem(f"{where} is {v}; write null for a missing value")
        return
    raise _problem(f"{where} must be a number, string, bool or null, got {type(v).__name__}")


def validate_record(record: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first problem if ``record`` is not a valid ``scifm-bench/1`` record."""
    if not isinstance(record, Mapping):
        raise _problem("a record must be a JSON object")
    if record.get("schema") != SCHEMA:
        raise _problem(f"'schema' is {record.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("suite", "name"):
        v = record.get(key)
        if not isinstance(v, str) or not _NAME.match(v):
            raise _problem(f"'{key}' must be a non-empty name of letters, digits, '_', '-', '.', got {v!r}")
    if record.get("title") is not None and not isinstance(record["title"], str):
        raise _problem("'title' must be a string")
    rows = record.get("rows")
    if not isinstance(rows, list) or not rows:
        raise _problem("'rows' must be a non-empty list of objects")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not row:
            raise _problem(f"rows[{i}] must be a non-empty object")
        for k, v in row.items():
            _check_value(v, f"rows[{i}].{k}")
    columns = record.get("columns")
    if not isinstance(columns, Mapping):
        raise _problem("'columns' must be an object of metric name -> {better, unit, label}")
    row_keys = {k for row in rows for k in row}
    for name, spec in columns.items():
        if not isinstance(spec, Mapping):
            raise _problem(f"columns.{name} must be an object")
        unknown = set(spec) - {"better", "unit", "label", "format"}
        if unknown:
            raise _problem(f"columns.{name} has unknown key(s) {sorted(unknown)}")
        if spec.get("better") not in BETTER:
            raise _problem(
                f"columns.{name}.better must be 'lower', 'higher' or null, got {spec.get('better')!r}"
            )
        for k in ("unit", "label", "format"):
            if spec.get(k) is not None and not isinstance(spec[k], str):
                raise _problem(f"columns.{name}.{k} must be a string")
        if name not in row_keys:
            raise _problem(f"column '{name}' appears in no row")
    plots = record.get("plots", [])
    if not isinstance(plots, list) or not all(isinstance(p, str) and p for p in plots):
        raise _problem("'plots' must be a list of relative paths")
    for p in plots:
        if Path(p).is_absolute() or "://" in p:
            raise _problem(f"plot path {p!r} must be relative to the record file")
    if record.get("config") is not None and not isinstance(record["config"], Mapping):
        raise _problem("'config' must be an object or null")
    seed = record.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _problem("'seed' must be an integer or null")
    prov = record.get("provenance")
    if not isinstance(prov, Mapping):
        raise _problem("'provenance' must be an object")
    for key in ("git_commit", "packages", "hardware", "timestamp"):
        if key not in prov:
            raise _problem(f"provenance.{key} is missing")
    if not isinstance(prov["packages"], Mapping) or not isinstance(prov["hardware"], Mapping):
        raise _problem("provenance.packages and provenance.hardware must be objects")
    if not isinstance(prov["timestamp"], str):
        raise _problem("provenance.timestamp must be an ISO-8601 string")


def _jsonable(obj: Any) -> Any:
    """Configs may hold Paths, tuples and numpy scalars: turn them into plain JSON data."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_record(
    path: str | os.PathLike,
    suite: str,
    name: str,
    rows: Iterable[Mapping[str, Any]],
    columns: Mapping[str, Mapping[str, Any]],
    plots: Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    title: str | None = None,
    wall_time_s: float | None = None,
    command: str | None = None,
    prov: Mapping[str, Any] | None = None,
) -> Path:
    """Validate and atomically write one result record; returns ``path``.

    ``rows``: the table rows (scalar values only; NaN/inf are written as null, shown as a dash).
    ``columns``: metric name -> ``{"better": "lower"|"higher"|None, "unit": str, "label": str}``.
    ``plots``: paths relative to the record's folder. ``prov`` replaces the provenance this function
    would collect (for tests and converters of old results).
    """
    path = Path(path)
    record = {
        "schema": SCHEMA,
        "suite": suite,
        "name": name,
        "title": title,
        "rows": [_jsonable(dict(r)) for r in rows],
        "columns": _jsonable({k: dict(v) for k, v in columns.items()}),
        "plots": [str(p) for p in plots],
        "config": _jsonable(dict(config)) if config is not None else None,
        "seed": seed,
        "provenance": _jsonable(dict(prov)) if prov is not None else provenance(command, wall_time_s),
    }
    try:
        validate_record(record)
    except ValueError as exc:
        raise DataError(path, f"not a valid {SCHEMA} record: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a record; a malformed file raises ``DataError`` naming it and the problem."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read JSON ({exc.__class__.__name__}: {exc})") from None
    try:
        validate_record(record)
    except ValueError as exc:
        raise DataError(path, f"not a valid {SCHEMA} record: {exc}") from None
    return record
