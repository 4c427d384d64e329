"""DPOT: Denoising Pre-training Operator Transformer (2-D), built from the anchor's layer description.

Input ``x [B, X, Y, T_in, C]`` (channels last, time second-to-last) -> next frames ``[B, X, Y, T_out,
C_out]``.

    per frame: [fields, x, y, t coordinates] -> Conv(k=p, stride=p) -> GELU -> 1x1 Conv  (patch embedding)
               + learnable positional embedding (1, D, H/p, W/p)
    time:      h = sum_t W_t (z_t * cos(tau_t gamma))            (temporal aggregation, "exp_mlp")
    blocks:    z = GN(x); z = z + AFNO(z); x = x + MLP(GN(z))     (Fourier attention blocks)
    head:      ConvTranspose(k=p, stride=p) -> GELU -> 1x1 -> GELU -> 1x1 to C_out * T_out

The parameter shapes follow the anchor (including the ``C*p + 3`` patch bottleneck and the unused dataset
classification head) so the Ti/S/M/L/H configs reproduce the published counts. Other resolutions: the
positional embedding is interpolated bilinearly to the new latent grid, the coordinate channels are
rebuilt for
the actual grid, and the AFNO weights do not depend on the grid; sizes that are not multiples of ``p`` are
padded (replicate) and cropped back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DPOTConfig:
    img_size: int = 128
    patch_size: int = 8
    in_channels: int = 4
    out_channels: int = 4
    in_timesteps: int = 10
    out_timesteps: int = 1
    embed_dim: int = 512
    depth: int = 4
    n_blocks: int = 4
    mlp_ratio: float = 1.0
    modes: int = 32
    out_layer_dim: int = 32
    n_cls: int = 12
    time_agg: str = "exp_mlp"
    # Not in the paper (defaults reproduce it): the width of the patch embedding's first conv (0: the paper's
    # out_channels * patch_size + 3, narrower than the C * patch_size**2 values of a patch) and a residual
    # head that predicts the change from the last input frame instead of the next frame itself.
    embed_mid: int = 0
    residual: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, DPOTConfig] = {
    "Ti": DPOTConfig(embed_dim=512, depth=4, n_blocks=4, mlp_ratio=1, out_layer_dim=32),
    "S": DPOTConfig(embed_dim=1024, depth=6, n_blocks=8, mlp_ratio=1, out_layer_dim=32),
    "M": DPOTConfig(embed_dim=1024, depth=12, n_blocks=8, mlp_ratio=4, out_layer_dim=32),
    "L": DPOTConfig(embed_dim=1536, depth=24, n_blocks=16, mlp_ratio=4, out_layer_dim=128),
    "H": DPOTConfig(embed_dim=2048, depth=27, n_blocks=8, mlp_ratio=4, out_layer_dim=128),
    # for tests: a few thousand parameters' worth of the same architecture
    "tiny": DPOTConfig(
        img_size=16,
        patch_size=4,
        in_channels=2,
        out_channels=2,
        in_timesteps=3,
        embed_dim=16,
        depth=2,
        n_blocks=2,
        mlp_ratio=1,
        modes=4,
        out_layer_dim=8,
        n_cls=2,
    ),
}
# The anchor's parameter counts (README / our arithmetic from the layer shapes).
ANCHOR_PARAMS = {"Ti": 7.53e6, "S": 30.80e6, "M": 122.13e6, "L": 509.02e6, "H": 1031.1e6}


def make_config(size: str, **overrides) -> DPOTConfig:
    if size not in CONFIGS:
        raise KeyError(f"unknown DPOT size {size!r}; choose one of {', '.join(CONFIGS)}")
    return DPOTConfig(**{**CONFIGS[size].to_dict(), **overrides})


class PatchEmbed(nn.Module):
    """``[N, C + 3, X, Y] -> [N, D, X/p, Y/p]`` through a strided conv of ``mid`` channels (default: the
    paper's narrow ``C*p + 3``)."""

    def __init__(self, in_ch: int, out_channels: int, patch: int, dim: int, mid: int = 0):
        super().__init__()
        mid = mid or out_channels * patch + 3
        self.proj = nn.Sequential(
            nn.Conv2d(in_ch, mid, patch, stride=patch), nn.GELU(), nn.Conv2d(mid, dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TimeAggregation(nn.Module):
    """``[N, T, D, H, W] -> [N, D, H, W]``: one D x D matrix per input frame, with a learnable cosine
    modulation ``cos(tau_t gamma)`` (``exp_mlp``) or without it (``mlp``)."""

    def __init__(self, dim: int, t: int, mode: str = "exp_mlp"):
        super().__init__()
        if mode not in ("exp_mlp", "mlp"):
            raise ValueError(f"unknown time aggregation {mode!r}")
        self.mode = mode
        self.w = nn.Parameter(torch.randn(t, dim, dim) / (t * math.sqrt(dim)))
        self.gamma = nn.Parameter(2.0 ** torch.linspace(-10, 10, dim)[None]) if mode == "exp_mlp" else None
        self.register_buffer("tau", torch.linspace(0, 1, t), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.gamma is not None:
            z = z * torch.cos(self.tau[:, None] * self.gamma)[None, :, :, None, None]
        return torch.einsum("ntdhw,tde->nehw", z, self.w)


class AFNO2D(nn.Module):
    """Block-diagonal complex 2-layer MLP on the lowest ``modes`` Fourier modes of ``[N, D, H, W]``.

    Returns the mixed field only (the caller adds the inner skip). Real and imaginary parts are kept as
    separate
    real tensors; GELU acts on each part separately."""

    def __init__(self, dim: int, n_blocks: int, modes: int):
        super().__init__()
        if dim % n_blocks:
            raise ValueError(f"embed_dim {dim} is not divisible by n_blocks {n_blocks}")
        b = dim // n_blocks
        self.n_blocks, self.block, self.modes = n_blocks, b, modes
        scale = 1.0 / (b * b)
        self.w1 = nn.Parameter(scale * torch.rand(2, n_blocks, b, b))
        self.b1 = nn.Parameter(scale * torch.rand(2, n_blocks, b))
        self.w2 = nn.Parameter(scale * torch.rand(2, n_blocks, b, b))
        self.b2 = nn.Parameter(scale * torch.rand(2, n_blocks, b))

    @staticmethod
    def _cmul(xr, xi, w, bias):
        """(xr + i xi) @ (w[0] + i w[1]) + bias, block-diagonal over heads; x ``[..., nb, b]``."""
        yr = torch.einsum("...ni,nio->...no", xr, w[0]) - torch.einsum("...ni,nio->...no", xi, w[1]) + bias[0]
        yi = torch.einsum("...ni,nio->...no", xi, w[0]) + torch.einsum("...ni,nio->...no", xr, w[1]) + bias[1]
        return yr, yi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, D, H, W = x.shape
        dtype = x.dtype
        xf = torch.fft.rfft2(x.float().permute(0, 2, 3, 1), dim=(1, 2), norm="ortho")  # [N, H, W//2+1, D]
        Wr = xf.shape[2]
        mh, mw = min(self.modes, H), min(self.modes, Wr)
        sub = xf[:, :mh, :mw].reshape(N, mh, mw, self.n_blocks, self.block)
        o1r, o1i = self._cmul(sub.real, sub.imag, self.w1, self.b1)
        o1r, o1i = F.gelu(o1r), F.gelu(o1i)
        o2r, o2i = self._cmul(o1r, o1i, self.w2, self.b2)
        out = torch.zeros_like(xf)
        out[:, :mh, :mw] = torch.complex(o2r, o2i).reshape(N, mh, mw, D)
        y = torch.fft.irfft2(out, s=(H, W), dim=(1, 2), norm="ortho")
        return y.permute(0, 3, 1, 2).to(dtype)


class Block(nn.Module):
    def __init__(self, dim: int, n_blocks: int, modes: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.GroupNorm(8, dim)
        self.filter = AFNO2D(dim, n_blocks, modes)
        self.norm2 = nn.GroupNorm(8, dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm1(x)
        z = z + self.filter(z)
        return x + self.mlp(self.norm2(z))


class DPOT(nn.Module):
    def __init__(self, config: DPOTConfig | None = None, **kwargs):
        super().__init__()
        cfg = config or DPOTConfig(**kwargs)
        self.config = cfg
        p, D = cfg.patch_size, cfg.embed_dim
        if cfg.img_size % p:
            raise ValueError(f"img_size {cfg.img_size} is not a multiple of patch_size {p}")
        if cfg.residual and cfg.out_channels > cfg.in_channels:
            raise ValueError("a residual head needs out_channels <= in_channels (it adds the last frame)")
        self.patch_embed = PatchEmbed(cfg.in_channels + 3, cfg.out_channels, p, D, cfg.embed_mid)
        g = cfg.img_size // p
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, D, g, g), std=0.02))
        self.time_agg_layer = TimeAggregation(D, cfg.in_timesteps, cfg.time_agg)
        self.blocks = nn.ModuleList(
            Block(D, cfg.n_blocks, cfg.modes, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.cls_head = nn.Sequential(
            nn.Linear(D, D), nn.GELU(), nn.Linear(D, D), nn.GELU(), nn.Linear(D, cfg.n_cls)
        )
        od = cfg.out_layer_dim
        self.out_layer = nn.Sequential(
            nn.ConvTranspose2d(D, od, p, stride=p),
            nn.GELU(),
            nn.Conv2d(od, od, 1),
            nn.GELU(),
            nn.Conv2d(od, cfg.out_channels * cfg.out_timesteps, 1),
        )

    def _pos(self, h: int, w: int) -> torch.Tensor:
        if self.pos_embed.shape[-2:] == (h, w):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(h, w), mode="bilinear", align_corners=False)

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, X, Y, T_in, C]`` -> (``[B, X, Y, T_out, C_out]``, dataset logits ``[B, n_cls]``)."""
        cfg = self.config
        B, X, Y, T, C = x.shape
        if T != cfg.in_timesteps or C != cfg.in_channels:
            raise ValueError(
                f"input has T={T}, C={C}; model expects T={cfg.in_timesteps}, C={cfg.in_channels}"
            )
        p = cfg.patch_size
        px, py = (-X) % p, (-Y) % p
        grid_x = torch.linspace(0, 1, X, device=x.device, dtype=x.dtype)
        grid_y = torch.linspace(0, 1, Y, device=x.device, dtype=x.dtype)
        grid_t = torch.linspace(0, 1, T, device=x.device, dtype=x.dtype)
        coords = torch.stack(
            torch.broadcast_tensors(grid_x[:, None, None], grid_y[None, :, None], grid_t[None, None, :]), -1
        )  # [X, Y, T, 3]
        h = torch.cat([x, coords.expand(B, -1, -1, -1, -1)], -1)  # [B, X, Y, T, C+3]
        h = h.permute(0, 3, 4, 1, 2).reshape(B * T, C + 3, X, Y)  # frames folded into the batch
        if px or py:
            h = F.pad(h, (0, py, 0, px), mode="replicate")
        h = self.patch_embed(h)
        h = h + self._pos(*h.shape[-2:])
        h = h.reshape(B, T, *h.shape[1:])
        h = self.time_agg_layer(h)  # [B, D, X/p, Y/p]
        for blk in self.blocks:
            h = blk(h)
        logits = self.cls_head(h.mean((-2, -1)))
        out = self.out_layer(h)[..., :X, :Y]  # [B, C_out T_out, X, Y]
        out = out.reshape(B, cfg.out_timesteps, cfg.out_channels, X, Y).permute(0, 3, 4, 1, 2)
        if cfg.residual:
            out = out + x[..., -1:, : cfg.out_channels]
        return out, logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_logits(x)[0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_config(size: str, **overrides) -> int:
    """Parameters of a config, built on the meta device (no memory even for the 1 B model)."""
    with torch.device("meta"):
        return count_parameters(DPOT(make_config(size, **overrides)))
