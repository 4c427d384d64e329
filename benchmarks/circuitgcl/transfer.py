"""Transfer benchmark on the 12 Magic-extracted sky130 netlists: train on 7 designs, test on 5 never seen.

Configs: (a) GraphSAGE + MSE / CE, (b) + balanced losses (GAI / balanced softmax CE), (c) + SGRL
pre-training (the full CircuitGCL). Seeds 0, 1, 2; mean +- std and every seed. Writes
benchmarks/results/circuitgcl/transfer.json and PNG plots.

Set-up (see PROTOCOL below, stored in the JSON): one common coupling floor of 1e-16 F for every design
(the netlists were extracted with different Magic thresholds); model selection and early stopping on a
held-out TRAINING design (bgr_1.2v), never on test designs; an edge head that is invariant to the order
of the two endpoints, with topological pair features; SGRL sees the unlabelled test graphs (the anchor
code's transductive protocol; no labels). Run (about 15 min on one thread):

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE uv run python benchmarks/circuitgcl/transfer.py

``--quick`` checks the pipeline in about a minute (seed 0 only, QUICK epochs and SGRL settings); its numbers
say nothing about quality. ``--out-dir`` writes the JSON and plots elsewhere (the bench runner uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from scifm.bench.steps import CIRCUIT_KEYS
from scifm.circuitgcl.datasets import load_netlist_graph
from scifm.circuitgcl.metrics import r2_score
from scifm.circuitgcl.sgrl import SGRLConfig
from scifm.circuitgcl.tasks import TrainConfig, evaluate, fit_circuitgcl

ROOT = Path(__file__).resolve().parents[2]
DATA = (
    Path(os.environ["SCIFM_SHARED"]) / "data"
    if "SCIFM_SHARED" in os.environ
    else ROOT / ".." / "shared" / "data"
)
OUT = ROOT / "benchmarks" / "results" / "circuitgcl"
# held-out designs: two hierarchical C-only and three flat RC extractions, from five different teams;
# the two ajcci designs (por, brownout) share blocks, so both stay on the training side
TEST = (
    "sky130_td_ip__opamp_hp",
    "sky130_vbl_ip__overvoltage",
    "sky130_be_ip__lsxo",
    "sky130_ef_ip__rc_osc_500k",
    "sky130_sw_ip__bgrref_por",
)
VAL = "sky130_gff_ip__bgr_1.2v"  # a training-side design held out for model selection only
CC_FLOOR = 1e-16  # F: the largest Magic cthresh among the 12 netlists (0.1 fF), applied to all of them
CONFIGS = {
    "a_sage_mse_ce": dict(pretrain="none", edge_loss="mse", node_loss="ce"),
    "b_sage_balanced": dict(pretrain="none", edge_loss="gai", node_loss="bsce"),
    "c_circuitgcl": dict(pretrain="sgrl", edge_loss="gai", node_loss="bsce", sgrl_transductive=True),
}
# not in the default run (time budget): SGRL on the training graphs only; run with --configs c_inductive
EXTRA_CONFIGS = {
    "c_inductive": dict(pretrain="sgrl", edge_loss="gai", node_loss="bsce", sgrl_transductive=False),
}
COMMON = dict(
    hidden=64,
    layers=3,
    dropout=0.2,
    epochs=80,
    patience=15,
    lr=3e-3,
    sigma=0.03,  # chosen on the validation design (val MSE 0.0045 vs 0.0055 at 0.1)
    cc_floor=CC_FLOOR,
    val_designs=[VAL],
    edge_head="sym",
    pair_features=True,
)
SGRL = dict(dim=64, layers=3, hops=3, fanout=32, batch_size=2048, epochs=10, patience=5)
# --quick: one seed, a few epochs, one small SGRL epoch (a smoke test of every config, not a result)
QUICK = dict(seeds=[0], epochs=4, sgrl=dict(SGRL, dim=32, hops=2, fanout=8, epochs=1, patience=1))
PROTOCOL = {
    "cc_floor_farads": CC_FLOOR,
    "cc_floor_reason": "Magic cthresh differs per netlist (smallest Cc: 1e-16 F in 7 files, 1e-17 F in 4, "
    "1e-19 F in tt09-analogmux, whose 2829 pairs were 60% of the training targets with mean label 0.31 "
    "vs 0.53-0.67 in every test design); one floor for all designs makes the target set comparable",
    "model_selection": f"best epoch and early stopping on the held-out training design {VAL}",
    "sgrl_scope": "transductive: SGRL pre-trains on the training graphs plus the unlabelled test graphs "
    "(node types and topology only), as the anchor's code does; supervised training, feature scaling, "
    "loss statistics and model selection never see a test design",
    "edge_head": "head(h_a + h_b || h_a * h_b || log1p(shared devices), shares-device flag)",
    "r2": "edge_r2 pools all test pairs (sklearn on the concatenation); the anchor reports R^2 per test "
    "design, given in per_design, with their mean and median",
}
KEYS = CIRCUIT_KEYS  # the metrics summarised over seeds; the bench app's circuit step reads the same keys


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def reference(train: list, test: list) -> dict:
    """Edge R^2 of predicting the mean training label (after the floor): the level every model must beat."""
    ys = [g.restrict_cc(CC_FLOOR).edge_label() for g in train if g.name != VAL]
    mean = float(torch.cat(ys).mean())
    per, yt = {}, []
    for g in test:
        y = g.restrict_cc(CC_FLOOR).edge_label()
        per[g.name] = {"r2": r2_score(torch.full_like(y, mean), y), "n": len(y), "label_std": float(y.std())}
        yt.append(y)
    y = torch.cat(yt)
    return {
        "train_mean_label": mean,
        "train_mean_predictor_edge_r2": r2_score(torch.full_like(y, mean), y),
        "per_design": per,
    }


def plots(result: dict, out: Path = OUT) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = list(result["summary"])
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    for a, key, label in zip(
        ax, ("edge_r2", "edge_mae", "node_macro_f1"), ("edge R$^2$", "edge MAE", "node macro-F1"), strict=True
    ):
        m = [result["summary"][c][key]["mean"] for c in cfgs]
        s = [result["summary"][c][key]["std"] for c in cfgs]
        a.bar(range(len(cfgs)), m, yerr=s, capsize=4, color=["C0", "C1", "C2"])
        a.set_xticks(range(len(cfgs)), [c.split("_", 1)[0] for c in cfgs])
        a.set_title(label + f" (held-out, mean$\\pm$std, {len(result['seeds'])} seeds)", fontsize=8)
        a.axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(out / "transfer_configs.png", dpi=120)
    plt.close(fig)
    designs = result["split"]["test"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    w = 0.8 / len(cfgs)
    for k, c in enumerate(cfgs):
        vals = [[r["per_design"][d]["edge"]["r2"] for r in result["runs"][c]] for d in designs]
        ax.bar(
            [i + k * w for i in range(len(designs))],
            [statistics.mean(v) for v in vals],
            w,
            yerr=[statistics.pstdev(v) for v in vals],
            capsize=3,
            label=c,
        )
    ax.set_xticks(
        [i + w for i in range(len(designs))], [d.replace("sky130_", "") for d in designs], fontsize=7
    )
    ax.set_ylabel("edge R$^2$ per held-out design")
    ax.set_ylim(bottom=max(-3.0, ax.get_ylim()[0]))
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "transfer_r2_per_design.png", dpi=120)
    plt.close(fig)
    return ["transfer_configs.png", "transfer_r2_per_design.png"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--quick: 0)")
    ap.add_argument(
        "--epochs", type=int, default=None, help=f"default {COMMON['epochs']} (--quick: {QUICK['epochs']})"
    )
    ap.add_argument(
        "--configs",
        nargs="+",
        default=list(CONFIGS),
        choices=[*CONFIGS, *EXTRA_CONFIGS],
        help="a subset other than the default three writes transfer_<names>.json (no target, no plots)",
    )
    ap.add_argument("--quick", action="store_true", help="pipeline check in about a minute (not a result)")
    ap.add_argument("--out-dir", type=Path, default=OUT, help="where the JSON and plots go")
    args = ap.parse_args()
    if args.seeds is None:
        args.seeds = QUICK["seeds"] if args.quick else [0, 1, 2]
    if args.epochs is None:
        args.epochs = QUICK["epochs"] if args.quick else COMMON["epochs"]
    sgrl = QUICK["sgrl"] if args.quick else SGRL
    out_dir = args.out_dir
    torch.set_num_threads(1)
    t0 = time.time()
    c0 = time.process_time()
    files = sorted((DATA / "circuits" / "sky130").glob("*.spice"))
    graphs = {f.name.split("--")[0]: load_netlist_graph(f) for f in files}
    train = [g for n, g in graphs.items() if n not in TEST]
    test = [graphs[n] for n in TEST]
    result = {
        "split": {"train": [g.name for g in train], "validation": VAL, "test": [g.name for g in test]},
        "protocol": PROTOCOL,
        "reference": reference(train, test),
        "configs": {k: {**COMMON, "epochs": args.epochs, **v, "sgrl": sgrl} for k, v in CONFIGS.items()},
        "seeds": args.seeds,
        "label_spec": "sky130 (edge 1e-19..1e-13 F, node 1e-18..1e-12 F)",
        "graph_sizes": {g.name: g.counts() for g in graphs.values()},
        "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "runs": {},
        "time_s": {},
        "cpu_s": {},
    }
    print(f"loaded {len(graphs)} designs in {time.time() - t0:.1f}s", flush=True)
    chosen = {k: v for k, v in {**CONFIGS, **EXTRA_CONFIGS}.items() if k in args.configs}
    full = list(chosen) == list(CONFIGS)
    result["configs"] = {k: {**COMMON, "epochs": args.epochs, **v, "sgrl": sgrl} for k, v in chosen.items()}
    for name, over in chosen.items():
        result["runs"][name], result["time_s"][name], result["cpu_s"][name] = [], [], []
        for seed in args.seeds:
            t1, c1 = time.time(), time.process_time()
            cfg = TrainConfig(**{**COMMON, "epochs": args.epochs, **over}, seed=seed, sgrl=SGRLConfig(**sgrl))
            tm = fit_circuitgcl(train, cfg, unlabelled=test)
            r = evaluate(tm.edge_model, tm.node_model, tm.batches(test))
            r["seed"] = seed
            r["val"] = {
                "design": VAL,
                "edge_neg_mse": tm.info["edge"]["best_val"],
                "node_macro_f1": tm.info["node"]["best_val"],
                "edge_epochs_run": len(tm.info["edge"]["history"]),
                "node_epochs_run": len(tm.info["node"]["history"]),
            }
            if "sgrl" in tm.info:
                h = tm.info["sgrl"]["history"][-1]
                r["sgrl_last"] = {
                    "loss_rs": h["loss_rs"],
                    "loss_al": h["loss_al"],
                    "time_s": tm.info["sgrl"]["time_s"],
                    "epochs_run": len(tm.info["sgrl"]["history"]),
                    "graphs": tm.info["sgrl"]["graphs"],
                }
            result["runs"][name].append(r)
            result["time_s"][name].append(time.time() - t1)
            result["cpu_s"][name].append(time.process_time() - c1)
            print(
                f"{name} seed {seed}: "
                + " ".join(f"{k} {r[k]:.4f}" for k in KEYS[:4])
                + f" ({time.time() - t1:.0f}s)",
                flush=True,
            )
    result["summary"] = {
        c: {
            k: {
                "mean": statistics.mean(r[k] for r in runs),
                "std": statistics.pstdev(r[k] for r in runs),
                "per_seed": [r[k] for r in runs],
            }
            for k in KEYS
        }
        for c, runs in result["runs"].items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        result["quick"] = True
    if not full:
        result["wall_time_s"], result["cpu_time_s"] = time.time() - t0, time.process_time() - c0
        _atomic_json(out_dir / f"transfer_{'_'.join(chosen)}.json", result)
        print(json.dumps({"summary": result["summary"], "wall_time_s": result["wall_time_s"]}, indent=1))
        return 0
    a, c = result["summary"]["a_sage_mse_ce"], result["summary"]["c_circuitgcl"]
    rel = (
        (c["edge_r2"]["mean"] - a["edge_r2"]["mean"]) / abs(a["edge_r2"]["mean"])
        if a["edge_r2"]["mean"]
        else float("nan")
    )
    result["target"] = {
        "definition": "(c) beats (a) on held-out designs: pooled edge R^2 gain (c - a) / |a| >= 20% and "
        "higher pooled node macro-F1 (means over seeds)",
        "r2_relative_gain_c_vs_a": rel,
        "r2_gain_ge_20pct": bool(rel >= 0.2),
        "f1_c_gt_a": bool(c["node_macro_f1"]["mean"] > a["node_macro_f1"]["mean"]),
    }
    result["wall_time_s"] = time.time() - t0
    result["cpu_time_s"] = time.process_time() - c0
    # headline metrics (config c, mean over seeds)
    result.update(
        {k: c[k]["mean"] for k in ("edge_r2", "edge_mae", "node_macro_f1", "node_accuracy")},
        n_test_designs=len(test),
    )
    result["plots"] = plots(result, out_dir)
    _atomic_json(out_dir / "transfer.json", result)
    print(
        json.dumps(
            {"summary": result["summary"], "target": result["target"], "wall_time_s": result["wall_time_s"]},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
