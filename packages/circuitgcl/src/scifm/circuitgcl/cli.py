"""``sci-fm train circuit`` and ``sci-fm eval circuit``.

train: parse the training and test netlists (or CircuitGCL ``.npz``/``.pt`` graphs), fit the feature
scaler, optionally pre-train SGRL, train the edge (Cc regression) and node (Cg class) models on the
training designs only, evaluate on the test designs, and write to ``--out``: ``metrics.json``, plots and
the exported models (``edge/``, ``node/``, ``sgrl/``: safetensors + JSON, no pickle).
eval: load such a directory and score other designs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from scifm.core.errors import ConfigError

from .graph import ANCHOR, SKY130, FeatureScaler, LabelSpec
from .losses import CLASS_LOSSES, REGRESSION_LOSSES
from .models import CircuitGNN
from .sgrl import SGRL, SGRLConfig
from .tasks import TrainConfig, Trained, evaluate, fit_circuitgcl, model_arch

LABEL_SPECS = {"sky130": SKY130, "anchor": ANCHOR}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=float)
        fh.write("\n")
    os.replace(tmp, path)


def _load_graphs(paths: list[str], labels: str | None) -> list:
    from .datasets import load_any

    spec = LABEL_SPECS[labels] if labels else None
    for p in paths:  # validate every path before any parsing work
        if not Path(p).is_file():
            from scifm.core.errors import DataError

            raise DataError(p, "file not found")
    return [load_any(p, spec) for p in paths]


def _configure_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test", nargs="+", required=True, metavar="NETLIST", help="held-out designs")
    p.add_argument("--out", required=True, help="output directory (metrics.json, plots, models)")
    p.add_argument(
        "--labels",
        choices=sorted(LABEL_SPECS),
        default=None,
        help="label window (default: sky130 for netlists, anchor for .npz/.pt)",
    )


def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", nargs="+", required=True, metavar="NETLIST", help="training designs")
    _configure_common(p)
    p.add_argument("--pretrain", choices=["sgrl", "none"], default="sgrl")
    p.add_argument("--loss", choices=REGRESSION_LOSSES, default="gai", help="edge regression loss")
    p.add_argument("--class-loss", choices=CLASS_LOSSES, default="bsce", help="node classification loss")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--sgrl-epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=96)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--sigma", type=float, default=0.1, help="Balanced-MSE noise sigma (label units)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cc-floor",
        type=float,
        default=0.0,
        help="drop coupling targets below this many farads in every design (common extraction threshold)",
    )
    p.add_argument(
        "--val-designs",
        nargs="*",
        default=[],
        metavar="NAME",
        help="training designs (file stems) used only for model selection (default: 20%% random targets)",
    )
    p.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0: off)")
    p.add_argument(
        "--sgrl-transductive",
        action="store_true",
        help="SGRL also sees the unlabelled test graphs (the anchor code's protocol)",
    )


def configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="directory written by 'sci-fm train circuit'")
    _configure_common(p)


def _save(trained: Trained, out: Path) -> None:
    from scifm.core.export import save_model

    cfg = trained.cfg
    common = {"train_config": cfg.to_dict(), "scaler": trained.scaler.state()}
    for task, model in (("edge", trained.edge_model), ("node", trained.node_model)):
        arch = model_arch(task, cfg, cfg.sgrl.dim if trained.sgrl else 0)
        save_model(
            out / task,
            name="circuitgcl.CircuitGNN",
            config=arch,
            state_dict=model.state_dict(),
            meta={**common, "criterion": trained.info[task]["criterion_state"]},
        )
    if trained.sgrl is not None:
        save_model(
            out / "sgrl",
            name="circuitgcl.SGRL",
            config=cfg.sgrl.__dict__,
            state_dict=trained.sgrl.state_dict(),
            meta={},
        )


def load_trained(directory: str | Path) -> Trained:
    from scifm.core.export import load_model

    d = Path(directory)
    models = {}
    meta = {}
    for task in ("edge", "node"):
        _, arch, state, meta = load_model(d / task)
        m = CircuitGNN(**arch)
        m.load_state_dict(state)
        m.eval()
        models[task] = m
    cfg = TrainConfig.from_dict(meta["train_config"])
    sgrl = None
    if (d / "sgrl").exists():
        _, scfg, state, _ = load_model(d / "sgrl")
        sgrl = SGRL(SGRLConfig(**scfg))
        sgrl.load_state_dict(state)
    return Trained(cfg, FeatureScaler.from_state(meta["scaler"]), sgrl, models["edge"], models["node"], {})


def _plots(result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = result["per_design"]
    names = list(per)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].bar(names, [per[n].get("edge", {}).get("r2", float("nan")) for n in names])
    ax[0].set_ylabel("edge R$^2$")
    ax[1].bar(names, [per[n].get("node", {}).get("macro_f1", float("nan")) for n in names])
    ax[1].set_ylabel("node macro-F1")
    for a in ax:
        a.tick_params(axis="x", rotation=60, labelsize=7)
    fig.tight_layout()
    path = out / "per_design.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path.name]


def run_train(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.sgrl_epochs < 1:
        raise ConfigError("--epochs and --sgrl-epochs must be >= 1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    train = _load_graphs(args.train, args.labels)
    test = _load_graphs(args.test, args.labels)
    cfg = TrainConfig(
        edge_loss=args.loss,
        node_loss=args.class_loss,
        pretrain=args.pretrain,
        epochs=args.epochs,
        hidden=args.hidden,
        lr=args.lr,
        sigma=args.sigma,
        seed=args.seed,
        cc_floor=args.cc_floor,
        val_designs=list(args.val_designs),
        patience=args.patience,
        sgrl_transductive=args.sgrl_transductive,
        sgrl=SGRLConfig(epochs=args.sgrl_epochs),
    )
    try:
        trained = fit_circuitgcl(train, cfg, log=print, unlabelled=test)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    result = evaluate(trained.edge_model, trained.node_model, trained.batches(test))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _save(trained, out)
    result.update(
        train_designs=[g.name for g in train],
        test_designs=[g.name for g in test],
        config=cfg.to_dict(),
        wall_time_s=time.time() - t0,
        plots=_plots(result, out),
    )
    _write_json(out / "metrics.json", result)
    print(
        f"edge R2 {result.get('edge_r2', float('nan')):.4f}  MAE {result.get('edge_mae', float('nan')):.4f}  "
        f"node macro-F1 {result.get('node_macro_f1', float('nan')):.4f}  acc "
        f"{result.get('node_accuracy', float('nan')):.4f}  ({len(test)} test designs) -> {out}/metrics.json"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    t0 = time.time()
    trained = load_trained(args.model)
    test = _load_graphs(args.test, args.labels)
    result = evaluate(trained.edge_model, trained.node_model, trained.batches(test))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.update(
        model=str(args.model),
        test_designs=[g.name for g in test],
        wall_time_s=time.time() - t0,
        plots=_plots(result, out),
    )
    _write_json(out / "metrics.json", result)
    print(
        f"edge R2 {result.get('edge_r2', float('nan')):.4f}  node macro-F1 "
        f"{result.get('node_macro_f1', float('nan')):.4f} -> {out}/metrics.json"
    )
    return 0


def register(tree) -> None:
    tree.add(
        "train",
        "circuit",
        configure=configure_train,
        run=run_train,
        help="train CircuitGCL (SGRL + GraphSAGE) on netlists; test on held-out designs",
    )
    tree.add(
        "eval",
        "circuit",
        configure=configure_eval,
        run=run_eval,
        help="evaluate a trained CircuitGCL model directory on netlists",
    )


__all__ = ["register", "load_trained", "LabelSpec"]
