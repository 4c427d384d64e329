"""`Task`: the Lightning wrapper around a plain `nn.Module` (losses, logging, optimiser, schedule, EMA).

A domain subclasses `Task` and writes one method:

    class EnergyTask(Task):
        def loss(self, batch, stage):          # stage in {"train", "val", "test"}
            pred = self.model(batch)
            mse = ((pred - batch.y) ** 2).mean()
            return mse, {"mse": mse, "mae": (pred - batch.y).abs().mean()}

Everything else (logging `{stage}/loss` and `{stage}/<name>` as batch-size weighted epoch means, the
optimiser and schedule from plain dicts, EMA weights for validation/test, dtype casts) lives here.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from torch import nn

from scifm.core.errors import ConfigError
from scifm.core.train.ema import EMA

__all__ = ["Task", "TimeCosineLR", "build_optimizer", "build_scheduler"]

_OPTIMIZER_KEYS = {"name", "lr", "weight_decay", "amsgrad", "betas", "eps"}
_SCHEDULER_KEYS = {
    "cosine": {"name", "eta_min", "t_max"},
    "cosine-time": {"name", "eta_min", "budget_s", "warmup_frac"},
    "onecycle": {"name", "max_lr", "pct_start", "div_factor", "final_div_factor", "anneal_strategy"},
    "plateau": {"name", "patience", "factor", "min_lr", "threshold", "monitor", "cooldown"},
}


def _check_optimizer(cfg: Mapping[str, Any]) -> dict:
    cfg = dict(cfg)
    unknown = set(cfg) - _OPTIMIZER_KEYS
    if unknown:
        raise ConfigError(f"optimizer: unknown keys {sorted(unknown)} (allowed: {sorted(_OPTIMIZER_KEYS)})")
    name = str(cfg.get("name", "adamw")).lower()
    if name not in ("adam", "adamw"):
        raise ConfigError(f"optimizer: unknown name {name!r} (allowed: 'adam', 'adamw')")
    cfg["name"] = name
    if float(cfg.get("lr", 1e-3)) < 0:
        raise ConfigError(f"optimizer: lr must be >= 0, got {cfg['lr']}")
    return cfg


def _check_scheduler(cfg: Mapping[str, Any] | None) -> dict | None:
    if cfg is None:
        return None
    cfg = dict(cfg)
    name = str(cfg.get("name", "")).lower()
    if name not in _SCHEDULER_KEYS:
        raise ConfigError(f"scheduler: unknown name {name!r} (allowed: {sorted(_SCHEDULER_KEYS)} or None)")
    unknown = set(cfg) - _SCHEDULER_KEYS[name]
    if unknown:
        raise ConfigError(
            f"scheduler {name!r}: unknown keys {sorted(unknown)} (allowed: {sorted(_SCHEDULER_KEYS[name])})"
        )
    cfg["name"] = name
    if name == "cosine-time":
        budget = cfg.get("budget_s")
        if budget is None or not float(budget) > 0:
            raise ConfigError(f"scheduler 'cosine-time' needs a time budget budget_s > 0, got {budget!r}")
        warm = float(cfg.get("warmup_frac", 0.0))
        if not 0.0 <= warm < 1.0:
            raise ConfigError(f"scheduler 'cosine-time': warmup_frac must be in [0, 1), got {warm}")
    return cfg


class TimeCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Cosine decay of the learning rate over a wall-time budget instead of a number of epochs.

    A run capped by wall time (`--max-time`) never reaches the end of an epoch-based cosine or the patience of
    a plateau schedule, so it trains at its peak rate to the last step. This schedule anneals over the time
    actually available: after `t` seconds of training, lr = eta_min + (lr0 - eta_min)(1 + cos(pi t/T))/2,
    with an optional linear warm-up over the first `warmup_frac` of T. Elapsed training time is part of the
    state dict, so a resumed run continues where it stopped (time spent outside `step()` calls, e.g. between
    a crash and the resume, does not count). `clock` is injectable for tests.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        budget_s: float,
        eta_min: float = 0.0,
        warmup_frac: float = 0.0,
        clock=time.monotonic,
    ):
        self.budget_s = float(budget_s)
        self.eta_min = float(eta_min)
        self.warmup_frac = float(warmup_frac)
        self.clock = clock
        self.elapsed_s = 0.0
        self._last_tick: float | None = None
        super().__init__(optimizer)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "clock", "_last_tick")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
        self._last_tick = None

    def fraction(self) -> float:
        """The fraction of the time budget used so far (0 at the start, capped at 1)."""
        return min(1.0, self.elapsed_s / self.budget_s)

    def step(self, epoch=None) -> None:  # noqa: ARG002 - the signature of LRScheduler.step
        now = self.clock()
        if self._last_tick is not None:
            self.elapsed_s += max(0.0, now - self._last_tick)
        self._last_tick = now
        super().step()

    def get_lr(self) -> list[float]:
        f = self.fraction()
        w = self.warmup_frac
        out = []
        for base in self.base_lrs:
            if w > 0 and f < w:
                out.append(base * max(f / w, 1e-3))
                continue
            g = (f - w) / (1.0 - w)
            out.append(self.eta_min + 0.5 * (base - self.eta_min) * (1.0 + math.cos(math.pi * g)))
        return out


def build_optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam or AdamW from `{"name", "lr", "weight_decay", "amsgrad", "betas", "eps"}`."""
    cfg = _check_optimizer(cfg)
    kwargs = {
        "lr": float(cfg.get("lr", 1e-3)),
        "weight_decay": float(cfg.get("weight_decay", 0.0)),
        "amsgrad": bool(cfg.get("amsgrad", False)),
    }
    if "betas" in cfg:
        kwargs["betas"] = tuple(float(b) for b in cfg["betas"])
    if "eps" in cfg:
        kwargs["eps"] = float(cfg["eps"])
    cls = torch.optim.AdamW if cfg["name"] == "adamw" else torch.optim.Adam
    return cls(params, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Any] | None,
    *,
    max_epochs: int,
    total_steps: int,
    monitor: str,
) -> dict | None:
    """A Lightning lr-scheduler config dict, or None.

    cosine: per epoch over `t_max` (default `max_epochs`) epochs; cosine-time: per optimiser step over a
    wall-time budget `budget_s` (`TimeCosineLR`); onecycle: per optimiser step over `total_steps`; plateau:
    per epoch on `monitor` (default val/loss, or train/loss without validation).
    """
    cfg = _check_scheduler(cfg)
    if cfg is None:
        return None
    name = cfg["name"]
    if name == "cosine":
        t_max = int(cfg.get("t_max", max_epochs))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, t_max), eta_min=float(cfg.get("eta_min", 0.0))
        )
        return {"scheduler": sched, "interval": "epoch"}
    if name == "cosine-time":
        sched = TimeCosineLR(
            optimizer,
            budget_s=float(cfg["budget_s"]),
            eta_min=float(cfg.get("eta_min", 0.0)),
            warmup_frac=float(cfg.get("warmup_frac", 0.0)),
        )
        return {"scheduler": sched, "interval": "step"}
    if name == "onecycle":
        if "max_lr" not in cfg:
            cfg["max_lr"] = optimizer.param_groups[0]["lr"]
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=float(cfg["max_lr"]),
            total_steps=max(1, int(total_steps)),
            pct_start=float(cfg.get("pct_start", 0.3)),
            div_factor=float(cfg.get("div_factor", 25.0)),
            final_div_factor=float(cfg.get("final_div_factor", 1e4)),
            anneal_strategy=str(cfg.get("anneal_strategy", "cos")),
        )
        return {"scheduler": sched, "interval": "step"}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        patience=int(cfg.get("patience", 5)),
        factor=float(cfg.get("factor", 0.5)),
        min_lr=float(cfg.get("min_lr", 0.0)),
        threshold=float(cfg.get("threshold", 1e-4)),
        cooldown=int(cfg.get("cooldown", 0)),
    )
    return {"scheduler": sched, "interval": "epoch", "monitor": cfg.get("monitor", monitor), "strict": True}


def _cast_floats(batch: Any, dtype: torch.dtype) -> Any:
    """Cast every floating tensor in a batch (tensors, collections, PyG Data/Batch) to `dtype`."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t

    if hasattr(batch, "apply") and hasattr(batch, "stores"):  # torch_geometric Data / HeteroData / Batch
        return batch.apply(cast)
    return apply_to_collection(batch, torch.Tensor, cast)


class Task(L.LightningModule):
    """Base class of every training task: subclass it and implement `loss(batch, stage)`.

    Args:
        model: the `nn.Module` being trained (exported weights are `self.model`'s).
        optimizer: `{"name": "adamw"|"adam", "lr", "weight_decay", "amsgrad", "betas", "eps"}`.
        scheduler: None, `{"name": "cosine", "eta_min", "t_max"}`, `{"name": "cosine-time", "budget_s",
            "eta_min", "warmup_frac"}`, `{"name": "onecycle", "max_lr",
            "pct_start", ...}` or `{"name": "plateau", "patience", "factor", "min_lr", "monitor"}`.
        ema_decay: decay of the weight EMA (None: no EMA). With EMA, validation and test use the averaged
            weights and `averaged_model()` returns them.

    Class attribute `grad_in_eval`: set True when `loss` needs autograd during validation/test (forces as
    -dE/dx); the trainer runs with `inference_mode=False`, so `torch.enable_grad()` inside `loss` also
    works without it.
    """

    grad_in_eval: bool = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        ema_decay: float | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_config = _check_optimizer(optimizer or {"name": "adamw", "lr": 1e-3})
        self.scheduler_config = _check_scheduler(scheduler)
        self.ema = EMA(model, ema_decay) if ema_decay is not None else None
        self.monitor = "val/loss"  # fit() sets train/loss when there is no validation loader
        self._live_backup: dict[str, torch.Tensor] | None = None  # live weights while EMA is swapped in

    # ---------------------------------------------------------------- to implement
    def loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Scalar loss to minimise and a dict of named scalars to log (as `{stage}/{name}`)."""
        raise NotImplementedError("Task subclasses must implement loss(batch, stage)")

    def batch_size(self, batch: Any) -> int:
        """Samples in `batch` (weights epoch means): `num_graphs`, else the first tensor's length."""
        n = getattr(batch, "num_graphs", None)
        if n is not None:
            return int(n)
        if isinstance(batch, torch.Tensor):
            return int(batch.shape[0]) if batch.dim() else 1
        if isinstance(batch, Mapping):
            batch = list(batch.values())
        if isinstance(batch, list | tuple):
            for item in batch:
                if isinstance(item, torch.Tensor) and item.dim() > 0:
                    return int(item.shape[0])
        return 1

    # ---------------------------------------------------------------- steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        loss, logs = self.loss(batch, stage)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"{type(self).__name__}.loss must return a scalar tensor first")
        n = self.batch_size(batch)
        # Epoch means weighted by batch size; synced over ranks (Lightning sums value*n and n).
        opts = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
        self.log(f"{stage}/loss", loss.detach(), prog_bar=(stage != "train"), **opts)
        for name, value in (logs or {}).items():
            if name == "loss":
                continue
            # Same device as the loss, so that sync_dist works under NCCL too.
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.log(f"{stage}/{name}", value.to(device=loss.device, dtype=loss.dtype), **opts)
        if stage == "train":
            self.log(
                "loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=n
            )
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with torch.set_grad_enabled(self.grad_in_eval or torch.is_grad_enabled()):
            return self._step(batch, "val").detach()

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with torch.set_grad_enabled(self.grad_in_eval or torch.is_grad_enabled()):
            return self._step(batch, "test").detach()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Lightning's 64-true precision casts plain tensors but not PyG batches; do both here.
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        if dtype == torch.float64:
            batch = _cast_floats(batch, dtype)
        return batch

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        opt = build_optimizer(self.model.parameters(), self.optimizer_config)
        if self.scheduler_config is None:
            return opt
        trainer = self._trainer
        max_epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else 1
        total = trainer.estimated_stepping_batches if trainer is not None else 1
        total = int(total) if total != float("inf") else 1
        sched = build_scheduler(
            opt, self.scheduler_config, max_epochs=max_epochs, total_steps=total, monitor=self.monitor
        )
        return {"optimizer": opt, "lr_scheduler": sched}

    def on_train_start(self) -> None:
        # A restored OneCycleLR keeps its old total_steps; torch would fail later with a cryptic message.
        trainer = self._trainer
        for cfg in trainer.lr_scheduler_configs if trainer is not None else []:
            sched = cfg.scheduler
            total = trainer.estimated_stepping_batches
            if isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.total_steps < total:
                raise ConfigError(
                    f"onecycle schedule covers {sched.total_steps} optimiser steps, this fit runs {total}; "
                    "a one-cycle run cannot be extended on resume (use cosine/plateau, or start afresh)"
                )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # exactly once per optimiser step (also under gradient accumulation)
            self.ema.update(self.model)

    # ---------------------------------------------------------------- EMA for evaluation
    def _swap_in_ema(self) -> None:
        if self.ema is None or self._live_backup is not None:
            return
        self._live_backup = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.ema.copy_to(self.model)

    def _swap_out_ema(self) -> None:
        if self._live_backup is None:
            return
        self.model.load_state_dict(self._live_backup)
        self._live_backup = None

    def on_validation_epoch_start(self) -> None:
        self._swap_in_ema()

    def on_validation_epoch_end(self) -> None:
        # Runs before ModelCheckpoint/EarlyStopping's on_validation_end, so checkpoints hold live weights.
        self._swap_out_ema()

    def on_test_epoch_start(self) -> None:
        self._swap_in_ema()

    def on_test_epoch_end(self) -> None:
        self._swap_out_ema()

    def on_exception(self, exception: BaseException) -> None:
        self._swap_out_ema()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Belt and braces: never save EMA weights as the live ones, whatever the hook order.
        if self._live_backup is not None:
            for k, v in self._live_backup.items():
                checkpoint["state_dict"][f"model.{k}"] = v.clone()

    # ---------------------------------------------------------------- results
    def averaged_model(self) -> nn.Module:
        """A copy of `self.model` with the EMA weights (a plain copy of `self.model` without EMA)."""
        if self.ema is None:
            return copy.deepcopy(self.model)
        return self.ema.averaged_model(like=self.model)

    def export(self, dir, name: str, config: dict, meta: dict | None = None, averaged: bool = True):
        """Write the (EMA-averaged by default) weights with `scifm.core.export.save_model`."""
        from scifm.core.export import save_model

        model = self.averaged_model() if averaged else self.model
        return save_model(dir, name=name, config=config, state_dict=model.state_dict(), meta=meta)
