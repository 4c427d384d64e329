"""Auto-regressive rollouts, evaluation on a data file, and the plots (prediction vs truth, error vs time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scifm.core.errors import DataError
from scifm.dpot.data import PDEFile, fft_resample, resize, to_2d
from scifm.dpot.fno import FNO
from scifm.dpot.metrics import l2re, per_step_error


@torch.no_grad()
def rollout(
    model: torch.nn.Module, x0: torch.Tensor, horizon: int, n_real: int | None = None
) -> torch.Tensor:
    """From the window ``x0 [B, *space, T_in, C]``, predict ``horizon`` frames ``[B, *space, horizon,
    C_out]``; each prediction is appended to the window and the oldest frame dropped.

    ``n_real``: how many leading channels are real data. The others are padding (DPOT pads a dataset's
    channels up to the model's count with the constant 1); they are fed back at their input value, never as
    the model's prediction. Our loss ignores padded channels, so their predictions are untrained: feeding
    them back pushed the window off the training distribution and made the rollout error grow linearly
    (the 1-channel sets were 30-75x worse than an FNO before this was fixed)."""
    window = x0
    out = []
    n = 0
    real = None
    if n_real is not None:
        real = (torch.arange(x0.shape[-1], device=x0.device) < n_real).expand(x0.shape[0], -1)
    while n < horizon:
        pred, window = feed_back(window, model(window), real)  # [B, *space, T_out, C_in]
        out.append(pred)
        n += pred.shape[-2]
    return torch.cat(out, -2)[..., :horizon, :]


def feed_back(
    window: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append a prediction to an input window: returns (the prediction as fed back, the next window).

    ``pred [B, *space, T_out, C_out]`` loses the oldest ``T_out`` frames of ``window [B, *space, T_in, C]``.
    Channels the model does not predict (``C_out < C``) and channels with ``mask [B, C]`` 0 (padding) keep the
    last input frame's value."""
    t_out = pred.shape[-2]
    last = window[..., -1:, :].expand(*window.shape[:-2], t_out, -1)
    if pred.shape[-1] < window.shape[-1]:
        pred = torch.cat([pred, last[..., pred.shape[-1] :]], -1)
    if mask is not None:
        m = mask.reshape(mask.shape[0], *([1] * (pred.dim() - 2)), mask.shape[-1]).to(torch.bool)
        pred = torch.where(m, pred, last)
    return pred, torch.cat([window[..., t_out:, :], pred], -2)


def model_io(model: torch.nn.Module) -> tuple[int, int, int | None, int]:
    """(t_in, in_channels, native resolution or None, spatial dims) of a DPOT or FNO."""
    cfg = model.config
    if isinstance(model, FNO):
        return cfg.in_timesteps, cfg.in_channels, None, cfg.spatial_dims
    return cfg.in_timesteps, cfg.in_channels, cfg.img_size, 2


@torch.no_grad()
def evaluate_file(
    model: torch.nn.Module,
    path: str | Path,
    indices=None,
    horizon: int | None = None,
    resample: str = "none",
    batch_size: int = 16,
    device: str = "cpu",
) -> dict:
    """Roll ``model`` out on trajectories of a spec file; the first ``t_in`` frames are the input.

    ``resample``: "none" runs the model on the file's grid; "fft" / "bilinear" resample to the model's
    training
    resolution and back (DPOT's varying-resolution evaluation uses FFT resampling). Returns the metrics plus
    ``pred`` and ``true`` (``[N, *space, horizon, C]`` CPU tensors, real channels only)."""
    f = PDEFile(path)
    info = f.info
    t_in, c_model, res, dims = model_io(model)
    horizon = horizon or info.n_frames - t_in
    if horizon < 1 or t_in + horizon > info.n_frames:
        raise DataError(path, f"{info.n_frames} frames cannot hold t_in={t_in} plus horizon={horizon}")
    if info.n_channels > c_model:
        raise DataError(path, f"{info.n_channels} channels but the model reads {c_model}")
    if info.spatial_dims == 2 and dims == 1:
        raise DataError(path, "2-D data given to a 1-D model")
    idx = np.arange(len(f)) if indices is None else np.asarray(indices)
    preds, trues = [], []
    model = model.to(device).eval()
    c = info.n_channels
    for s in range(0, idx.size, batch_size):
        raw = torch.as_tensor(f.read(idx[s : s + batch_size]), dtype=torch.float32)[..., : t_in + horizon, :]
        true = raw[..., t_in:, :]
        x = raw[..., :t_in, :]
        lifted = info.spatial_dims == 1 and dims == 2
        if lifted:
            x = to_2d(x, None)
        if c < c_model:
            x = torch.cat([x, torch.ones(*x.shape[:-1], c_model - c)], -1)
        grid = x.shape[1:-2]
        if resample != "none" and res is not None and grid != (res, res):
            x = fft_resample(x, (res, res)) if resample == "fft" else resize(x, res)
        pred = rollout(model, x.to(device), horizon, n_real=c).float().cpu()
        if pred.shape[1:-2] != grid:
            pred = fft_resample(pred, grid) if resample == "fft" else resize_to(pred, grid)
        if lifted:
            pred = pred.mean(2)
        preds.append(pred[..., :c])
        trues.append(true)
    pred, true = torch.cat(preds), torch.cat(trues)
    m = l2re(pred, true)
    out = dict(
        l2re=m["l2re"],
        l2re_per_channel=m["l2re_per_channel"],
        channels=list(info.channels),
        horizon=horizon,
        n_trajectories=int(idx.size),
        t_in=t_in,
        per_step_l2re=per_step_error(pred, true),
        l2re_per_trajectory=m["l2re_per_trajectory"],
        data=str(path),
        equation=info.equation,
        resample=resample,
    )
    return out | {"pred": pred, "true": true}


def resize_to(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of ``[B, X, Y, T, C]`` to an arbitrary ``grid``."""
    B, X, Y, T, C = x.shape
    frames = x.permute(0, 3, 4, 1, 2).reshape(B, T * C, X, Y)
    frames = torch.nn.functional.interpolate(frames, size=grid, mode="bilinear", align_corners=False)
    return frames.reshape(B, T, C, *grid).permute(0, 3, 4, 1, 2)


# ------------------------------------------------------------------------------------------------ plots
def plot_rollout(
    pred: torch.Tensor,
    true: torch.Tensor,
    path: str | Path,
    traj: int = 0,
    channel: int = 0,
    n_show: int = 4,
    title: str = "",
) -> Path:
    """Rows truth / prediction / |error| at ``n_show`` evenly spaced rollout steps of one trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, t = pred[traj, ..., channel].numpy(), true[traj, ..., channel].numpy()  # [*space, T]
    T = p.shape[-1]
    steps = sorted(set(np.linspace(0, T - 1, min(n_show, T)).round().astype(int).tolist()))
    fig, axes = plt.subplots(3, len(steps), figsize=(2.6 * len(steps), 7.2), squeeze=False)
    lo, hi = float(t.min()), float(t.max())
    for j, s in enumerate(steps):
        for i, (img, name) in enumerate(
            ((t[..., s], "truth"), (p[..., s], "prediction"), (np.abs(p[..., s] - t[..., s]), "|error|"))
        ):
            ax = axes[i, j]
            if img.ndim == 1:
                ax.plot(img)
            else:
                ax.imshow(
                    img.T,
                    origin="lower",
                    cmap="magma" if i == 2 else "RdBu_r",
                    vmin=None if i == 2 else lo,
                    vmax=None if i == 2 else hi,
                )
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{name}, step {s + 1}", fontsize=8)
    fig.suptitle(title or f"trajectory {traj}, channel {channel}")
    fig.tight_layout()
    return _save(fig, path)


def plot_error_curves(curves: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Relative L2 per rollout step, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), c, marker="o", ms=3, label=label)
    ax.set_xlabel("rollout step")
    ax.set_ylabel("relative L2 error")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
