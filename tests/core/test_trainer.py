"""The core trainer: Task logging, EMA, checkpoints, resume (also after a kill), DDP, dtype, schedules."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from scifm.core.errors import ConfigError, DataError
from scifm.core.io import load_checkpoint
from scifm.core.train import EMA, Task, fit, read_metrics_csv, seed_everything

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
W_TRUE = torch.tensor([[1.0], [-2.0], [0.5]])


class Regression(Task):
    """MSE regression; records the dtype it saw and whether grad was enabled in validation."""

    seen_dtypes: set
    val_grad_enabled: list

    def loss(self, batch, stage):
        x, y = batch
        self.__dict__.setdefault("seen_dtypes", set()).add(x.dtype)
        if stage == "val":
            self.__dict__.setdefault("val_grad_enabled", []).append(torch.is_grad_enabled())
        err = self.model(x) - y
        mse = (err**2).mean()
        return mse, {"mae": err.abs().mean(), "const": 1.5}


def make_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x @ W_TRUE + 0.01 * torch.randn(n, 1, generator=g)


def loaders(n_train=64, n_val=20, batch=16, val_batch=8, shuffle=True):
    x, y = make_data(n_train + n_val)
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch, shuffle=shuffle)
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=val_batch)
    return train, val


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def run(tmp, task, train, val=None, **kw):
    kw.setdefault("max_epochs", 3)
    kw.setdefault("progress", False)
    kw.setdefault("accelerator", "cpu")
    return fit(task, train, val, run_dir=tmp, **kw)


# ------------------------------------------------------------------ training, logging, checkpoints
def test_training_reduces_loss_and_writes_run_dir(tmp_path):
    train, val = loaders()
    task = Regression(mlp(), optimizer={"name": "adamw", "lr": 2e-2})
    trainer = run(tmp_path, task, train, val, max_epochs=8)
    m = read_metrics_csv(tmp_path)
    assert len(m["train/loss"]) == 8 and len(m["val/loss"]) == 8
    assert m["val/loss"][-1] < 0.5 * m["val/loss"][0]
    assert m["train/loss"][-1] < 0.5 * m["train/loss"][0]
    assert m["val/const"] == [1.5] * 8  # float entries of the loss dict are logged too
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    summary = json.loads((tmp_path / "fit_summary.json").read_text())
    assert summary == trainer.scifm_summary
    assert summary["epochs_run"] == 8 and summary["start_epoch"] == 0 and summary["monitor"] == "val/loss"
    assert summary["best_score"] == pytest.approx(min(m["val/loss"]), rel=1e-6)
    # our checkpoints load without pickle code execution
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    assert ckpt["epoch"] == int(torch.tensor(m["val/loss"]).argmin())


def test_validation_means_are_weighted_by_batch_size(tmp_path):
    # 20 validation samples in batches of 8, 8, 4: the epoch value must be the dataset MSE.
    train, val = loaders(val_batch=8)
    task = Regression(mlp(), optimizer={"name": "adam", "lr": 0.0})  # lr 0: weights never change
    run(tmp_path, task, train, val, max_epochs=1)
    x, y = make_data(84)
    with torch.no_grad():
        expected = ((task.model(x[64:]) - y[64:]) ** 2).mean().item()
    assert read_metrics_csv(tmp_path)["val/loss"][0] == pytest.approx(expected, rel=1e-5)


def test_no_val_loader_monitors_train_loss(tmp_path):
    train, _ = loaders()
    trainer = run(tmp_path, Regression(mlp()), train, None, max_epochs=2)
    assert trainer.scifm_summary["monitor"] == "train/loss"
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_validation_can_use_autograd(tmp_path):
    class ForceLike(Task):
        grad_in_eval = True

        def loss(self, batch, stage):
            x, y = batch
            x = x.clone().requires_grad_(True)
            e = self.model(x).sum()
            (f,) = torch.autograd.grad(e, x, create_graph=(stage == "train"))  # "forces" need grad in val
            return (f**2).mean() + ((self.model(x) - y) ** 2).mean(), {}

    train, val = loaders()
    run(tmp_path, ForceLike(mlp()), train, val, max_epochs=1)
    assert len(read_metrics_csv(tmp_path)["val/loss"]) == 1


def test_early_stopping(tmp_path):
    train, val = loaders()
    task = Regression(mlp(), optimizer={"name": "adam", "lr": 0.0})  # val loss never improves
    trainer = run(tmp_path, task, train, val, max_epochs=20, early_stopping_patience=2)
    assert trainer.scifm_summary["stopped_early"]
    assert trainer.scifm_summary["epochs_run"] == 3


def test_bad_configs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="sgd"):
        Regression(mlp(), optimizer={"name": "sgd"})
    with pytest.raises(ConfigError, match="unknown keys"):
        Regression(mlp(), optimizer={"name": "adam", "momentum": 0.9})
    with pytest.raises(ConfigError, match="step"):
        Regression(mlp(), scheduler={"name": "step"})
    train, _ = loaders()
    with pytest.raises(ConfigError, match="dtype"):
        run(tmp_path, Regression(mlp()), train, dtype="float16")
    with pytest.raises(ConfigError, match="logger"):
        run(tmp_path, Regression(mlp()), train, logger="tensorboard")


# ------------------------------------------------------------------ EMA
def test_ema_matches_hand_computation():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9, warmup=False)
    theta = [p.detach().clone() for p in model.parameters()]
    avg = [t.clone() for t in theta]
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (step + 1))
        ema.update(model)
        avg = [0.9 * a + 0.1 * p.detach() for a, p in zip(avg, model.parameters(), strict=True)]
    for a, e in zip(avg, ema.module.parameters(), strict=True):
        torch.testing.assert_close(e, a)
    assert int(ema.num_updates) == 3
    # weights after 3 steps: theta0 + 0.6, EMA lags behind them
    assert not torch.allclose(ema.module.weight, model.weight)
    with ema.swapped_into(model):
        torch.testing.assert_close(model.weight, avg[0])
    torch.testing.assert_close(model.weight, theta[0] + 0.6)


def test_ema_warmup_forgets_the_initialisation():
    """d_n = min(decay, n / (n + 9)): the first update takes 90 % of the live weights, and after 1000
    updates with decay 0.999 the initial weights' share is ~1e-4 (it would be 0.999^1000 = 37 % without)."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    with torch.no_grad():
        model.weight.fill_(0.0)  # the live weights jump to 0 and stay there
    ema.update(model)
    assert float(ema.module.weight) == pytest.approx(0.1)
    share = 0.1
    for n in range(2, 1001):
        ema.update(model)
        share *= min(0.999, n / (n + 9))
    assert float(ema.module.weight) == pytest.approx(share, rel=1e-4) and share < 1e-3
    assert 0.999**1000 > 0.3
    ema.num_updates.fill_(9000)  # n / (n + 9) reaches the set decay at n = 8991
    assert ema.current_decay() == 0.999
    plain = EMA(nn.Linear(1, 1), decay=0.999, warmup=False)
    assert plain.current_decay() == 0.999


class _RecordWeights(L.Callback):
    def __init__(self):
        self.history = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.history.append([p.detach().clone() for p in pl_module.model.parameters()])


def test_ema_in_training_and_eval_uses_averaged_weights(tmp_path):
    train, val = loaders(n_train=48, batch=16, shuffle=False)  # 3 optimiser steps
    model = mlp()
    init = [p.detach().clone() for p in model.parameters()]
    task = Regression(model, optimizer={"name": "adam", "lr": 1e-2}, ema_decay=0.5)
    rec = _RecordWeights()
    run(tmp_path, task, train, val, max_epochs=1, callbacks=[rec])
    assert len(rec.history) == 3
    avg = init
    for n, theta in enumerate(rec.history, start=1):
        d = min(0.5, n / (n + 9))  # warm-up: 0.1, 0.18, 0.25
        avg = [d * a + (1 - d) * t for a, t in zip(avg, theta, strict=True)]
    averaged = task.averaged_model()
    for a, p in zip(avg, averaged.parameters(), strict=True):
        torch.testing.assert_close(p, a)
    # the live weights are back in the model after validation, and they are the last step's
    for p, t in zip(task.model.parameters(), rec.history[-1], strict=True):
        torch.testing.assert_close(p, t)
    # validation loss was computed with the averaged weights
    x, y = make_data(68)
    with torch.no_grad():
        expected = ((averaged(x[48:]) - y[48:]) ** 2).mean().item()
    assert read_metrics_csv(tmp_path)["val/loss"][0] == pytest.approx(expected, rel=1e-5)
    # and the checkpoint stores live weights plus the EMA as plain tensors
    sd = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    torch.testing.assert_close(sd["model.0.weight"], rec.history[-1][0])
    torch.testing.assert_close(sd["ema.module.0.weight"], avg[0])


# ------------------------------------------------------------------ resume
def test_resume_continues_and_is_exact(tmp_path):
    def new_task():
        return Regression(mlp(), optimizer={"name": "adamw", "lr": 1e-2}, ema_decay=0.9)

    train, val = loaders(shuffle=False)
    straight = new_task()
    run(tmp_path / "a", straight, train, val, max_epochs=4)

    first = new_task()
    run(tmp_path / "b", first, train, val, max_epochs=2)
    second = new_task()  # fresh weights: everything must come from last.ckpt
    trainer = run(tmp_path / "b", second, train, val, max_epochs=4, resume=True)
    s = trainer.scifm_summary
    assert (s["start_epoch"], s["epochs_run"], s["final_epoch"]) == (2, 2, 4)
    assert s["resumed_from"].endswith("last.ckpt") and trainer.global_step == 16
    m = read_metrics_csv(tmp_path / "b", dropna=False)
    train_epochs = [e for e, v in zip(m["epoch"], m["train/loss"], strict=True) if v is not None]
    assert train_epochs == [0, 1, 2, 3]  # earlier rows kept, no restart, no duplicates
    # 2 + 2 resumed epochs equal 4 straight epochs: weights, EMA and optimiser state all restored
    for p, q in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    for p, q in zip(
        straight.averaged_model().parameters(), second.averaged_model().parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_resume_without_checkpoint_starts_fresh_and_corrupt_checkpoint_is_data_error(tmp_path):
    train, val = loaders()
    trainer = run(tmp_path, Regression(mlp()), train, val, max_epochs=1, resume=True)
    assert trainer.scifm_summary["resumed_from"] is None
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(DataError, match="last.ckpt"):
        run(tmp_path, Regression(mlp()), train, val, max_epochs=2, resume=True)


KILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import lightning as L
from test_trainer import Regression, loaders, mlp
from scifm.core.train import fit

class Slow(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(0.5)

train, val = loaders()
fit(Regression(mlp(), ema_decay=0.9), train, val, run_dir=sys.argv[1], max_epochs=1000, progress=False,
    accelerator="cpu", callbacks=[Slow()])
"""


@pytest.mark.slow
def test_resume_after_real_kill(tmp_path):
    script = tmp_path / "train_forever.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (last.is_file() and load_checkpoint(last)["epoch"] >= 1):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert last.is_file(), "training subprocess never wrote a checkpoint"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    done = load_checkpoint(last)["epoch"]  # last completed epoch saved before the kill
    train, val = loaders()
    task = Regression(mlp(seed=123), ema_decay=0.9)
    trainer = run(run_dir, task, train, val, max_epochs=done + 3, resume=True)
    s = trainer.scifm_summary
    assert s["start_epoch"] == done + 1 and s["epochs_run"] == 2
    assert int(task.ema.num_updates) == trainer.global_step == 4 * (done + 3)
    m = read_metrics_csv(run_dir, dropna=False)
    train_epochs = [e for e, v in zip(m["epoch"], m["train/loss"], strict=True) if v is not None]
    assert train_epochs == list(range(done + 3))


# ------------------------------------------------------------------ dtype, schedulers, seeding
def test_float64_run(tmp_path):
    train, val = loaders()
    task = Regression(mlp(), ema_decay=0.9)
    before = torch.get_default_dtype()
    run(tmp_path, task, train, val, max_epochs=1, dtype="float64")
    assert task.seen_dtypes == {torch.float64}
    assert all(p.dtype == torch.float64 for p in task.model.parameters())
    assert all(p.dtype == torch.float64 for p in task.averaged_model().parameters())
    assert torch.get_default_dtype() == before  # restored after the fit
    sd = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert sd["model.0.weight"].dtype == torch.float64


def _lrs(task):
    return [g["lr"] for g in task.trainer.optimizers[0].param_groups]


def test_cosine_schedule(tmp_path):
    train, val = loaders()
    task = Regression(
        mlp(), optimizer={"name": "adamw", "lr": 1e-2}, scheduler={"name": "cosine", "eta_min": 0}
    )
    run(tmp_path, task, train, val, max_epochs=4)
    lrs = read_metrics_csv(tmp_path)["lr-AdamW"]
    assert lrs[0] == pytest.approx(1e-2) and _lrs(task)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_onecycle_schedule_steps_per_batch(tmp_path):
    train, val = loaders()
    sched = {"name": "onecycle", "max_lr": 1e-2, "pct_start": 0.5}
    task = Regression(mlp(), optimizer={"name": "adamw", "lr": 1e-2}, scheduler=sched)
    run(tmp_path, task, train, val, max_epochs=2)
    s = task.lr_schedulers()
    assert isinstance(s, torch.optim.lr_scheduler.OneCycleLR) and s.total_steps == 8 and s.last_epoch == 8
    with pytest.raises(ConfigError, match="onecycle"):  # cannot be extended on resume
        run(tmp_path, Regression(mlp(), scheduler=sched), train, val, max_epochs=4, resume=True)


def test_time_cosine_schedule_follows_the_clock_and_resumes():
    from scifm.core.train.task import TimeCosineLR

    now = [0.0]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = TimeCosineLR(opt, budget_s=100.0, eta_min=0.01, warmup_frac=0.1, clock=lambda: now[0])
    seen = []
    for t in (0.0, 5.0, 10.0, 55.0, 100.0, 250.0):
        now[0] = t
        opt.step()
        s.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-3)  # warm-up starts at 1e-3 of the peak
    assert seen[1] == pytest.approx(0.5)  # half-way through the 10 s warm-up
    assert seen[2] == pytest.approx(1.0)  # peak at the end of the warm-up
    assert seen[3] == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through the cosine
    assert seen[4] == pytest.approx(0.01) and seen[5] == pytest.approx(0.01)  # floor, also past the budget
    # resume: elapsed time travels in the state dict; the pause before the resume does not count
    state = s.state_dict()
    assert "clock" not in state and "optimizer" not in state
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    now[0] = 0.0
    s2 = TimeCosineLR(opt2, budget_s=100.0, eta_min=0.01, clock=lambda: now[0])
    state["elapsed_s"] = 40.0
    s2.load_state_dict(state)
    now[0] = 1000.0
    s2.step()  # first tick after the resume: no time added
    assert s2.elapsed_s == pytest.approx(40.0)
    now[0] = 1005.0
    s2.step()
    assert s2.elapsed_s == pytest.approx(45.0)
    g = (0.45 - 0.1) / 0.9
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01 + 0.495 * (1 + math.cos(math.pi * g)))


def test_time_cosine_schedule_in_a_fit(tmp_path):
    train, val = loaders()
    sched = {"name": "cosine-time", "budget_s": 1e-6, "eta_min": 1e-4}
    task = Regression(mlp(), optimizer={"name": "adamw", "lr": 1e-2}, scheduler=sched)
    run(tmp_path, task, train, val, max_epochs=2)
    s = task.lr_schedulers()
    assert s.fraction() == 1.0 and _lrs(task)[0] == pytest.approx(1e-4)  # a spent budget sits at eta_min
    for bad in ({"name": "cosine-time"}, {"name": "cosine-time", "budget_s": 10, "warmup_frac": 1.0}):
        with pytest.raises(ConfigError, match="cosine-time"):
            Regression(mlp(), scheduler=bad)


def test_plateau_schedule_reduces_lr(tmp_path):
    # lr 1e-12: val/loss changes by ~1e-12 relative (< threshold 1e-4), so no epoch after the first
    # improves; with patience 0 the lr is halved after epochs 2 and 3.
    train, val = loaders()
    sched = {"name": "plateau", "patience": 0, "factor": 0.5, "min_lr": 0.0}
    task = Regression(mlp(), optimizer={"name": "adam", "lr": 1e-12}, scheduler=sched)
    run(tmp_path, task, train, val, max_epochs=3)
    s = task.lr_schedulers()
    assert isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) and s.last_epoch == 3
    assert _lrs(task)[0] == pytest.approx(0.25e-12)


def test_seed_everything_is_deterministic(tmp_path):
    seed_everything(7)
    a = torch.rand(3)
    seed_everything(7)
    assert torch.equal(a, torch.rand(3))
    train, val = loaders()
    ta, tb = Regression(mlp()), Regression(mlp())
    run(tmp_path / "a", ta, train, val, max_epochs=2, seed=5)
    run(tmp_path / "b", tb, train, val, max_epochs=2, seed=5)
    for p, q in zip(ta.model.parameters(), tb.model.parameters(), strict=True):
        assert torch.equal(p, q)


# ------------------------------------------------------------------ DDP on CPU (gloo), in a subprocess
DDP_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_trainer import Regression, loaders, mlp
from scifm.core.train import fit

train, val = loaders(n_train=64, batch=8)
task = Regression(mlp(), optimizer={{"name": "adamw", "lr": 1e-2}}, ema_decay=0.9)
trainer = fit(task, train, val, run_dir=sys.argv[1], max_epochs=2, progress=False, accelerator="cpu",
              strategy="ddp", devices=2)
out = {{"rank": trainer.global_rank, "world": trainer.world_size, "steps": trainer.global_step,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "w": [float(p.sum()) for p in task.model.parameters()],
        "ema": [float(p.sum()) for p in task.averaged_model().parameters()]}}
open(f"{{sys.argv[1]}}/rank{{trainer.global_rank}}.json", "w").write(json.dumps(out))
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "RANK"):
        env.pop(k, None)
    res = subprocess.run(
        [sys.executable, str(script), str(run_dir)], env=env, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["world"] for r in ranks} == {2} and {r["backend"] for r in ranks} == {"gloo"}
    # 64 samples / (2 ranks * batch 8) = 4 steps per epoch: the data was split between ranks
    assert {r["steps"] for r in ranks} == {8}
    # gradients were all-reduced: both ranks hold identical weights and EMA
    assert ranks[0]["w"] == ranks[1]["w"] and ranks[0]["ema"] == ranks[1]["ema"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(read_metrics_csv(run_dir)["val/loss"]) == 2


def test_wandb_logger_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train, val = loaders()
    try:
        run(tmp_path, Regression(mlp()), train, val, max_epochs=1, logger="wandb")
    finally:
        wandb.finish()
    run_id = (tmp_path / "logs" / "wandb_id.txt").read_text().strip()
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))  # offline, one id per run_dir
    assert len(read_metrics_csv(tmp_path)["val/loss"]) == 1  # CSV is written as well
