"""Python steps that suite configs call as ``python: scifm.bench.steps:<function>``.

Each step takes keyword arguments from the config and returns a dict of metrics (merged into the job's
row) or None. Steps that need a domain package import it lazily, so the bench app loads without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from scifm.core.errors import ConfigError, DataError


def subset_extxyz(
    out: str,
    source: str | None = None,
    max_traj: int | None = None,
    max_per_traj: int | None = None,
    stride: int = 1,
) -> dict[str, Any]:
    """Write a subset of an extxyz file, whole trajectories kept together (splits are by trajectory).

    ``source``: extxyz file; None means the bundled MLIP data set. Frames are grouped by
    ``info["traj_id"]`` (a frame without one is its own trajectory); the first ``max_traj`` trajectories
    are kept, each thinned to every ``stride``-th frame and cut to ``max_per_traj`` frames.
    """
    import ase.io

    if source is None:
        from scifm.mlip.data import default_dataset_path

        source = str(default_dataset_path())
    src = Path(source)
    if not src.is_file():
        raise DataError(src, "subset source file not found")
    frames = ase.io.read(src, index=":")
    groups: dict[Any, list] = {}
    for k, atoms in enumerate(frames):
        groups.setdefault(atoms.info.get("traj_id", f"frame{k}"), []).append(atoms)
    keys = list(groups)[: max_traj if max_traj else None]
    kept = []
    for key in keys:
        traj = groups[key][:: max(1, int(stride))]
        kept.extend(traj[: max_per_traj if max_per_traj else None])
    if not kept:
        raise DataError(src, "the subset is empty")
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(dst, kept, format="extxyz")
    return {"n_subset_frames": len(kept), "n_subset_traj": len(keys)}


def mlip_speed(
    model: str,
    data: str | None = None,
    n_steps: int = 20,
    n_warmup: int = 3,
    frame: int = 0,
    dtype: str = "float32",
    device: str = "cpu",
) -> dict[str, Any]:
    """Energy+force calls per second of an exported MLIP on one frame, as an MD step would make them.

    Atoms are displaced by 1e-3 Å between calls so that every call rebuilds the neighbour list and
    recomputes (no cache hit). Returns ``steps_per_s``, ``ms_per_step`` and ``speed_n_atoms``.
    """
    import ase.io
    import numpy as np

    from scifm.mlip.calculator import SciFMCalculator

    if n_steps < 1:
        raise ConfigError("mlip_speed: n_steps must be >= 1")
    if data is None:
        from scifm.mlip.data import default_dataset_path

        data = str(default_dataset_path())
    model_dir = Path(model)
    if (model_dir / "model").is_dir():
        model_dir = model_dir / "model"
    atoms = ase.io.read(data, index=frame)
    atoms.calc = SciFMCalculator(model_dir, dtype=dtype, device=device)
    rng = np.random.default_rng(0)
    for _ in range(n_warmup):
        atoms.positions += 1e-3 * rng.standard_normal(atoms.positions.shape)
        atoms.get_forces()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        atoms.positions += 1e-3 * rng.standard_normal(atoms.positions.shape)
        atoms.get_forces()
    dt = time.perf_counter() - t0
    return {"steps_per_s": n_steps / dt, "ms_per_step": 1e3 * dt / n_steps, "speed_n_atoms": len(atoms)}


# --- converters: a benchmark script's own JSON -> table rows ({"rows": [...]}, one row per entry) --------


def _read_json(path: str | Path) -> dict[str, Any]:
    import json

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(p, "benchmark output not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(p, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(p, "expected a JSON object")
    return data


def _need(data: dict, path: str | Path, *keys: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(Path(path), f"missing key(s) {', '.join(missing)}")


def dpot_rows(report: str) -> dict[str, Any]:
    """Rows of ``benchmarks/dpot/run_benchmark.py``'s ``benchmark.json``.

    Pre-training: one row per (dataset, model) for DPOT (trained on the mixture) and the per-dataset FNO;
    transfer: one row per fine-tuned model on the held-out set. ``l2re`` is the rollout L2RE over the
    whole horizon, ``l2re_last_step`` the error at the last rollout step; ``train_s`` the model's training
    wall time (DPOT pre-training is shared by the three datasets).
    """
    data = _read_json(report)
    _need(data, report, "pretrain", "transfer", "training")
    train = data["training"]
    params = {"dpot": data.get("dpot_parameters"), "fno": data.get("fno_parameters")}

    def metrics(r: dict) -> dict[str, Any]:
        steps = r.get("per_step_l2re") or [None]
        return {
            "l2re": r["l2re"],
            "l2re_last_step": steps[-1],
            "horizon": r.get("horizon"),
            "n_test_trajectories": r.get("n_trajectories"),
        }

    rows = []
    for ds, res in data["pretrain"]["datasets"].items():
        for key, model, run in (
            ("dpot", "DPOT (pre-trained on the mixture)", "dpot_pretrain"),
            ("fno", "FNO (this dataset only)", f"fno_{ds}"),
        ):
            t = train.get(run, {})
            rows.append(
                {
                    "stage": "pre-train",
                    "dataset": ds,
                    "model": model,
                    **metrics(res[key]),
                    "n_parameters": params[key],
                    "train_s": t.get("wall_s"),
                    "train_steps": t.get("steps"),
                }
            )
    tr = data["transfer"]
    n_ft = tr.get("n_finetune_trajectories")
    for key, model, run in (
        ("pretrained", "DPOT pre-trained + fine-tuned", "finetune_pretrained"),
        ("scratch", "DPOT from scratch", "finetune_scratch"),
        ("fno_scratch", "FNO from scratch", "finetune_fno"),
    ):
        if key not in tr["results"]:
            continue
        t = train.get(run, {})
        row = {
            "stage": f"transfer ({n_ft} fine-tune traj.)",
            "dataset": tr.get("dataset"),
            "model": model,
            **metrics(tr["results"][key]),
            "n_parameters": params["fno" if "fno" in key else "dpot"],
            "train_s": t.get("wall_s"),
            "train_steps": t.get("steps"),
        }
        if key == "pretrained":
            row["l2re_reduction_vs_scratch"] = tr.get("l2re_reduction_pretrained_vs_scratch")
        rows.append(row)
    return {"rows": rows, "total_wall_s": data.get("total_wall_s")}


CIRCUIT_CONFIGS = {  # config key of benchmarks/circuitgcl/transfer.py -> table label
    "a_sage_mse_ce": "(a) GraphSAGE, MSE + CE",
    "b_sage_balanced": "(b) + balanced losses",
    "c_circuitgcl": "(c) + SGRL (CircuitGCL, transductive)",
    "c_inductive": "(c′) + SGRL (inductive)",
}
CIRCUIT_KEYS = (
    "edge_r2",
    "edge_mae",
    "node_macro_f1",
    "node_accuracy",
    "edge_r2_design_mean",
    "edge_r2_design_median",
    "node_macro_f1_design_mean",
)
CIRCUIT_STD = ("edge_r2", "edge_mae", "node_macro_f1", "node_accuracy")  # metrics shown with their std


def circuit_rows(
    reports: list[str] | str, per_design: bool = False, reference: bool = True
) -> dict[str, Any]:
    """Rows of ``benchmarks/circuitgcl/transfer.py``'s JSON files (``transfer.json`` and the extra-config
    files ``transfer_<config>.json``).

    Default: one row per config with the mean over seeds of each metric, the (population) std of the
    pooled metrics as ``<metric>_std``, and the seeds with the per-seed edge R² and node macro-F1 as
    text; plus a reference row (predicting the mean training label). ``per_design=True``: one row per
    (config, test design) with the seed-mean edge R² and node macro-F1 (the board's R²-per-design plot
    uses these).
    """
    import statistics

    paths = [reports] if isinstance(reports, str) else list(reports)
    rows: list[dict[str, Any]] = []
    ref_row = None
    for path in paths:
        data = _read_json(path)
        _need(data, path, "summary", "runs", "split")
        for cfg, summ in data["summary"].items():
            label = CIRCUIT_CONFIGS.get(cfg, cfg)
            runs = data["runs"][cfg]
            seeds = [r.get("seed") for r in runs]
            if per_design:
                for design in data["split"]["test"]:
                    per = [r["per_design"][design] for r in runs if design in r.get("per_design", {})]
                    if not per:
                        continue
                    rows.append(
                        {
                            "method": label,
                            "design": design.removeprefix("sky130_"),
                            "edge_r2": statistics.mean(p["edge"]["r2"] for p in per),
                            "edge_r2_std": statistics.pstdev(p["edge"]["r2"] for p in per),
                            "node_macro_f1": statistics.mean(p["node"]["macro_f1"] for p in per),
                            "n_edges": per[0]["edge"].get("n"),
                            "n_seeds": len(per),
                        }
                    )
                continue
            row: dict[str, Any] = {"method": label}
            for k in CIRCUIT_KEYS:
                if k in summ:
                    row[k] = summ[k]["mean"]
                    if k in CIRCUIT_STD:
                        row[f"{k}_std"] = summ[k]["std"]
            row["seeds"] = ", ".join(map(str, seeds))
            for k, short in (("edge_r2", "edge R²"), ("node_macro_f1", "node F1")):
                if k in summ:
                    row[f"{short} per seed"] = ", ".join(f"{v:.3f}" for v in summ[k]["per_seed"])
            times = data.get("time_s", {}).get(cfg)
            row["train_s_per_seed"] = statistics.mean(times) if times else None
            rows.append(row)
        if reference and not per_design and ref_row is None and "reference" in data:
            ref_row = {
                "method": "reference: mean training label",
                "edge_r2": data["reference"].get("train_mean_predictor_edge_r2"),
            }
    if not rows:
        raise DataError(Path(paths[0]), "no configs to report")
    return {"rows": rows + ([ref_row] if ref_row else [])}


def record_rows(results: str, pattern: str = "*.json") -> dict[str, Any]:
    """The rows of the newest ``scifm-bench/1`` record in ``results`` (a script that writes records itself,
    such as ``benchmarks/prose/run.py``)."""
    from scifm.core.provenance import read_record

    found = sorted(Path(results).glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise DataError(Path(results), f"no record matching {pattern}")
    return {"rows": read_record(found[-1])["rows"]}
