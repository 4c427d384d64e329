"""Ensemble knowledge distillation (BAMBOO §3): a student's energy readout learns the teachers' mean.

Teachers: ≥ 3 independently seeded models. Student: one of them (default the first), fine-tuned; only its
energy readout changes (``scifm.md.finetune``). Targets: the committee mean energy Ē, forces F̄ and virial
W̄ = -V σ̄ on periodic bulk MD frames (dispersion off on both sides: it is not trainable). Every 3rd frame is
held out for validation (as in the anchor).

Per bulk frame (one optimiser step), then one cluster batch (one step), alternating:
    L_bulk    = w_F·mean|F - F̄|² + w_E·(E - Ē)²/N + w_W·mean((W - W̄)²)/N
    L_cluster = c_E·mean((ΔE/N - ⟨ΔE/N⟩)²) + c_F·mean|F - F_ref|² + c_W·mean((W - W_ref)²)/N
with the anchor's weights (w_F, w_E, w_W) = (3, 0.01, 0.01), (c_E, c_F, c_W) = (0.3, 1, 0.1). The anchor
states them in kcal/mol; all terms are squared energies (or energies/Å), so in eV the ratios are the same
and only the learning rate absorbs the unit factor. Cluster energies are compared after removing the batch
mean of the per-atom error (no reference energies needed); cluster virials are W = Σ_i r_i ⊗ F_i.
Optimiser: Adam (lr, default 1e-4), ExponentialLR γ = 0.99 per epoch.

Outputs (``--out``): ``model/`` (exported student), ``history.csv``, ``learning_curve.png``,
``metrics.json`` (RMSE vs the teachers' mean before/after, per epoch, changed parameter keys, timings).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from scifm.core.errors import ConfigError

from .committee import CommitteeCalculator, resolve_model_dir
from .finetune import (
    changed_keys,
    cluster_virial,
    frame_graph,
    freeze_to_readout,
    plot_epoch_curves,
    predict,
)
from .thermo import is_periodic

BULK_W = {"forces": 3.0, "energy": 0.01, "virial": 0.01}
CLUSTER_W = {"energy": 0.3, "forces": 1.0, "virial": 0.1}


def teacher_targets(teachers, frames) -> list[dict[str, np.ndarray]]:
    """Committee mean and std of energy (eV), forces [N,3] and virial [3,3] (eV) per periodic frame."""
    committee = CommitteeCalculator(teachers, dtype="float64", dispersion=None)
    out = []
    for a in frames:
        a = a.copy()
        a.calc = committee
        e = a.get_potential_energy()
        f = a.get_forces(apply_constraint=False)
        w = -np.asarray(a.get_stress(voigt=False)) * a.get_volume()
        r = committee.results
        out.append(
            {
                "energy": e,
                "forces": np.array(f),
                "virial": w,
                "energy_std": r["energy_std"],
                "forces_std_max": r["forces_std_max"],
            }
        )
    return out


def _bulk_loss(student, graph, target, n_atoms, w, dtype):
    pred = predict(student, graph, periodic=True)
    f_t = torch.as_tensor(target["forces"], dtype=dtype)
    w_t = torch.as_tensor(target["virial"], dtype=dtype)
    e_t = torch.as_tensor(target["energy"], dtype=dtype)
    de = pred["energy"][0] - e_t
    df = pred["forces"] - f_t
    dw = pred["virial"][0] - w_t
    loss = (
        w["forces"] * (df**2).mean() + w["energy"] * de**2 / n_atoms + w["virial"] * (dw**2).mean() / n_atoms
    )
    de, df, dw = de.detach(), df.detach(), dw.detach()
    logs = {
        "energy_rmse_per_atom": float(abs(de) / n_atoms),
        "forces_rmse": float((df**2).mean().sqrt()),
        "virial_rmse_per_atom": float((dw**2).mean().sqrt() / n_atoms),
    }
    return loss, logs


def cluster_step(pot, opt, clusters, cgraphs, c_ptr: int, cluster_batch: int, w, dtype) -> int:
    """One optimiser step on the next ``cluster_batch`` clusters (cycling); returns the new cursor.

    The gas-phase cluster step that distillation and alignment alternate with each bulk frame.
    """
    sel = [(c_ptr + i) % len(clusters) for i in range(min(cluster_batch, len(clusters)))]
    opt.zero_grad()
    closs, _ = _cluster_loss(pot, [cgraphs[i] for i in sel], [clusters[i] for i in sel], w, dtype)
    closs.backward()
    opt.step()
    return (c_ptr + len(sel)) % len(clusters)


def _cluster_loss(student, graphs, frames, w, dtype):
    de_all, loss_f, loss_w, n_f = [], 0.0, 0.0, 0
    for g, a in zip(graphs, frames, strict=True):
        pred = predict(student, g, periodic=False)
        n = len(a)
        de_all.append((pred["energy"][0] - float(a.get_potential_energy())) / n)
        f_ref = torch.as_tensor(a.get_forces(apply_constraint=False), dtype=dtype)
        df = pred["forces"] - f_ref
        loss_f = loss_f + (df**2).mean()
        pos = g.pos
        dw = cluster_virial(pos, pred["forces"]) - cluster_virial(pos, f_ref)
        loss_w = loss_w + (dw**2).mean() / n
        n_f += 1
    de = torch.stack(de_all)
    de = de - de.mean()
    loss = w["energy"] * (de**2).mean() + w["forces"] * loss_f / n_f + w["virial"] * loss_w / n_f
    return loss, {"cluster_forces_rmse": float((loss_f.detach() / n_f).sqrt())}


def distill(
    teachers: list,
    bulk_frames: list,
    out: str | Path,
    student: int = 0,
    cluster_frames=None,
    epochs: int = 50,
    lr: float = 1e-4,
    gamma: float = 0.99,
    cluster_batch: int = 16,
    seed: int = 0,
    bulk_weights=None,
    cluster_weights=None,
    progress: bool = True,
) -> dict:
    """Run the distillation; returns the metrics written to ``out/metrics.json``."""
    from tqdm.auto import tqdm

    from scifm.mlip.export import export_potential, load_potential

    from .md import _write_json

    t0 = time.perf_counter()
    if len(teachers) < 3:
        raise ConfigError(f"distillation needs at least 3 teachers (got {len(teachers)})")
    if not 0 <= student < len(teachers):
        raise ConfigError(f"--student {student}: must index one of the {len(teachers)} teachers")
    if not bulk_frames:
        raise ConfigError("no bulk frames to distil on")
    if not all(is_periodic(a) for a in bulk_frames):
        raise ConfigError("bulk frames must be fully periodic (MD frames with a cell)")
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be >= 1")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = Path(out)
    teacher_dirs = [resolve_model_dir(t) for t in teachers]
    targets = teacher_targets(teacher_dirs, bulk_frames)
    pot = load_potential(teacher_dirs[student])  # stored precision: frozen weights stay bit-identical
    dtype = pot.atom_ref.dtype
    before = {k: v.detach().clone() for k, v in pot.state_dict().items()}
    params = freeze_to_readout(pot)
    pot.train()
    graphs = [frame_graph(a, pot.cutoff, dtype) for a in bulk_frames]
    idx = np.arange(len(bulk_frames))
    valid = idx[2::3] if len(idx) >= 3 else idx
    train = np.setdiff1d(idx, valid) if len(idx) >= 3 else idx
    clusters = list(cluster_frames or [])
    cgraphs = [frame_graph(a, pot.cutoff, dtype) for a in clusters]
    bw, cw = {**BULK_W, **(bulk_weights or {})}, {**CLUSTER_W, **(cluster_weights or {})}
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)

    def validate() -> dict[str, float]:
        rows = [_bulk_loss(pot, graphs[k], targets[k], len(bulk_frames[k]), bw, dtype)[1] for k in valid]
        res = {f"valid_{k}": float(np.sqrt(np.mean([r[k] ** 2 for r in rows]))) for k in rows[0]}
        if clusters:
            res["valid_cluster_forces_rmse"] = _cluster_loss(
                pot, cgraphs[:cluster_batch], clusters[:cluster_batch], cw, dtype
            )[1]["cluster_forces_rmse"]
        return res

    history = [{"epoch": 0, "train_loss": float("nan"), **validate()}]
    c_ptr = 0
    bar = tqdm(range(1, epochs + 1), desc="distill", unit="epoch", disable=not progress)
    for epoch in bar:
        losses = []
        for k in rng.permutation(train):
            opt.zero_grad()
            loss, _ = _bulk_loss(pot, graphs[k], targets[k], len(bulk_frames[k]), bw, dtype)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if clusters:
                c_ptr = cluster_step(pot, opt, clusters, cgraphs, c_ptr, cluster_batch, cw, dtype)
        sched.step()
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), **validate()}
        history.append(row)
        bar.set_postfix_str(f"F rmse {row['valid_forces_rmse']:.4f} eV/Å")
    pot.eval()
    after = pot.state_dict()
    changed = changed_keys(before, after)
    export_potential(
        pot,
        out / "model",
        meta={"distilled_from": [str(t) for t in teacher_dirs], "student": int(student), "epochs": epochs},
    )
    _write_history(out / "history.csv", history)
    _plot(out / "learning_curve.png", history)
    metrics = {
        "n_teachers": len(teachers),
        "student": int(student),
        "n_bulk_frames": len(bulk_frames),
        "n_train_frames": int(len(train)),
        "n_valid_frames": int(len(valid)),
        "n_cluster_frames": len(clusters),
        "epochs": epochs,
        "teacher_energy_std_eV_mean": float(np.mean([t["energy_std"] for t in targets])),
        "teacher_forces_std_max_eV_A_mean": float(np.mean([t["forces_std_max"] for t in targets])),
        "before": {k: v for k, v in history[0].items() if k.startswith("valid_")},
        "after": {k: v for k, v in history[-1].items() if k.startswith("valid_")},
        "changed_parameters": changed,
        "wall_time_s": time.perf_counter() - t0,
    }
    _write_json(out / "metrics.json", metrics)
    return metrics


def _write_history(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, rows: list[dict]) -> None:
    series = {k[6:]: [r[k] for r in rows] for k in rows[0] if k.startswith("valid_")}
    plot_epoch_curves(path, [r["epoch"] for r in rows], series, "RMSE vs target", log_y=True)


# ---- CLI ---------------------------------------------------------------------------------------------------


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teachers", nargs="+", required=True, help="≥ 3 run or model directories")
    p.add_argument("--student", type=int, default=0, help="index of the teacher to fine-tune")
    p.add_argument(
        "--frames",
        nargs="+",
        required=True,
        help="periodic bulk MD frames (trajectories of `sci-fm md`: .extxyz or .h5)",
    )
    p.add_argument("--clusters", default=None, help="labelled cluster frames (.extxyz/.h5) to alternate with")
    p.add_argument("--max-frames", type=int, default=960, help="at most this many bulk frames per file")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--gamma", type=float, default=0.99, help="learning-rate decay per epoch")
    p.add_argument("--cluster-batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/distill")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def load_frames(paths, max_frames: int | None = None) -> list:
    from .trajectory import read_trajectory

    frames = []
    for path in paths:
        f = read_trajectory(path)
        if max_frames and len(f) > max_frames:  # evenly spaced, keeps the whole time span
            f = [f[i] for i in np.linspace(0, len(f) - 1, max_frames).round().astype(int)]
        frames += f
    return frames


def run(args) -> int:
    clusters = None
    if args.clusters:
        from scifm.mlip.dataset import open_frames

        clusters = open_frames(args.clusters)
    frames = load_frames(args.frames, args.max_frames)
    m = distill(
        args.teachers,
        frames,
        args.out,
        student=args.student,
        cluster_frames=clusters,
        epochs=args.epochs,
        lr=args.lr,
        gamma=args.gamma,
        cluster_batch=args.cluster_batch,
        seed=args.seed,
        progress=args.progress,
    )
    print(
        f"distilled: forces RMSE vs teachers' mean {m['before']['valid_forces_rmse']:.4f} -> "
        f"{m['after']['valid_forces_rmse']:.4f} eV/Å; model in {Path(args.out) / 'model'}"
    )
    return 0
