"""Scatter reductions over the first (or any) dimension in plain torch (no torch_scatter).

``index`` has one entry per row of ``src`` along ``dim``; ``dim_size`` is the output length along ``dim``
(pass it whenever trailing segments may be empty, e.g. isolated atoms with no edges).
"""

from __future__ import annotations

import torch


def _out_shape(
    src: torch.Tensor, index: torch.Tensor, dim: int, dim_size: int | None
) -> tuple[list[int], int]:
    dim = dim % src.dim()
    if index.dim() != 1 or index.numel() != src.shape[dim]:
        raise ValueError(f"index must be 1-D with {src.shape[dim]} entries, got shape {tuple(index.shape)}")
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    shape = list(src.shape)
    shape[dim] = dim_size
    return shape, dim


def scatter_sum(
    src: torch.Tensor, index: torch.Tensor, dim: int = 0, dim_size: int | None = None
) -> torch.Tensor:
    """out[k] = sum of src[e] over e with index[e] == k (along ``dim``). Differentiable w.r.t. src."""
    shape, dim = _out_shape(src, index, dim, dim_size)
    out = src.new_zeros(shape)
    return out.index_add(dim, index, src)


def scatter_mean(
    src: torch.Tensor, index: torch.Tensor, dim: int = 0, dim_size: int | None = None
) -> torch.Tensor:
    """Mean of src over each segment; empty segments give 0."""
    shape, dim = _out_shape(src, index, dim, dim_size)
    total = src.new_zeros(shape).index_add(dim, index, src)
    count = torch.zeros(shape[dim], dtype=src.dtype, device=src.device)
    count = count.index_add(0, index, torch.ones_like(index, dtype=src.dtype)).clamp(min=1)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return total / count.view(view)
