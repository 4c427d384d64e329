"""L2RE as DPOT reports it, and per-step error curves.

L2RE: for each trajectory and each real channel, ``||pred - true||_2 / ||true||_2`` over the whole rollout
(all grid points and all predicted frames); averaged over channels, then over trajectories.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def relative_l2(pred: torch.Tensor, true: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    err = torch.linalg.vector_norm((pred - true).double(), dim=dims)
    ref = torch.linalg.vector_norm(true.double(), dim=dims)
    return err / (ref + EPS)


def l2re(pred: torch.Tensor, true: torch.Tensor, n_channels: int | None = None) -> dict:
    """``pred, true [N, *space, T, C]``; only the first ``n_channels`` channels count (the real ones).

    Returns ``l2re`` (float), ``l2re_per_channel`` (list, mean over trajectories), ``l2re_per_trajectory``."""
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs true {tuple(true.shape)}")
    c = n_channels or pred.shape[-1]
    dims = tuple(range(1, pred.dim() - 1))
    r = relative_l2(pred[..., :c], true[..., :c], dims)  # [N, C]
    return dict(
        l2re=float(r.mean()), l2re_per_channel=r.mean(0).tolist(), l2re_per_trajectory=r.mean(1).tolist()
    )


def per_step_error(pred: torch.Tensor, true: torch.Tensor, n_channels: int | None = None) -> list[float]:
    """Relative L2 of each predicted frame (over space), averaged over channels and trajectories: ``[T]``."""
    c = n_channels or pred.shape[-1]
    dims = tuple(range(1, pred.dim() - 2))
    r = relative_l2(pred[..., :c], true[..., :c], dims)  # [N, T, C]
    return r.mean((0, 2)).tolist()
