"""Our own Fourier Neural Operator baseline (1-D and 2-D), same I/O as DPOT.

Why our own: the issue asks for ``neuraloperator``'s FNO, but that library is not a dependency of this
workspace and adding one needs the lead's approval; an FNO is small enough to write from its definition
(Li et al., 2021): lifting -> L x [spectral conv + pointwise conv, GELU] -> projection.

Input ``x [B, X, (Y,) T_in, C]``: the window's frames are stacked as channels together with the grid
coordinates, lifted to ``width``; each layer adds a learned complex multiplication of the lowest ``modes``
Fourier modes (both signs of the non-rfft axes) to a 1x1 convolution. Output ``[B, X, (Y,) T_out, C]``.
Works at any resolution (modes are truncated to what the grid holds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class FNOConfig:
    in_channels: int = 1
    out_channels: int = 1
    in_timesteps: int = 10
    out_timesteps: int = 1
    width: int = 32
    modes: int = 12
    n_layers: int = 4
    spatial_dims: int = 2
    proj_dim: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


class SpectralConv(nn.Module):
    """``[B, W, *space] -> [B, W, *space]``: multiply the retained Fourier modes by learned complex
    weights."""

    def __init__(self, width: int, modes: int, dims: int):
        super().__init__()
        self.dims, self.modes = dims, modes
        n_corners = 2 ** (dims - 1)  # positive and negative frequencies on every axis but the rfft one
        scale = 1.0 / (width * width)
        self.weight = nn.Parameter(scale * torch.randn(n_corners, width, width, *([modes] * dims), 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, 2 + self.dims))
        xf = torch.fft.rfftn(x.float(), dim=dims)
        out = torch.zeros_like(xf)
        w = torch.view_as_complex(self.weight)
        m_last = min(self.modes, xf.shape[-1])
        if self.dims == 1:
            out[..., :m_last] = torch.einsum("bix,iox->box", xf[..., :m_last], w[0, ..., :m_last])
        else:
            m = min(self.modes, x.shape[2] // 2)
            for k, rows in enumerate((slice(0, m), slice(x.shape[2] - m, x.shape[2]))):
                wk = w[k, :, :, :m, :m_last] if k == 0 else w[k, :, :, self.modes - m :, :m_last]
                out[:, :, rows, :m_last] = torch.einsum("bixy,ioxy->boxy", xf[:, :, rows, :m_last], wk)
        return torch.fft.irfftn(out, s=x.shape[2:], dim=dims).to(x.dtype)


class FNO(nn.Module):
    def __init__(self, config: FNOConfig | None = None, **kwargs):
        super().__init__()
        cfg = config or FNOConfig(**kwargs)
        self.config = cfg
        d = cfg.spatial_dims
        if d not in (1, 2):
            raise ValueError("FNO supports 1-D and 2-D grids")
        conv = nn.Conv1d if d == 1 else nn.Conv2d
        self.lift = conv(cfg.in_channels * cfg.in_timesteps + d, cfg.width, 1)
        self.spectral = nn.ModuleList(SpectralConv(cfg.width, cfg.modes, d) for _ in range(cfg.n_layers))
        self.pointwise = nn.ModuleList(conv(cfg.width, cfg.width, 1) for _ in range(cfg.n_layers))
        self.project = nn.Sequential(
            conv(cfg.width, cfg.proj_dim, 1),
            nn.GELU(),
            conv(cfg.proj_dim, cfg.out_channels * cfg.out_timesteps, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        B, *space, T, C = x.shape
        if len(space) != cfg.spatial_dims or T != cfg.in_timesteps or C != cfg.in_channels:
            raise ValueError(f"input {tuple(x.shape)} does not match the FNO config {cfg}")
        h = x.reshape(B, *space, T * C).movedim(-1, 1)  # frames stacked as channels
        grids = torch.meshgrid(
            *[torch.linspace(0, 1, n, device=x.device, dtype=x.dtype) for n in space], indexing="ij"
        )
        h = torch.cat([h, torch.stack(grids).expand(B, *([-1] * (len(space) + 1)))], 1)
        h = self.lift(h)
        for i, (sc, pw) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = sc(h) + pw(h)
            if i < len(self.spectral) - 1:
                h = F.gelu(h)
        out = self.project(h).movedim(1, -1)  # [B, *space, T_out C]
        return out.reshape(B, *space, cfg.out_timesteps, cfg.out_channels)
