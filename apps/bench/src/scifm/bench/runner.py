"""``sci-fm bench run SUITE``: run the jobs of a suite config and append one result record.

Each job runs its steps in a scratch folder (``sci-fm ...`` commands in a subprocess of this Python,
``module:function`` steps in-process), then its metrics JSON files (and the dicts that python steps
return) become one table row; a job whose metrics hold ``"rows": [{...}, ...]`` (a benchmark script that
reports several models or datasets) becomes one row per entry instead. The record goes to
``RESULTS/<suite>/<name>-<UTC time>.json``, never overwriting an earlier one; the plots a job lists
(file names or glob patterns) are copied into a folder of the same stem.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scifm.core.errors import ConfigError, DataError, SciFMError
from scifm.core.provenance import provenance, utc_timestamp, write_record

from .suites import Job, Suite, load_suite, substitute


class JobFailed(SciFMError):
    """A benchmark job step exited with an error; the message names the job, step and log file."""


def find_repo(start: Path | None = None) -> Path:
    """The repository root: ``$SCIFM_REPO``, else the first parent of ``start`` (cwd) with ``benchmarks/``,
    else the checkout this package is installed from (editable installs)."""
    env = os.environ.get("SCIFM_REPO")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "benchmarks").is_dir() and ((d / "pyproject.toml").is_file() or (d / ".git").exists()):
            return d
    guess = Path(__file__).resolve().parents[5] if len(Path(__file__).resolve().parents) > 5 else here
    return guess if (guess / "benchmarks").is_dir() else here


def _argv(command: list[Any]) -> list[str]:
    # an argument that is a list (a placeholder whose variable is a list) expands into several arguments;
    # null drops out, so a variable can switch a flag off
    args = [str(x) for a in command for x in (a if isinstance(a, list) else [a]) if x is not None]
    if args[0] == "sci-fm":  # the same interpreter and environment as this process
        return [sys.executable, "-m", "scifm.cli.main", *args[1:]]
    if args[0] in ("python", "python3"):
        return [sys.executable, *args[1:]]
    return args


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _run_step(job: Job, j: int, step: dict[str, Any], variables: dict[str, Any], log: Path) -> dict[str, Any]:
    label = step.get("name") or (step.get("python") or " ".join(map(str, step["command"][:3])))
    print(f"[bench] {job.name} step {j + 1}/{len(job.steps)}: {label}", file=sys.stderr, flush=True)
    if "python" in step:
        module, _, func = step["python"].partition(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"job '{job.name}': cannot load python step '{step['python']}': {exc}"
            ) from None
        result = fn(**substitute(step.get("args", {}), variables))
        return dict(result) if isinstance(result, dict) else {}
    argv = _argv(substitute(step["command"], variables))
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=variables["workdir"])
    if proc.returncode != 0:
        raise JobFailed(
            f"job '{job.name}' step {j + 1} ({label}) exited with {proc.returncode}; log: {log}\n{_tail(log)}"
        )
    return {}


def _scalar(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return ...  # not a table value (dict, list): left out of the row


def _rows(job: Job, suite: Suite, metrics: dict[str, Any], wall_time_s: float) -> list[dict[str, Any]]:
    """One row, or one per entry of ``metrics["rows"]``: those entries keep every scalar field (their
    identifiers and metrics, chosen by the step that made them) after the job's ``row`` identifiers."""
    many = metrics.get("rows")
    if many is None:
        return [_row(job, suite, metrics, wall_time_s)]
    if not isinstance(many, list) or not many or not all(isinstance(r, dict) and r for r in many):
        raise ConfigError(f"job '{job.name}': 'rows' in its metrics must be a non-empty list of objects")
    out = []
    for entry in many:
        row = dict(job.row)
        row.update({k: s for k, v in entry.items() if (s := _scalar(v)) is not ...})
        if "wall_time_s" in suite.columns and "wall_time_s" not in row:
            row["wall_time_s"] = wall_time_s
        out.append(row)
    return out


def _row(job: Job, suite: Suite, metrics: dict[str, Any], wall_time_s: float) -> dict[str, Any]:
    row = {k: v for k, v in job.row.items()}
    if "job" not in row and "model" not in row:
        row["job"] = job.name
    wanted = list(suite.columns) + [k for k in job.keep if k not in suite.columns]
    for key in wanted:
        if key in metrics and (v := _scalar(metrics[key])) is not ...:
            row[key] = v
    if "wall_time_s" in suite.columns and "wall_time_s" not in row:
        row["wall_time_s"] = wall_time_s
    return row


def _plot_files(pattern: str) -> list[Path]:
    """The files a ``plots`` entry names: itself, or what it matches when it is a glob pattern."""
    if any(c in pattern for c in "*?["):
        p = Path(pattern)
        anchor = Path(p.anchor) if p.is_absolute() else Path(".")
        return sorted(f for f in anchor.glob(str(p.relative_to(anchor))) if f.is_file())
    return [Path(pattern)] if Path(pattern).is_file() else []


def run_job(
    job: Job, suite: Suite, workdir: Path, variables: dict[str, Any]
) -> tuple[list[dict], list[Path]]:
    """Run one job; returns its rows and the plot files it made."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = dict(variables, workdir=str(workdir))
    # vars may refer to {workdir}, {repo}, {seed}
    local = dict(base, **substitute(job.vars, base))
    log = workdir / "job.log"
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    for j, step in enumerate(job.steps):
        metrics.update(_run_step(job, j, step, local, log))
    wall = time.perf_counter() - t0
    for m in substitute(job.metrics, local):
        path = Path(m)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(path, f"job '{job.name}' did not write this metrics file") from None
        except json.JSONDecodeError as exc:
            raise DataError(path, f"job '{job.name}' wrote invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DataError(path, "a metrics file must hold a JSON object")
        metrics.update(data)
    plots = []
    for p in substitute(job.plots, local):
        found = _plot_files(p)
        if not found:
            print(f"[bench] warning: job '{job.name}' made no plot {p}", file=sys.stderr)
        plots += [f for f in found if f not in plots]
    return _rows(job, suite, metrics, wall), plots


def run_suite(
    suite_name: str,
    configs_dir: Path,
    results_dir: Path,
    repo: Path,
    quick: bool = False,
    seed: int | None = None,
    workdir: Path | None = None,
    keep: bool = False,
    command: str | None = None,
) -> Path:
    """Run every job of a suite; returns the path of the new record."""
    suite = load_suite(suite_name, configs_dir, quick=quick)
    seed = suite.seed if seed is None else int(seed)
    stamp = utc_timestamp()
    stem = f"{suite.name}-{stamp.replace('-', '').replace(':', '')}"
    record_path = Path(results_dir) / suite.suite / f"{stem}.json"
    if record_path.exists():
        raise ConfigError(f"{record_path} already exists; wait a second and run again")
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"scifm-bench-{suite.suite}-"))
    variables = {"repo": str(repo), "seed": seed, "quick": quick}
    t0 = time.perf_counter()
    rows, plot_files = [], []
    ok = False
    plot_dir = record_path.parent / stem
    rel = []
    try:
        for job in suite.jobs:
            job_rows, plots = run_job(job, suite, scratch / job.name, variables)
            rows += job_rows
            plot_files += [(job.name, p) for p in plots]
        # Copy the plots out before the scratch folder goes away.
        for job_name, p in plot_files:
            plot_dir.mkdir(parents=True, exist_ok=True)
            dst = plot_dir / f"{job_name}-{p.name}"
            if dst.exists():  # one file name in two folders (e.g. a plot per test system)
                dst = plot_dir / f"{job_name}-{p.parent.name}-{p.name}"
            shutil.copyfile(p, dst)
            rel.append(f"{stem}/{dst.name}")
        ok = True
    finally:
        if ok and not keep and workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
        elif not ok:
            print(f"[bench] scratch folder kept for inspection: {scratch}", file=sys.stderr)
    wall = time.perf_counter() - t0
    present = {k for r in rows for k in r}
    columns = {k: v for k, v in suite.columns.items() if k in present}
    try:
        config_rel = str(suite.path.resolve().relative_to(Path(repo).resolve()))
    except ValueError:
        config_rel = suite.path.name
    config = {
        "suite_config": config_rel,
        "quick": quick,
        "jobs": [{"name": j.name, "row": j.row, "vars": j.vars, "steps": j.steps} for j in suite.jobs],
    }
    prov = provenance(command, wall, repo=repo)
    prov["timestamp"] = stamp
    return write_record(
        record_path,
        suite.suite,
        suite.name,
        rows,
        columns,
        plots=rel,
        config=config,
        seed=seed,
        title=suite.title,
        prov=prov,
    )
