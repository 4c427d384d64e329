"""DPOT's denoising noise: ``x + s * ||x||_2 * eps`` with the L2 norm per (sample, channel) over the window.

The anchor's ``s`` (5e-4 for Ti/S/M, 5e-5 for L) was set for a 128 x 128 x 10 window, where ``||x||_2`` is
``sqrt(163840) ~ 405`` times the channel's RMS, i.e. a per-entry noise std of ~0.2 RMS. On another window size
we rescale ``s`` by ``sqrt(163840 / (X Y T))`` so the noise keeps the same size relative to the RMS.
"""

from __future__ import annotations

import math

import torch

REFERENCE_NUMEL = 128 * 128 * 10


def effective_scale(scale: float, x: torch.Tensor, reference_numel: int | None = REFERENCE_NUMEL) -> float:
    """``s`` rescaled for the window of ``x [B, *space, T, C]`` (no rescaling if ``reference_numel`` is
    None)."""
    if reference_numel is None:
        return scale
    numel = math.prod(x.shape[1:-1])
    return scale * math.sqrt(reference_numel / numel)


def add_noise(
    x: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reference_numel: int | None = REFERENCE_NUMEL,
) -> torch.Tensor:
    """Noisy copy of ``x [B, *space, T, C]``; ``mask [B, C]`` (1 = real channel) keeps padded channels clean.

    Per-entry noise std is ``effective_scale * ||x[b, ..., c]||_2``."""
    if scale == 0:
        return x
    s = effective_scale(scale, x, reference_numel)
    dims = tuple(range(1, x.dim() - 1))
    norm = torch.linalg.vector_norm(x, dim=dims, keepdim=True)  # [B, 1.., C]
    if mask is not None:
        norm = norm * mask.reshape(mask.shape[0], *([1] * len(dims)), mask.shape[-1]).to(x.dtype)
    # the generator must live on x's device (drawing on the CPU and copying would stall a GPU loop)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + s * norm * eps
