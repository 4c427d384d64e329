"""``sci-fm train mlip``: fit a registered model to energies and forces (+ stress, charges, dipole)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from scifm.core.errors import ConfigError, DataError
from scifm.core.train import Task

LABEL_WEIGHTS = ("energy", "forces", "stress", "charges", "dipole")
KCAL_PER_MOL_IN_EV = 0.0433641043  # eV
DEBYE_PER_E_ANGSTROM = 4.80320471


def bamboo_loss_weights(forces_weight: float = 10.0) -> dict[str, float]:
    """BAMBOO's loss weights converted to our units and to our force weight.

    The anchor uses 0.3·MSE_F [(kcal/mol/Å)²] + 10·MSE_q [e²] + 10·MSE_μ [D²]
    + 300·mean|F_qeq|² [(kcal/mol/Å)²].
    In eV/Å a force MSE is (0.04336)² times smaller, so its force weight is 0.3/0.04336² ≈ 159.5 per (eV/Å)²;
    a dipole MSE in (e·Å)² is 4.803² times smaller than in D². Rescaling everything so that the force weight
    equals ``forces_weight`` (ours, default 10) gives, for forces_weight = 10: charges ≈ 0.63 e⁻²,
    dipole ≈ 14.5 (e·Å)⁻², qeq ≈ 1.0e4 (eV/Å)⁻². The energy weight keeps its own meaning (per-atom MSE).
    """
    per_force = float(forces_weight) / (0.3 / KCAL_PER_MOL_IN_EV**2)
    return {
        "charges": 10.0 * per_force,
        "dipole": 10.0 * DEBYE_PER_E_ANGSTROM**2 * per_force,
        "qeq": 300.0 / KCAL_PER_MOL_IN_EV**2 * per_force,
    }


class MLIPTask(Task):
    """Loss = Σ_k w_k · MSE_k with per-atom energies; logs MAEs in eV and eV/Å. ``virial``: the centroid
    virial of non-periodic frames (``cluster_virial``), MSE per component divided by the atom count."""

    grad_in_eval = True  # forces = -dE/dx need autograd in validation and test too

    def __init__(self, potential, weights: dict[str, float], **task_kwargs):
        super().__init__(potential, **task_kwargs)
        self.weights = {k: float(v) for k, v in weights.items() if float(v) > 0}

    def batch_size(self, batch) -> int:
        return int(batch.num_graphs)

    def loss(self, batch, stage: str):
        w = self.weights
        want_stress = "stress" in w and "stress" in batch
        need_forces = "forces" in w or "virial" in w or stage != "train"
        out = self.model(batch, forces=need_forces, stress=want_stress)
        n = batch.n_atoms.to(out["energy"].dtype)
        de = (out["energy"] - batch.energy) / n
        total = w.get("energy", 0.0) * (de**2).mean()
        logs: dict[str, torch.Tensor] = {"energy_mae_per_atom": de.abs().mean().detach()}
        if "forces" in out:
            df = out["forces"] - batch.forces
            total = total + w.get("forces", 0.0) * (df**2).mean()
            logs["forces_mae"] = df.abs().mean().detach()
        if "virial" in w and "forces" in out:
            finite = ~batch.pbc.reshape(-1, 3).any(dim=-1)
            if bool(finite.any()):
                dw = (cluster_virial(batch, out["forces"]) - cluster_virial(batch, batch.forces))[finite]
                total = total + w["virial"] * ((dw**2).mean(dim=(1, 2)) / n[finite]).mean()
                logs["virial_mae"] = dw.abs().mean().detach()
        if want_stress:
            ds = out["stress"] - batch.stress
            total = total + w["stress"] * (ds**2).mean()
            logs["stress_mae"] = ds.abs().mean().detach()
        if "charges" in w and "charges" in out and "charges" in batch:
            dq = out["charges"] - batch.charges
            total = total + w["charges"] * (dq**2).mean()
            logs["charges_mae"] = dq.abs().mean().detach()
        if "dipole" in w and "dipole" in out and "dipole" in batch:
            ok = torch.isfinite(out["dipole"]).all(dim=-1)  # models give NaN for periodic graphs
            if bool(ok.any()):
                dd = out["dipole"][ok] - batch.dipole[ok]
                total = total + w["dipole"] * (dd**2).mean()
                logs["dipole_mae"] = dd.abs().mean().detach()
        if "qeq" in w and "qeq_forces" in out:
            # BAMBOO's regulariser: the force from the charges' response to the geometry -> 0
            fq = out["qeq_forces"]
            total = total + w["qeq"] * (fq**2).sum(dim=-1).mean()
            logs["qeq_force_rms"] = (fq**2).sum(dim=-1).mean().sqrt().detach()
        return total, logs


def cluster_virial(batch, forces: torch.Tensor) -> torch.Tensor:
    """Virial of each graph about its centroid, W = Σ_i (r_i - r̄) ⊗ F_i [B,3,3] (eV). For a finite cluster
    it carries the collective (intermolecular, pressure-like) part of the forces that a per-atom force loss
    weighs little; BAMBOO trains on it (0.1·MSE_W next to 1.0·MSE_F in kcal/mol units)."""
    from scifm.core.nn import scatter_mean, scatter_sum

    b = batch.batch
    n_graphs = int(batch.num_graphs)
    rel = batch.pos - scatter_mean(batch.pos, b, dim=0, dim_size=n_graphs)[b]
    return scatter_sum(rel.unsqueeze(-1) * forces.unsqueeze(-2), b, dim=0, dim_size=n_graphs)


def predict(potential, loader) -> dict[str, np.ndarray]:
    """Energies and forces of every frame in ``loader`` (model in eval mode, grads only for forces)."""
    potential.eval()
    e_pred, e_ref, n_atoms, f_pred, f_ref = [], [], [], [], []
    for batch in loader:
        out = potential(batch, forces=True, stress=False)
        e_pred.append(out["energy"].detach().double().numpy())
        f_pred.append(out["forces"].detach().double().numpy())
        e_ref.append(batch.energy.double().numpy())
        f_ref.append(batch.forces.double().numpy())
        n_atoms.append(batch.n_atoms.numpy())
    cat = np.concatenate
    return {
        "e_pred": cat(e_pred),
        "e_ref": cat(e_ref),
        "n_atoms": cat(n_atoms),
        "f_pred": cat(f_pred),
        "f_ref": cat(f_ref),
    }


def _split_frames(frames, fractions: dict[str, float], seed: int):
    from scifm.core.data.splits import split_by_trajectory

    traj = np.array([int(a.info.get("traj_id", k)) for k, a in enumerate(frames)])
    idx = split_by_trajectory(traj, fractions, seed=seed)
    return {name: [frames[i] for i in ix] for name, ix in idx.items()}


def _loss_weights(args, labels: set[str], model=None) -> dict[str, float]:
    """Per-property loss weights. Charges/dipole weights left unset (None) default to BAMBOO's weights
    (``bamboo_loss_weights``) for charge-predicting models, else to 0; the QEq weight defaults to 0."""
    predicts_charges = bool(getattr(model, "predicts_charges", False))
    defaults = bamboo_loss_weights(float(args.forces_weight)) if predicts_charges else {}
    weights = {}
    for k in LABEL_WEIGHTS:
        value = getattr(args, f"{k}_weight", None)
        weights[k] = float(defaults.get(k, 0.0) if value is None else value)
    weights["qeq"] = float(getattr(args, "qeq_weight", None) or 0.0)
    # the finite-cluster virial comes from the force labels: available whenever forces are
    weights["virial"] = float(getattr(args, "virial_weight", None) or 0.0) if "forces" in labels else 0.0
    for k in ("charges", "dipole", "qeq"):
        if weights[k] > 0 and not predicts_charges:
            warnings.warn(f"model '{args.model}' predicts no charges: {k} loss switched off", stacklevel=2)
            weights[k] = 0.0
    for k in ("charges", "dipole", "stress"):
        if weights[k] > 0 and k not in labels:
            # Stress is absent from every molecular data set: switching it off is the normal case.
            if k != "stress":
                warnings.warn(
                    f"training data has no '{k}' labels on every frame: {k} loss switched off", stacklevel=2
                )
            weights[k] = 0.0
    return weights


def _parse_model_config(value) -> dict:
    if value in (None, "", {}):
        return {}
    if isinstance(value, dict):
        return dict(value)
    text = str(value)
    path = Path(text)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text())
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--model-config: not a file nor YAML/JSON mapping: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--model-config must be a mapping of hyper-parameters, got {text!r}")
    return data


def train_mlip(args) -> dict:
    """Run the whole job; returns the metrics dict written to ``OUT/metrics.json``."""
    from scifm.core.train import fit, read_metrics_csv, seed_everything
    from scifm.mlip.dataset import GraphDataset, make_loader, open_frames
    from scifm.mlip.export import export_potential
    from scifm.mlip.models.registry import available_models, build_model
    from scifm.mlip.plots import learning_curve, parity_plot
    from scifm.mlip.potential import Potential

    t0 = time.perf_counter()
    out = Path(args.out)
    if (out / "model").exists() and not args.resume:
        raise ConfigError(f"{out}: already holds a trained model; pass --resume or choose another --out")
    if args.model not in available_models():
        raise ConfigError(f"unknown model '{args.model}'; available: {', '.join(available_models())}")
    if args.scheduler == "cosine-time" and not args.max_time:
        raise ConfigError("--scheduler cosine-time anneals over the --max-time budget; give --max-time > 0")
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    seed_everything(args.seed)

    train_path = args.train
    if train_path is None:
        from scifm.mlip.data import default_dataset_path

        train_path = default_dataset_path()
    frames = open_frames(train_path)
    valid = open_frames(args.valid) if args.valid else None
    test = open_frames(args.test) if args.test else None
    fr = [float(x) for x in str(args.split).split(",")]
    if valid is None and test is None:
        parts = _split_frames(frames, {"train": fr[0], "valid": fr[1], "test": fr[2]}, args.seed)
        frames, valid, test = parts["train"], parts["valid"], parts["test"]
    elif valid is None:
        parts = _split_frames(frames, {"train": fr[0], "valid": fr[1]}, args.seed)
        frames, valid = parts["train"], parts["valid"]
    elif test is None:
        test = valid
    for name, part in (("train", frames), ("valid", valid), ("test", test)):
        if not part:
            raise DataError(train_path, f"the {name} split is empty (too few trajectories?)")

    model_config = _parse_model_config(args.model_config)
    model_config.setdefault("cutoff", float(args.cutoff))
    model_config.setdefault("elements", sorted({int(z) for a in frames for z in a.get_atomic_numbers()}))
    model = build_model(args.model, **model_config)
    cutoff = float(model_config["cutoff"])
    train_ds = GraphDataset(frames, cutoff, dtype=dtype)
    valid_ds = GraphDataset(valid, cutoff, dtype=dtype)
    test_ds = GraphDataset(test, cutoff, dtype=dtype)
    weights = _loss_weights(args, train_ds.labels, model)
    # Only now, with every input validated, does the run directory get created.
    _write_config(out / "config.yaml", args)
    if weights["qeq"] > 0:
        model.qeq_forces = True  # the model then returns qeq_forces (second-order autograd in training)

    potential = Potential(model, zbl=bool(getattr(args, "zbl", False)))
    potential.fit_statistics(train_ds.graphs)
    potential = potential.to(dtype)

    scheduler = None
    if args.scheduler == "plateau":
        scheduler = {
            "name": "plateau",
            "patience": max(2, args.max_epochs // 20),
            "factor": 0.5,
            "min_lr": args.lr / 100,
        }
    elif args.scheduler == "cosine":
        scheduler = {"name": "cosine", "eta_min": args.lr / 100}
    elif args.scheduler == "cosine-time":
        scheduler = {"name": "cosine-time", "eta_min": args.lr / 100, "budget_s": 60.0 * float(args.max_time)}
    task = MLIPTask(
        potential,
        weights,
        optimizer={"name": "adam", "lr": args.lr, "amsgrad": True},
        scheduler=scheduler,
        ema_decay=args.ema_decay if args.ema_decay > 0 else None,
    )
    train_loader = make_loader(train_ds, args.batch_size, True, args.seed, args.num_workers)
    valid_loader = make_loader(valid_ds, args.batch_size, False)
    fit(
        task,
        train_loader,
        valid_loader,
        run_dir=out,
        max_epochs=args.max_epochs,
        seed=args.seed,
        logger=args.logger,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        accelerator=args.accelerator,
        resume=args.resume,
        early_stopping_patience=args.patience,
        grad_clip=args.grad_clip,
        dtype=args.dtype,
        progress=not args.no_progress,
        max_time_s=60.0 * float(args.max_time) if args.max_time else None,
    )
    if not _is_global_zero():
        return {}

    final = task.averaged_model()
    if hasattr(final.model, "qeq_forces"):
        final.model.qeq_forces = False
    meta = {"train_file": str(train_path), "n_train": len(train_ds), "seed": args.seed, "dtype": args.dtype}
    export_potential(final, out / "model", meta=meta)
    pred = predict(final, make_loader(test_ds, args.batch_size, False))
    from scifm.mlip.metrics import energy_force_metrics

    metrics = energy_force_metrics(
        pred["e_pred"], pred["e_ref"], pred["n_atoms"], pred["f_pred"], pred["f_ref"]
    )
    history = read_metrics_csv(out)
    metrics.update(
        model=args.model,
        split="test",
        n_train_frames=len(train_ds),
        n_valid_frames=len(valid_ds),
        epochs=int(max(history.get("epoch", [0]) or [0]) + 1),
        n_parameters=int(sum(p.numel() for p in final.parameters())),
        loss_weights=weights,
        wall_time_s=time.perf_counter() - t0,
    )
    parity_plot(
        out / "parity.png",
        pred["e_ref"],
        pred["e_pred"],
        pred["n_atoms"],
        pred["f_ref"],
        pred["f_pred"],
        title=f"{args.model} — test split",
    )
    learning_curve(out / "learning_curve.png", history, title=args.model)
    _write_json(out / "metrics.json", metrics)
    return metrics


def evaluate_mlip(args) -> dict:
    """``sci-fm eval mlip``: metrics of an exported model on a data file."""
    from scifm.mlip.dataset import GraphDataset, make_loader, open_frames
    from scifm.mlip.export import load_potential
    from scifm.mlip.metrics import energy_force_metrics
    from scifm.mlip.plots import parity_plot

    t0 = time.perf_counter()
    model_dir = Path(args.model)
    if (model_dir / "model").is_dir():
        model_dir = model_dir / "model"
    potential = load_potential(model_dir, dtype=args.dtype)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    frames = open_frames(args.data)
    ds = GraphDataset(frames, potential.cutoff, dtype=dtype)
    pred = predict(potential, make_loader(ds, args.batch_size, False))
    metrics = energy_force_metrics(
        pred["e_pred"], pred["e_ref"], pred["n_atoms"], pred["f_pred"], pred["f_ref"]
    )
    metrics.update(model=str(args.model), data=str(args.data), wall_time_s=time.perf_counter() - t0)
    out = Path(args.out)
    _write_json(out, metrics)
    parity_plot(
        out.with_name(out.stem + "_parity.png"),
        pred["e_ref"],
        pred["e_pred"],
        pred["n_atoms"],
        pred["f_ref"],
        pred["f_pred"],
        title=f"{args.model} on {Path(args.data).name}",
    )
    return metrics


def _write_config(path: Path, args) -> None:
    """The resolved config (defaults < --config file < flags), reusable as ``--config``."""
    import yaml

    from scifm.core.config import to_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(args), sort_keys=True))


def _is_global_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _write_json(path: Path, data: dict) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
