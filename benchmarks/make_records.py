"""Turn the committed outputs of the stand-alone benchmark scripts into ``scifm-bench/1`` records.

Idempotent: rerun it after rerunning a benchmark script (same inputs and git state -> same records).

    uv run python benchmarks/make_records.py            # then: uv run sci-fm bench board

Conversions (the originals stay; each record lists its source files in ``config.sources``, and the board
does not list a converted source as a skipped file):

* ``results/dpot/<mode>/benchmark.json`` (``benchmarks/dpot/run_benchmark.py``) ->
  ``results/dpot/<mode>.json``, rows by :func:`scifm.bench.steps.dpot_rows`, plots ``<mode>/*.png``. The
  hardware (GPU name, torch threads), torch and Python versions come from the report itself, not from
  this machine.
* ``results/circuitgcl/transfer.json`` + ``transfer_<config>.json`` (``benchmarks/circuitgcl/transfer.py``)
  -> ``results/circuitgcl/circuit-transfer.json`` (a row per config, mean ± std over seeds) and
  ``circuit-transfer-per-design.json`` (a row per config and held-out design).
* records that scripts write themselves (``results/{prose,mlip,pubchemqcr,md}/*.json``) are only checked;
  absolute paths of the machine that ran them are made repository-relative in their ``config``.

Column definitions come from the suite configs ``benchmarks/configs/<suite>.yaml``, so a converted
record and a ``sci-fm bench run <suite>`` record of the same benchmark have the same table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scifm.bench.steps import circuit_rows, dpot_rows
from scifm.bench.suites import load_suite
from scifm.core.provenance import SCHEMA, read_record, utc_timestamp, write_record

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = REPO / "benchmarks" / "configs"
ME = "benchmarks/make_records.py"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _origin(paths: list[Path]) -> tuple[str | None, bool | None, str]:
    """(commit, dirty, UTC time) of result files: the last commit that touched them when they are committed
    unchanged, else HEAD marked dirty with the files' modification time."""
    rel = [str(p.relative_to(REPO)) for p in paths]
    changed = _git("status", "--porcelain", "--", *rel)
    if changed is None:  # clean (or git missing)
        line = _git("log", "-1", "--format=%H %ct", "--", *rel)
        if line:
            commit, ts = line.split()
            return commit, False, utc_timestamp(dt.datetime.fromtimestamp(int(ts), dt.UTC))
    newest = max(p.stat().st_mtime for p in paths)
    return _git("rev-parse", "HEAD"), True, utc_timestamp(dt.datetime.fromtimestamp(newest, dt.UTC))


def _prov(
    sources: list[Path],
    hardware: dict,
    packages: dict,
    python: str | None,
    platform: str | None,
    command: str,
    wall_time_s: float | None,
) -> dict[str, Any]:
    commit, dirty, stamp = _origin(sources)
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": packages,
        "hardware": hardware,
        "python": python,
        "platform": platform,
        "timestamp": stamp,
        "command": command,
        "wall_time_s": wall_time_s,
        "converted_by": ME,
        "note": "git_commit: the commit that added the result files (their code state)",
    }


def _columns(suite: str, rows: list[dict], quick: bool = False) -> dict[str, dict]:
    cols = load_suite(suite, CONFIGS, quick=quick).columns
    present = {k for r in rows for k in r}
    return {k: v for k, v in cols.items() if k in present}


def _rel(p: Path, base: Path) -> str:
    return p.relative_to(base).as_posix()


def convert_dpot(report: Path) -> Path:
    data = json.loads(report.read_text())
    mode = report.parent.name  # quick_cpu, full_cuda, cpu_60min, ...
    quick = mode.startswith("quick")
    rows = dpot_rows(str(report))["rows"]
    suite = load_suite("dpot", CONFIGS, quick=quick)
    cuda = str(data.get("device", "")).startswith("cuda")
    dev_name = data.get("device_name")
    hardware = {
        "cpu": None if cuda else dev_name,
        "gpu": dev_name if cuda else None,
        "threads": None,
        "torch_threads": data.get("threads"),
        "omp_num_threads": None,
    }
    if cuda:
        hardware["gpu_count"] = 1
    flags = "--quick" if quick else f"--device {data.get('device', 'cpu')}"
    if not quick and "min" in mode:
        flags += f" --budget-minutes {mode.rsplit('_', 1)[-1].removesuffix('min')}"
    plots = [
        _rel(report.parent / p, report.parent.parent)
        for p in data.get("plots", [])
        if (report.parent / p).is_file()
    ]
    name = "quick" if quick else mode.replace("_", "-")  # the names `sci-fm bench run dpot [--quick]` uses
    budget = (data.get("budgets_s") or {}).get("dpot_pretrain")
    nx = (data.get("settings") or {}).get("nx")
    title = (
        f"DPOT quick check ({nx}², tiny models, {budget:g} s pre-training on a CPU; not a benchmark result)"
        if quick
        else f"{suite.title}; {data.get('device_name')}"
    )
    config = {
        "suite_config": "benchmarks/configs/dpot.yaml",
        "sources": [_rel(report, report.parent.parent)],
        "mode": mode,
        "budgets_s": data.get("budgets_s"),
        "settings": data.get("settings"),
        "noise_scale": data.get("noise_scale"),
        "dpot_config": data.get("dpot_config"),
        "pretrain_beats_fno_everywhere": data.get("pretrain", {}).get("dpot_beats_fno_everywhere"),
        "transfer_target_met": data.get("transfer", {}).get("target_met"),
    }
    command = data.get("command") or f"python benchmarks/dpot/run_benchmark.py {flags}"
    prov = _prov(
        [report],
        hardware,
        {"torch": data.get("torch")},
        data.get("python"),
        None,
        command,
        data.get("total_wall_s"),
    )
    return write_record(
        report.parent.parent / f"{mode}.json",
        "dpot",
        name,
        rows,
        _columns("dpot", rows, quick),
        plots=plots,
        config=config,
        seed=None,
        title=title,
        prov=prov,
    )


def convert_circuit(folder: Path) -> list[Path]:
    main = folder / "transfer.json"
    extra = sorted(p for p in folder.glob("transfer_*.json"))
    sources = [main, *extra]
    data = json.loads(main.read_text())
    machine, threads = data.get("machine", {}), data.get("threads", {})
    hardware = {
        "cpu": None,
        "gpu": None,
        "threads": None,
        "torch_threads": threads.get("torch"),
        "omp_num_threads": threads.get("OMP_NUM_THREADS"),
    }
    packages = {"torch": machine.get("torch")}
    walls = [json.loads(p.read_text()).get("wall_time_s") for p in sources]
    wall = sum(w for w in walls if w is not None) or None
    configs = {}
    for p in sources:
        configs.update(json.loads(p.read_text()).get("configs", {}))
    base = {
        "suite_config": "benchmarks/configs/circuit.yaml",
        "sources": [p.name for p in sources],
        "split": data.get("split"),
        "protocol": data.get("protocol"),
        "configs": configs,
        "label_spec": data.get("label_spec"),
        "target": data.get("target"),
    }
    command = "python benchmarks/circuitgcl/transfer.py" + "".join(
        f"; python benchmarks/circuitgcl/transfer.py --configs {p.stem.removeprefix('transfer_')}"
        for p in extra
    )
    suite = load_suite("circuit", CONFIGS)
    prov = _prov(sources, hardware, packages, machine.get("python"), machine.get("platform"), command, wall)
    made = set(data.get("plots", []))
    seeds = data.get("seeds", [])
    out = []
    rows = circuit_rows([str(p) for p in sources])["rows"]
    out.append(
        write_record(
            folder / "circuit-transfer.json",
            "circuit",
            "transfer",
            rows,
            _columns("circuit", rows),
            plots=[p for p in ("transfer_configs.png",) if p in made and (folder / p).is_file()],
            config=base,
            seed=seeds[0] if len(seeds) == 1 else None,
            title=f"{suite.title}; seeds {', '.join(map(str, seeds))}",
            prov=prov,
        )
    )
    rows = circuit_rows([str(p) for p in sources], per_design=True)["rows"]
    out.append(
        write_record(
            folder / "circuit-transfer-per-design.json",
            "circuit",
            "transfer-per-design",
            rows,
            _columns("circuit", rows),
            plots=[p for p in ("transfer_r2_per_design.png",) if p in made and (folder / p).is_file()],
            config=base,
            seed=None,
            title="CircuitGCL transfer per held-out sky130 design (mean over seeds)",
            prov=prov,
        )
    )
    return out


def _relative(value: Any) -> Any:
    """Absolute paths of the machine that ran a script -> repository-relative (or a placeholder)."""
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        p = Path(value)
        try:
            return p.resolve().relative_to(REPO).as_posix()
        except ValueError:
            return "<temporary folder>" if p.parts[1:2] == ("tmp",) else f"<outside the repository>/{p.name}"
    return value


def check_record(path: Path) -> bool:
    """Validate a record a script wrote itself; make its config free of machine paths. True if rewritten."""
    rec = read_record(path)
    clean = _relative(rec.get("config"))
    if clean == rec.get("config"):
        return False
    write_record(
        path,
        rec["suite"],
        rec["name"],
        rec["rows"],
        rec["columns"],
        plots=rec.get("plots", []),
        config=clean,
        seed=rec.get("seed"),
        title=rec.get("title"),
        prov=rec["provenance"],
    )
    return True


def main() -> int:
    made = []
    for report in sorted((RESULTS / "dpot").glob("*/benchmark.json")):
        made.append(convert_dpot(report))
    if (RESULTS / "circuitgcl" / "transfer.json").is_file():
        made += convert_circuit(RESULTS / "circuitgcl")
    script_records = [RESULTS / d for d in ("prose", "mlip", "pubchemqcr", "md")]
    for path in sorted(p for folder in script_records for p in folder.glob("*.json")):
        if json.loads(path.read_text()).get("schema") == SCHEMA and check_record(path):
            print(f"made paths relative in {path.relative_to(REPO)}")
    for p in made:
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
