"""Suite configs: ``benchmarks/configs/<suite>.yaml`` lists the jobs of one benchmark suite.

A suite config (all keys but ``jobs`` optional)::

    title: MLIP accuracy and speed on the bundled GFN2-xTB set
    name: default          # record name; results go to results/<suite>/<name>-<UTC time>.json
    seed: 0
    columns:               # metric columns of the table, as in the record schema
      forces_mae_meV_per_A: {better: lower, unit: meV/Å, label: F MAE}
    jobs:
      - name: painn
        row: {model: painn, dataset: bundled-xtb}      # identifier fields of this job's row
        vars: {epochs: 60}                             # substituted as {epochs} in steps
        steps:
          - python: scifm.bench.steps:subset_extxyz    # module:function(**args)
            args: {out: "{workdir}/data.extxyz"}
          - command: [sci-fm, train, mlip, --max-epochs, "{epochs}", --out, "{workdir}/train"]
        metrics: ["{workdir}/train/metrics.json"]      # JSON files merged into the row
        plots: ["{workdir}/train/parity.png"]          # copied next to the record
        quick: {vars: {epochs: 2}}                     # deep-merged over the job by --quick

``quick: false`` leaves a job out of quick runs. Placeholders: ``{workdir}`` (the job's scratch folder),
``{repo}`` (the repository root), ``{seed}`` and every key of ``vars``; a string that is exactly one
placeholder takes the variable's value with its type (so ``"{n}"`` can become an int or null).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scifm.core.config import load_yaml
from scifm.core.errors import ConfigError
from scifm.core.provenance import BETTER

SUITE_KEYS = {"title", "name", "seed", "columns", "jobs", "description", "quick"}
JOB_KEYS = {"name", "row", "vars", "steps", "metrics", "plots", "quick", "keep"}
STEP_KEYS = {"command", "python", "args", "name"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Job:
    name: str
    steps: list[dict[str, Any]]
    row: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)


@dataclass
class Suite:
    suite: str
    path: Path
    title: str | None
    name: str
    seed: int
    columns: dict[str, dict[str, Any]]
    jobs: list[Job]
    raw: dict[str, Any]


def available_suites(configs_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(configs_dir).glob("*.yaml"))


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` merged into a copy of ``base``: mappings recursively, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = deep_merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    """Replace ``{name}`` placeholders in strings (recursively in lists and mappings)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]

        def repl(m: re.Match) -> str:
            key = m.group(1)
            return str(variables[key]) if key in variables else m.group(0)

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def _check_columns(path: Path, columns: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(columns, dict):
        raise ConfigError(f"{path}: 'columns' must map metric name -> {{better, unit, label}}")
    for name, spec in columns.items():
        if not isinstance(spec, dict) or set(spec) - {"better", "unit", "label", "format"}:
            raise ConfigError(f"{path}: columns.{name} must be a mapping with keys better, unit, label")
        if spec.get("better") not in BETTER:
            raise ConfigError(f"{path}: columns.{name}.better must be lower, higher or null")
    return {str(k): dict(v) for k, v in columns.items()}


def _parse_job(path: Path, i: int, raw: Any, quick: bool) -> Job | None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: jobs[{i}] must be a mapping")
    unknown = set(raw) - JOB_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: jobs[{i}] has unknown key(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(JOB_KEYS))}"
        )
    if quick:
        q = raw.get("quick", {})
        if q is False:
            return None
        if not isinstance(q, dict):
            raise ConfigError(f"{path}: jobs[{i}].quick must be a mapping of overrides or false")
        raw = deep_merge({k: v for k, v in raw.items() if k != "quick"}, q)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{path}: jobs[{i}].name must be a simple name, got {name!r}")
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"{path}: job '{name}' needs a non-empty list of steps")
    for j, step in enumerate(steps):
        if not isinstance(step, dict) or set(step) - STEP_KEYS:
            raise ConfigError(
                f"{path}: job '{name}' step {j} must be a mapping with keys {sorted(STEP_KEYS)}"
            )
        if ("command" in step) == ("python" in step):
            raise ConfigError(f"{path}: job '{name}' step {j} needs exactly one of 'command' or 'python'")
        if "command" in step and (not isinstance(step["command"], list) or not step["command"]):
            raise ConfigError(f"{path}: job '{name}' step {j}: 'command' must be a list of arguments")
        if "python" in step and (not isinstance(step["python"], str) or ":" not in step["python"]):
            raise ConfigError(f"{path}: job '{name}' step {j}: 'python' must be 'module:function'")
        if "args" in step and not isinstance(step["args"], dict):
            raise ConfigError(f"{path}: job '{name}' step {j}: 'args' must be a mapping")
    for key in ("row", "vars"):
        if not isinstance(raw.get(key, {}), dict):
            raise ConfigError(f"{path}: job '{name}'.{key} must be a mapping")
    for key in ("metrics", "plots", "keep"):
        v = raw.get(key, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{path}: job '{name}'.{key} must be a list of strings")
        raw[key] = v
    return Job(
        name=name,
        steps=list(steps),
        row=dict(raw.get("row", {})),
        vars=dict(raw.get("vars", {})),
        metrics=raw["metrics"],
        plots=raw["plots"],
        keep=raw["keep"],
    )


def load_suite(suite: str, configs_dir: Path, quick: bool = False) -> Suite:
    """Parse and check ``configs_dir/<suite>.yaml``; ``quick`` applies each job's ``quick:`` overrides."""
    configs_dir = Path(configs_dir)
    path = configs_dir / f"{suite}.yaml"
    if not path.is_file():
        have = available_suites(configs_dir)
        raise ConfigError(
            f"no benchmark suite '{suite}' (no {path}); available suites: "
            f"{', '.join(have) if have else 'none'}"
        )
    raw = load_yaml(path)
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SUITE_KEYS))}"
        )
    suite_quick = raw.pop("quick", None) or {}
    if not isinstance(suite_quick, dict):
        raise ConfigError(f"{path}: suite-level 'quick' must be a mapping of overrides (title, name, seed)")
    name = str(raw.get("name", "default"))
    if quick:
        # quick runs get their own record name so they never mix with full runs on the board
        raw = deep_merge(raw, suite_quick)
        name = str(suite_quick.get("name", f"{name}-quick"))
    jobs_raw = raw.get("jobs")
    if not isinstance(jobs_raw, list) or not jobs_raw:
        raise ConfigError(f"{path}: 'jobs' must be a non-empty list")
    jobs = [j for i, r in enumerate(jobs_raw) if (j := _parse_job(path, i, r, quick)) is not None]
    if not jobs:
        raise ConfigError(f"{path}: no job runs in {'quick' if quick else 'full'} mode")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: job names must be unique, got {names}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{path}: 'seed' must be an integer")
    return Suite(
        suite=suite,
        path=path,
        title=raw.get("title"),
        name=name,
        seed=seed,
        columns=_check_columns(path, raw.get("columns", {})),
        jobs=jobs,
        raw=raw,
    )
