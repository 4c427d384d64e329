"""`fit()`: one call that runs a `Task` with checkpoints, logs, resume, dtype and parallel strategy.

Run directory layout:

    run_dir/checkpoints/last.ckpt   resumable Lightning checkpoint (weights, optimiser, scheduler, EMA, loops)
    run_dir/checkpoints/best.ckpt   lowest val/loss (train/loss without a validation loader)
    run_dir/logs/metrics.csv        flat CSV of epoch means (see `read_metrics_csv`)
    run_dir/fit_summary.json        wall time, epochs run, best score, ... (also `trainer.scifm_summary`)
    run_dir/wandb/                  only with logger="wandb" (offline unless WANDB_MODE says otherwise)

Checkpoints are only ever read with `torch.load(weights_only=True)` (see `AtomicCheckpointIO`).
DDP with `strategy="ddp"` re-launches the calling script for the other ranks, so call `fit` from a
script (not from an interactive session); on CPU Lightning uses the gloo backend.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)

from scifm.core.errors import ConfigError, DataError
from scifm.core.io import atomic_output, load_checkpoint
from scifm.core.train.callbacks import AtomicCheckpointIO, ResumableCSVLogger
from scifm.core.train.task import Task

__all__ = ["fit", "seed_everything", "SUMMARY_FILE"]

SUMMARY_FILE = "fit_summary.json"
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def seed_everything(seed: int) -> int:
    """Seed python, numpy and torch (CPU and CUDA), and make dataloader workers derive their seeds."""
    seed = int(seed)
    L.seed_everything(seed, workers=True, verbose=False)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def _checkpoint_position(path: Path) -> tuple[int, int]:
    """(epoch, global_step) stored in a Lightning checkpoint; validates the file before any work starts."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"state_dict", "epoch", "global_step"} <= set(ckpt):
        raise DataError(path, "not a Lightning checkpoint (missing 'state_dict', 'epoch' or 'global_step')")
    return int(ckpt["epoch"]), int(ckpt["global_step"])


def _wandb_logger(run_dir: Path, project: str, resuming: bool):
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "offline")
    # Keep one wandb run per run_dir so a resumed fit continues the same run.
    id_file = run_dir / "logs" / "wandb_id.txt"
    run_id = id_file.read_text().strip() if (resuming and id_file.is_file()) else None
    if run_id is None:
        run_id = secrets.token_hex(6)
        if rank_zero_only.rank == 0:
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project, save_dir=str(run_dir), id=run_id, offline=mode in ("offline", "dryrun")
    )


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class _StartRecorder(Callback):
    """Remembers the epoch training (re)starts at, after Lightning restored a checkpoint."""

    start_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_epoch = int(trainer.current_epoch)


def _as_float(x: Any) -> float | None:
    if x is None:
        return None
    return float(x.item() if isinstance(x, torch.Tensor) else x)


def _quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (accelerator probes, product tips) and a known deprecation
    notice of its own out of users' terminals; real warnings still show."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def fit(
    task: Task,
    train_loader,
    val_loader=None,
    run_dir: str | os.PathLike = "run",
    max_epochs: int = 10,
    seed: int = 0,
    logger: str = "csv",
    devices: int | str | Sequence[int] = 1,
    num_nodes: int = 1,
    strategy: str | Any = "auto",
    accelerator: str = "auto",
    resume: bool = False,
    early_stopping_patience: int | None = None,
    grad_clip: float | None = None,
    dtype: str = "float32",
    progress: bool = True,
    max_time_s: float | None = None,
    wandb_project: str = "sci-fm",
    log_every_n_steps: int | None = None,
    callbacks: Sequence[Callback] | None = None,
    accumulate_grad_batches: int = 1,
    **trainer_kwargs: Any,
) -> L.Trainer:
    """Train `task` on `train_loader` (validating on `val_loader` each epoch); returns the Trainer.

    Args:
        run_dir: where checkpoints/, logs/metrics.csv and fit_summary.json go.
        resume: continue from `run_dir/checkpoints/last.ckpt` if it exists (epochs, optimiser, scheduler
            and EMA restored; a fresh start otherwise).
        dtype: "float32" or "float64" (default dtype set for the duration of the fit, model in double,
            Lightning precision "64-true"; the previous default dtype is restored on return).
        grad_clip: max gradient norm (None: no clipping).
        max_time_s: stop (and checkpoint) after this many seconds of training.
        trainer_kwargs: passed on to `lightning.Trainer` (e.g. limit_train_batches, val_check_interval).

    `trainer.scifm_summary` holds {"wall_time_s", "epochs_run", "start_epoch", "final_epoch",
    "global_step", "best_checkpoint", "best_score", "monitor", "last_checkpoint", "resumed_from",
    "stopped_early", "world_size", "seed", "dtype"}; rank 0 also writes it to run_dir/fit_summary.json.
    """
    _quiet_lightning()
    # ---- validate everything before doing any work
    if not isinstance(task, Task):
        raise ConfigError(f"fit: task must be a scifm.core.train.Task, got {type(task).__name__}")
    if logger not in ("csv", "wandb"):
        raise ConfigError(f"fit: logger must be 'csv' or 'wandb', got {logger!r}")
    if dtype not in _DTYPES:
        raise ConfigError(f"fit: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if int(max_epochs) < 1:
        raise ConfigError(f"fit: max_epochs must be >= 1, got {max_epochs}")
    if early_stopping_patience is not None and int(early_stopping_patience) < 0:
        raise ConfigError("fit: early_stopping_patience must be >= 0 or None")
    if grad_clip is not None and float(grad_clip) <= 0:
        raise ConfigError("fit: grad_clip must be > 0 or None")
    if max_time_s is not None and float(max_time_s) <= 0:
        raise ConfigError("fit: max_time_s must be > 0 or None")

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    ckpt_path = last if (resume and last.is_file()) else None
    _, ckpt_step = _checkpoint_position(last) if ckpt_path is not None else (0, 0)
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    monitor = "val/loss" if val_loader is not None else "train/loss"
    task.monitor = monitor
    seed_everything(seed)

    checkpoint_cb = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    recorder = _StartRecorder()
    cbs: list[Callback] = [checkpoint_cb, LearningRateMonitor(), recorder]
    if early_stopping_patience is not None:
        cbs.append(EarlyStopping(monitor=monitor, mode="min", patience=int(early_stopping_patience)))
    if progress:
        cbs.append(TQDMProgressBar())
    cbs.extend(callbacks or [])

    loggers: list = [ResumableCSVLogger(run_dir / "logs", keep_before_step=ckpt_step if ckpt_path else None)]
    if logger == "wandb":
        loggers.append(_wandb_logger(run_dir, wandb_project, resuming=ckpt_path is not None))

    if log_every_n_steps is None:
        try:
            log_every_n_steps = max(1, min(50, len(train_loader)))
        except TypeError:  # iterable without a length
            log_every_n_steps = 50

    previous_dtype = torch.get_default_dtype()
    try:
        if dtype == "float64":
            torch.set_default_dtype(torch.float64)
            task.double()
        trainer = L.Trainer(
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision="64-true" if dtype == "float64" else "32-true",
            logger=loggers,
            callbacks=cbs,
            default_root_dir=str(run_dir),
            gradient_clip_val=None if grad_clip is None else float(grad_clip),
            gradient_clip_algorithm="norm",
            enable_progress_bar=bool(progress),
            enable_model_summary=bool(progress),
            inference_mode=False,  # validation may need autograd (forces = -dE/dx)
            max_time=None if max_time_s is None else _dt.timedelta(seconds=float(max_time_s)),
            log_every_n_steps=int(log_every_n_steps),
            accumulate_grad_batches=int(accumulate_grad_batches),
            plugins=[AtomicCheckpointIO()],
            **trainer_kwargs,
        )
        t0 = time.perf_counter()
        trainer.fit(
            task,
            train_dataloaders=train_loader,
            val_dataloaders=val_loader,
            ckpt_path=str(ckpt_path) if ckpt_path else None,
            weights_only=True,
        )
        wall = time.perf_counter() - t0
    finally:
        torch.set_default_dtype(previous_dtype)

    start_epoch = recorder.start_epoch
    early = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
    summary = {
        "wall_time_s": wall,
        "epochs_run": int(trainer.current_epoch) - start_epoch,
        "start_epoch": start_epoch,
        "final_epoch": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "monitor": monitor,
        "best_checkpoint": checkpoint_cb.best_model_path or None,
        "best_score": _as_float(checkpoint_cb.best_model_score),
        "last_checkpoint": str(last) if last.is_file() else None,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "stopped_early": bool(early is not None and early.stopped_epoch > 0),
        "interrupted": bool(trainer.interrupted),
        "world_size": int(trainer.world_size),
        "seed": int(seed),
        "dtype": dtype,
    }
    trainer.scifm_summary = summary
    if trainer.is_global_zero:
        _write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return trainer
