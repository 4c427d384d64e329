"""How much does a zero-shot SNIS ESS move between sampling seeds? Several trained models, side by side.

At ESS ~ 0.01 with 10^4 proposals, ~100 effective samples carry the estimate and a handful of large weights
decide it, so one seed per system says little about whether a model meets a threshold. This runs
`sci-fm sample prose --method snis` for every (model, system, seed), reusing any run folder that already
holds a metrics.json (so the benchmark's own seed-0 runs can be linked in), and records per model and system
the mean, minimum and maximum ESS and the mean energy and torus W2.

    OMP_NUM_THREADS=1 uv run python benchmarks/prose/snis_seeds.py --data runs/pep_transfer/dipeptides.h5 \
        --model stop18=runs/pep_transfer/transfer_run --model stiff=runs/pep_transfer_stiff/transfer_run \
        --systems TC MQ WT VR IY --seeds 0 1 2 --workdir runs/snis_seeds --workers 2

Writes benchmarks/results/prose/snis-seeds-<UTC time>.json (schema scifm-bench/1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _repo_relative, _sample  # noqa: E402  (the transfer benchmark's sampling call)

REPO = Path(__file__).resolve().parents[2]
COLUMNS = {
    "ess_mean": {"better": "higher", "unit": "", "label": "SNIS ESS (mean over seeds)"},
    "ess_min": {"better": "higher", "unit": "", "label": "ESS min"},
    "ess_max": {"better": "higher", "unit": "", "label": "ESS max"},
    "seeds_meeting_0.01": {"better": "higher", "unit": "", "label": "seeds with ESS >= 0.01"},
    "energy_w2_mean": {"better": "lower", "unit": "kT", "label": "E-W2 (mean)"},
    "torus_w2_mean": {"better": "lower", "unit": "rad", "label": "T-W2 (mean)"},
    "n_seeds": {"better": None, "unit": "", "label": "seeds"},
}


def snis(a, model: str, system: str, seed: int, out: Path, *extra: str) -> dict:
    """metrics.json of `sci-fm sample prose --method snis` (or the method in `extra`) in `out`, through the
    transfer benchmark's own `_sample` (same options; a folder with a metrics.json is reused)."""
    opts = argparse.Namespace(quick=False, workers=a.workers, seed=seed, device="cpu", platform=a.platform)
    return _sample(opts, Path(model), system, Path(a.data), out, a.n, *extra)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="peptide_md HDF5 with each system's reference MD")
    p.add_argument("--model", action="append", required=True, help="LABEL=RUN_DIR (repeat for several)")
    p.add_argument("--systems", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=10_000, help="proposals per run")
    p.add_argument("--workdir", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--platform", default="Reference")
    p.add_argument(
        "--md",
        action="store_true",
        help="also plain Langevin MD from the built structure with as many force evaluations as one SNIS "
        "run, one run per seed (the equal-cost baseline; it does not use the model)",
    )
    p.add_argument(
        "--symmetrise",
        nargs="+",
        default=["none"],
        choices=["none", "rings", "flips"],
        help="`sci-fm sample prose --symmetrise` kinds, each model is run with each (rows of a kind other "
        "than none get a '+<kind>' suffix on the model label)",
    )
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "prose"))
    a = p.parse_args()
    models = {}
    for m in a.model:
        label, sep, run = m.partition("=")
        if not sep or not (Path(run) / "model").is_dir():
            raise SystemExit(f"--model {m}: expected LABEL=RUN_DIR of `sci-fm train prose`")
        models[label] = run

    import torch

    from scifm.core.provenance import utc_timestamp, write_record

    torch.set_num_threads(1)
    wd = Path(a.workdir)
    t0 = time.perf_counter()
    rows = []
    runs = [(label, run, kind) for label, run in models.items() for kind in a.symmetrise]
    for label, run, kind in runs:
        sym = [] if kind == "none" else ["--symmetrise", kind]
        label = label if kind == "none" else f"{label}+{kind}"
        for s in a.systems:
            ms = [snis(a, run, s, seed, wd / f"{label}_{s}_seed{seed}", *sym) for seed in a.seeds]
            ess = np.array([m["ess"] for m in ms], dtype=float)
            rows.append(
                {
                    "task": f"zero-shot {s}",
                    "model": label,
                    "ess_mean": float(ess.mean()),
                    "ess_min": float(ess.min()),
                    "ess_max": float(ess.max()),
                    "seeds_meeting_0.01": int((ess >= 0.01).sum()),
                    "energy_w2_mean": float(np.mean([m["energy_w2"] for m in ms])),
                    "torus_w2_mean": float(np.mean([m["torus_w2"] for m in ms])),
                    "n_seeds": len(ms),
                    "ess_per_seed": " ".join(f"{e:.4f}" for e in ess),  # rows hold scalars only
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    for s in a.systems if a.md else []:
        run = next(iter(models.values()))
        md = ["--method", "md", "--md-interval", str(max(1, a.n // 2000))]
        ms = [snis(a, run, s, seed, wd / f"md_{s}_seed{seed}", *md) for seed in a.seeds]
        rows.append(
            {
                "task": f"zero-shot {s}",
                "model": "plain MD (cost of one SNIS run)",
                "energy_w2_mean": float(np.mean([m["energy_w2"] for m in ms])),
                "torus_w2_mean": float(np.mean([m["torus_w2"] for m in ms])),
                "n_seeds": len(ms),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    wall = time.perf_counter() - t0
    stamp = utc_timestamp().replace(":", "")
    config = {k: v for k, v in vars(a).items() if k not in ("workdir", "results", "data", "model")}
    config["models"] = {label: _repo_relative(run) for label, run in models.items()}
    config["model_training"] = {label: _training(run) for label, run in models.items()}
    path = write_record(
        Path(a.results) / f"snis-seeds-{stamp}.json",
        suite="prose",
        name="snis-seeds",
        title="Prose: zero-shot SNIS ESS over sampling seeds, models side by side",
        rows=rows,
        columns=COLUMNS,
        config=config,
        seed=a.seeds[0],
        wall_time_s=wall,
        command=" ".join(sys.argv),
    )
    print(f"record: {path} ({wall:.0f} s)")
    return 0


def _training(run: str) -> dict:
    """What a model's metrics.json says about its training: steps, wall time, the weights it started from,
    the last losses and the reverse-KL settings (empty where the file is missing)."""
    f = Path(run) / "metrics.json"
    if not f.is_file():
        return {}
    m = json.loads(f.read_text())
    fit = m.get("fit") or {}
    out = {
        "steps": fit.get("global_step"),
        "wall_time_s": fit.get("wall_time_s"),
        "n_parameters": m.get("n_parameters"),
        "n_train_frames": m.get("n_train_frames"),
        "val_loss": (m.get("final") or {}).get("val/loss"),
    }
    if m.get("init_from"):
        out["init_from"] = _repo_relative(m["init_from"])
    if m.get("reverse_kl"):
        out["reverse_kl"] = m["reverse_kl"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
