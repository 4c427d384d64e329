"""MLIP commands: ``train mlip``, ``eval mlip``, ``data generate``."""

from __future__ import annotations

import argparse
import json

from scifm.core.cli import CommandTree, lazy_command


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", help="training data (.extxyz or atomistic .h5); default: the bundled dataset")
    p.add_argument("--valid", help="validation data; default: split from --train by trajectory")
    p.add_argument("--test", help="test data; default: split from --train by trajectory")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,valid,test fractions by trajectory id")
    p.add_argument("--model", default="painn", help="model name from the registry")
    p.add_argument(
        "--model-config", default=None, help="YAML/JSON file or inline mapping: width, layers, l_max..."
    )
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius (Å)")
    p.add_argument(
        "--zbl",
        action="store_true",
        help="add a ZBL nuclear-repulsion prior below bonding distances (robust relaxations and hot MD)",
    )
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument(
        "--max-time",
        type=float,
        default=8.0,
        help="stop training after this many minutes (a safety cap; 0 = none)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--scheduler",
        choices=["plateau", "cosine", "cosine-time", "none"],
        default="cosine",
        help="cosine: over --max-epochs; cosine-time: over the --max-time budget (for time-capped runs); "
        "plateau: halve on a stalled validation loss",
    )
    p.add_argument("--ema-decay", type=float, default=0.99, help="0 disables EMA")
    p.add_argument("--patience", type=int, default=None, help="early stopping patience (epochs)")
    p.add_argument("--grad-clip", type=float, default=10.0)
    for k, w in (("energy", 1.0), ("forces", 10.0), ("stress", 1.0)):
        p.add_argument(f"--{k}-weight", type=float, default=w, help=f"loss weight of {k}")
    for k, unit in (("charges", "e"), ("dipole", "e·Å")):
        p.add_argument(
            f"--{k}-weight",
            type=float,
            default=None,
            help=f"loss weight of {k} ({unit}); default: BAMBOO's weight in eV units for "
            "charge-predicting models (see scifm.mlip.train.bamboo_loss_weights), else 0",
        )
    p.add_argument(
        "--virial-weight",
        type=float,
        default=0.0,
        help="loss weight of the virial Σ (r_i - r̄) ⊗ F_i of non-periodic frames (clusters), per atom, "
        "eV²: the collective part of the forces that sets a liquid's pressure (BAMBOO's cluster loss; "
        "periodic frames use --stress-weight)",
    )
    p.add_argument(
        "--qeq-weight",
        type=float,
        default=0.0,
        help="BAMBOO's QEq-force regulariser (charge-predicting models; the anchor's value "
        "is ~1e4 at --forces-weight 10)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", default="runs/mlip", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--logger", choices=["csv", "wandb"], default="csv")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    p.add_argument("--accelerator", default="cpu", help="cpu | gpu | auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _train(args) -> int:
    from scifm.mlip.train import train_mlip

    metrics = train_mlip(args)
    if metrics:
        keys = ("n_frames", "energy_mae_meV_per_atom", "forces_mae_meV_per_A", "wall_time_s")
        print(json.dumps({k: metrics[k] for k in keys}, indent=1))
        print(f"run written to {args.out}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory or exported model directory")
    p.add_argument("--data", required=True, help=".extxyz or atomistic .h5 with energies and forces")
    p.add_argument("--out", default="metrics.json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")


def _eval(args) -> int:
    from scifm.mlip.train import evaluate_mlip

    metrics = evaluate_mlip(args)
    print(
        json.dumps({k: metrics[k] for k in ("n_frames", "energy_mae_meV", "forces_mae_meV_per_A")}, indent=1)
    )
    return 0


def _gen_args(p: argparse.ArgumentParser) -> None:
    from scifm.mlip.data.generate import configure

    configure(p)


def _gen(args):
    from scifm.mlip.data.generate import run

    return run(args)


def register(tree: CommandTree) -> None:
    tree.add("train", "mlip", _train_args, _train, help="train a machine-learning interatomic potential")
    tree.add("eval", "mlip", _eval_args, _eval, help="evaluate an exported MLIP on a data file")
    tree.add(
        "data",
        "generate",
        _gen_args,
        _gen,
        help="generate GFN2-xTB-labelled frames (perturbed + MD) from SMILES",
    )
    tree.add(
        "data",
        "pubchemqcr",
        *lazy_command("scifm.mlip.pubchemqcr.generate"),
        help="generate PubChemQCR-format relaxation trajectories (xTB stages) into LMDB shards",
    )
    tree.add(
        "convert",
        "pubchemqcr",
        *lazy_command("scifm.mlip.pubchemqcr.convert"),
        help="convert PubChemQCR LMDB shards to the atomistic HDF5 spec",
    )
    tree.add(
        "relax",
        None,
        *lazy_command("scifm.mlip.relax"),
        help="relax molecules with an MLIP and compare with reference minima",
    )
