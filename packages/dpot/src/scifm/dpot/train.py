"""Auto-regressive denoising training of DPOT (and the FNO baseline): loss, schedule, loops, run export.

Two ways to train the same ``loss``:

* :class:`DPOTTask` wraps it in the core trainer (``scifm.core.train.fit``): epochs over a DataLoader of
  :class:`~scifm.dpot.data.MixtureDataset` windows, checkpoints, CSV logs. ``sci-fm train dpot`` uses this.
* :func:`train_budgeted` is a plain loop with a fixed wall-clock budget whose OneCycle schedule runs on the
  fraction of the budget used, so two models given the same seconds both finish their cycle (what the
  benchmark needs for "same wall time"); batches are drawn on the device by ``MixtureDataset.sample_batch``.

Loss (anchor §2.3): per sample and active channel ``||pred - y|| / ||y||`` over all grid points and target
frames, averaged over the sample's active channels, then averaged (the anchor sums) over the batch.
Deviation: the anchor's training mask also covers the padded constant-1 channels; ours does not, so a
model's padded-channel outputs are untrained and rollouts must feed the padding back (``rollout(n_real=)``).
Optimiser (anchor §2.5): Adam with coupled L2 weight decay 1e-6, betas (0.9, 0.9), OneCycle with
``div_factor = final_div_factor = 1e4`` and 20 % warm-up; we do not cycle beta1.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from scifm.core.export import load_model, save_model
from scifm.core.train import Task
from scifm.dpot.fno import FNO, FNOConfig
from scifm.dpot.model import DPOT, DPOTConfig
from scifm.dpot.noise import add_noise
from scifm.dpot.rollout import feed_back

ARCHS = {"dpot": (DPOT, DPOTConfig), "fno": (FNO, FNOConfig)}


def rel_l2_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``pred, y [B, *space, T, C]``, ``mask [B, C]`` (1 = active channel) -> scalar."""
    dims = tuple(range(1, pred.dim() - 1))
    err = torch.linalg.vector_norm(pred - y, dim=dims)
    ref = torch.linalg.vector_norm(y, dim=dims)
    r = err / (ref + 1e-8)  # [B, C]
    if mask is None:
        return r.mean()
    return ((r * mask).sum(-1) / mask.sum(-1).clamp_min(1)).mean()


def draw_unroll(unroll: int, generator: torch.Generator | None = None) -> int:
    """The rollout step to train this batch on: 1, or k ~ U{1..unroll} (pushforward)."""
    return 1 if unroll <= 1 else int(torch.randint(1, unroll + 1, (1,), generator=generator))


def loss_fn(
    model: torch.nn.Module,
    batch: dict,
    noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
    unroll: int = 1,
) -> tuple[torch.Tensor, dict]:
    """Training loss: noisy input window -> next frame(s). Batch keys ``x``, ``y``, ``mask``.

    ``unroll = k > 1`` (``y`` must then hold at least ``k * T_out`` frames): the pushforward trick
    (Brandstetter et al. 2022): the model first rolls out ``k - 1`` steps without gradient from the (noisy)
    window, feeding its own predictions back, and the loss is taken on step ``k`` only, so the model learns to
    correct the errors its own rollouts put into the window (the anchor's ``T_ar``, gradient stopped)."""
    x, y, mask = batch["x"], batch["y"], batch.get("mask")
    if noise_scale:
        x = add_noise(x, noise_scale, mask, generator=generator)
    window = x
    t_out = getattr(getattr(model, "config", None), "out_timesteps", 1)
    if unroll > 1:
        if y.shape[-2] < unroll * t_out:
            have = y.shape[-2]
            raise ValueError(f"unroll={unroll} needs {unroll * t_out} target frames, the batch has {have}")
        with torch.no_grad():
            for _ in range(unroll - 1):
                window = feed_back(window, model(window), mask)[1]
        y = y[..., (unroll - 1) * t_out :, :]
    pred = model(window)
    n = pred.shape[-1]
    loss = rel_l2_loss(pred, y[..., : pred.shape[-2], :n], None if mask is None else mask[..., :n])
    return loss, {"rel_l2": loss.detach()}


class DPOTTask(Task):
    """The core-trainer task: noise only in training, clean windows for validation/test. ``unroll = K > 1``:
    each training batch (carrying ``K * T_out`` target frames) is trained on a rollout step k drawn from 1..K
    (pushforward, :func:`loss_fn`); validation stays one-step."""

    def __init__(self, model, noise_scale: float = 0.0, unroll: int = 1, **kwargs):
        super().__init__(model, **kwargs)
        self.noise_scale = noise_scale
        self.unroll = unroll

    def loss(self, batch, stage):
        if stage != "train":
            return loss_fn(self.model, batch)
        return loss_fn(self.model, batch, self.noise_scale, unroll=draw_unroll(self.unroll))


def onecycle_lr(
    frac: float, max_lr: float, pct_start: float = 0.2, div_factor: float = 1e4, final_div_factor: float = 1e4
) -> float:
    """PyTorch's cosine OneCycle learning rate at progress ``frac`` in [0, 1]."""
    frac = min(max(frac, 0.0), 1.0)
    start, end = max_lr / div_factor, max_lr / div_factor / final_div_factor

    def cos(a, b, p):
        return b + (a - b) / 2.0 * (1 + math.cos(math.pi * p))

    if frac < pct_start:
        return cos(start, max_lr, frac / pct_start)
    return cos(max_lr, end, (frac - pct_start) / (1 - pct_start))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 1e-6):
    # torch's Adam weight_decay is the coupled L2 form the anchor uses.
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.9), weight_decay=weight_decay)


def train_budgeted(
    model: torch.nn.Module,
    sample_batch,
    *,
    max_time_s: float,
    max_steps: int | None = None,
    lr: float = 1e-3,
    noise_scale: float = 0.0,
    weight_decay: float = 1e-6,
    pct_start: float = 0.2,
    div_factor: float = 1e4,
    seed: int = 0,
    unroll: int = 1,
    log_every: int = 50,
    progress: bool = True,
    desc: str = "train",
    sync=None,
) -> dict:
    """Train until ``max_time_s`` seconds (or ``max_steps``) pass; ``sample_batch()`` returns a batch dict.

    The learning rate follows OneCycle on ``max(elapsed / max_time_s, step / max_steps)``. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before reading the clock so GPU time is measured honestly.
    ``unroll = K > 1``: each step draws k uniformly from 1..K and trains on the k-th rollout step
    (pushforward, see :func:`loss_fn`); the batches must then carry ``K * T_out`` target frames.
    Returns ``{"steps", "wall_s", "samples", "loss_curve": [[step, seconds, loss], ...]}``."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)  # noise is drawn on the model's device
    pick = torch.Generator().manual_seed(seed + 1)  # unroll lengths
    opt = make_optimizer(model, onecycle_lr(0, lr, pct_start, div_factor), weight_decay)
    model.train()
    t0 = time.perf_counter()
    step, samples, curve, running = 0, 0, [], []
    pb = tqdm(
        total=int(max_time_s), desc=desc, unit="s", disable=not progress, leave=False, dynamic_ncols=True
    )
    while True:
        elapsed = time.perf_counter() - t0
        frac = elapsed / max_time_s
        if max_steps:
            frac = max(frac, step / max_steps)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = onecycle_lr(frac, lr, pct_start, div_factor)
        batch = sample_batch()
        loss, _ = loss_fn(model, batch, noise_scale, generator=gen, unroll=draw_unroll(unroll, pick))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        samples += batch["x"].shape[0]
        running.append(loss.detach())
        if step % log_every == 0:
            if sync is not None:
                sync()
            mean = float(torch.stack(running).mean())
            running = []
            t = time.perf_counter() - t0
            curve.append([step, round(t, 3), mean])
            pb.n = min(int(t), pb.total)
            pb.set_postfix(loss=f"{mean:.4f}", step=step)
    if sync is not None:
        sync()
    pb.close()
    model.eval()
    return {"steps": step, "wall_s": time.perf_counter() - t0, "samples": samples, "loss_curve": curve}


# ------------------------------------------------------------------------------------------- runs on disk
def export_run(run_dir: str | Path, model: torch.nn.Module, meta: dict | None = None) -> Path:
    """Write ``run_dir/model/{model.safetensors, model.json}`` (architecture name + config + meta)."""
    arch = "dpot" if isinstance(model, DPOT) else "fno"
    return save_model(
        Path(run_dir) / "model",
        name=arch,
        config=model.config.to_dict(),
        state_dict=model.state_dict(),
        meta=meta or {},
    )


def build_model(arch: str, config: dict) -> torch.nn.Module:
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}")
    cls, cfg_cls = ARCHS[arch]
    return cls(cfg_cls(**config))


def load_run(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild an exported model from a run directory (or its ``model/`` folder); no pickle."""
    path = Path(path)
    model_dir = path / "model" if (path / "model" / "model.json").is_file() else path
    name, config, state, meta = load_model(model_dir, device=device)
    model = build_model(name, config).to(device)
    model.load_state_dict(state)
    model.eval()
    return model, meta or {}


def init_from(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Load a pre-trained run's weights into ``model`` where names and shapes match (fine-tuning on data with
    a different channel count keeps the blocks and re-initialises the rest). Returns the skipped keys."""
    src, _ = load_run(path)
    own = model.state_dict()
    take = {k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return sorted(set(own) - set(take))
