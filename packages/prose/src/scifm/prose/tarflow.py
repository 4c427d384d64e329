"""Prose: a TarFlow-style autoregressive affine flow over per-atom tokens (anchor §1).

Each atom is one token carrying its 3-D coordinate (standardised: CoM removed, divided by one scalar
`std_nm`). `num_blocks` meta-blocks; block k reorders the atoms with its own chemistry-aware ordering,
runs a causal transformer conditioned on the atoms' (atom class, residue type, residue index, length)
and maps token i with an affine transform whose (a, b) come from tokens < i:

    z_i = (x_i - b_i(x_<i)) * exp(-a_i(x_<i)),   log|det| = -sum_i sum_d a_{i,d},   token 0: a = b = 0.

log q(x) = log N(z; 0, I) + sum over blocks of log|det|, exact; the inverse is exact too (token by token,
with a key/value cache). Layers follow the anchor's Prose layer: adaptive LayerNorm on the conditioning,
pre-LN attention with q/k LayerNorm and an MLP, a sigmoid gate (zero-init weight, bias -2), and a gated
SwiGLU transition; the conditioning of position i is concatenated with that of i+1 ("lookahead", since
position i predicts token i+1). The output projection has zero-initialised weights.

Padding: molecules of a batch are padded at the end of every ordering, so causal attention never lets a
real token see a pad; (a, b) and the prior are masked on pads. Shapes: x [B, N, 3], mask [B, N] (bool),
perms [B, K, N] (int64, pads appended after the real ordering), cond entries [B, N] (int64, 0 on pads).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from scifm.core.errors import ConfigError

__all__ = ["SIZES", "ProseConfig", "ProseFlow", "make_config", "standard_normal_logp"]


@dataclass
class ProseConfig:
    channels: int = 384
    num_blocks: int = 8
    layers_per_block: int = 8
    head_dim: int = 64
    mlp_ratio: int = 4
    atom_vocab: int = 128  # embedding table sizes as in the anchor (room for more classes)
    residue_vocab: int = 64
    max_positions: int = 512
    lookahead: bool = True
    std_nm: float = 0.35  # coordinate scale (nm); set from the training data

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ProseConfig:
        return strict_from_dict(cls, d, "prose")


def strict_from_dict(cls, d: dict, label: str):
    """A config dataclass from a dict, refusing unknown keys (a model.json from another version or model)."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"{label} model config: unknown keys {sorted(unknown)}")
    return cls(**d)


def sample_in_batches(n: int, batch_size: int, draw, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples from ``draw(b) -> (x [b, ...], log q [b])`` in batches of at most ``batch_size``;
    ``progress(b)`` after each batch."""
    xs, lps = [], []
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        x, lp = draw(b)
        xs.append(x)
        lps.append(lp)
        done += b
        if progress is not None:
            progress(b)
    return torch.cat(xs), torch.cat(lps)


# name -> (channels, blocks, layers per block, head dim). "paper" is the anchor's 288M-parameter Prose.
SIZES = {
    "tiny": (32, 2, 1, 16),
    "small": (64, 4, 2, 32),
    "base": (128, 4, 4, 32),
    "medium": (256, 8, 8, 64),
    "paper": (384, 8, 8, 64),
}


def make_config(size: str = "tiny", **overrides) -> ProseConfig:
    if size not in SIZES:
        raise ConfigError(f"unknown Prose size {size!r} (known: {sorted(SIZES)})")
    c, b, l, h = SIZES[size]
    cfg = dict(channels=c, num_blocks=b, layers_per_block=l, head_dim=h)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return ProseConfig.from_dict(cfg)


def sinusoidal(values: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """Fixed sin/cos features of integer or real `values` [...] -> [..., dim]."""
    half = dim // 2
    freq = torch.exp(-math.log(base) * torch.arange(half, device=values.device, dtype=torch.float64) / half)
    ang = values.to(torch.float64)[..., None] * freq
    out = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        out = F.pad(out, (0, 1))
    return out.to(torch.get_default_dtype())


def standard_normal_logp(z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; 0, I) summed over real atoms: z [B, N, 3], mask [B, N] -> [B]."""
    lp = -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)
    if mask is not None:
        lp = lp * mask[..., None].to(lp.dtype)
    return lp.sum(dim=(1, 2))


class ConditionEmbedder(nn.Module):
    """Per-atom conditioning: learned atom-class and residue-type tables, sinusoidal residue index and
    length, concatenated (4C) -> MLP -> C, zero on pads."""

    def __init__(self, cfg: ProseConfig):
        super().__init__()
        c = cfg.channels
        self.channels = c
        self.atom = nn.Embedding(cfg.atom_vocab, c)
        self.residue = nn.Embedding(cfg.residue_vocab, c)
        self.mlp = nn.Sequential(nn.Linear(4 * c, c), nn.GELU(), nn.Linear(c, c))

    def forward(self, cond: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        c = self.channels
        feats = torch.cat(
            [
                self.atom(cond["atom_type"]),
                self.residue(cond["residue_type"]),
                sinusoidal(cond["residue_index"], c, 1000.0).to(self.atom.weight.dtype),
                sinusoidal(cond["seq_len"], c, 1000.0).to(self.atom.weight.dtype),
            ],
            dim=-1,
        )
        return self.mlp(feats) * mask[..., None].to(feats.dtype)


class AdaLN(nn.Module):
    """LN(h) * sigmoid(W_g LN(c)) + W_b LN(c)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c, elementwise_affine=False)
        self.cond_norm = nn.LayerNorm(c)
        self.scale = nn.Linear(c, c)
        self.shift = nn.Linear(c, c, bias=False)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cn = self.cond_norm(c)
        return self.norm(h) * torch.sigmoid(self.scale(cn)) + self.shift(cn)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with LayerNorm on q and k; a key/value cache for one-token steps."""

    def __init__(self, c: int, head_dim: int):
        super().__init__()
        if c % head_dim:
            raise ConfigError(f"channels {c} not divisible by head_dim {head_dim}")
        self.heads, self.head_dim = c // head_dim, head_dim
        self.qkv = nn.Linear(c, 3 * c)
        self.q_norm = nn.LayerNorm(c)
        self.k_norm = nn.LayerNorm(c)
        self.out = nn.Linear(c, c)

    def forward(self, u: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = u.shape
        q, k, v = self.qkv(u).chunk(3, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)

        def heads(t):
            return t.view(B, T, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # one new token attends to every cached one (no pads at sampling time)
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, c: int, ratio: int):
        super().__init__()
        self.up = nn.Linear(c, 2 * ratio * c, bias=False)
        self.down = nn.Linear(ratio * c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * x)


class ProseLayer(nn.Module):
    """adaLN -> (attention + MLP, pre-LN) -> gated residual; adaLN -> SwiGLU -> gated residual."""

    def __init__(self, cfg: ProseConfig):
        super().__init__()
        c = cfg.channels
        self.ada1 = AdaLN(c)
        self.ln_attn = nn.LayerNorm(c)
        self.attn = CausalSelfAttention(c, cfg.head_dim)
        self.ln_mlp = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, cfg.mlp_ratio * c), nn.GELU(), nn.Linear(cfg.mlp_ratio * c, c))
        self.gate1 = nn.Linear(c, c)
        self.ada2 = AdaLN(c)
        self.transition = SwiGLU(c, cfg.mlp_ratio)
        self.gate2 = nn.Linear(c, c)
        for g in (self.gate1, self.gate2):  # adaLN-zero-like: residual branches start nearly closed
            nn.init.zeros_(g.weight)
            nn.init.constant_(g.bias, -2.0)

    def forward(self, h: torch.Tensor, c: torch.Tensor, m: torch.Tensor | None, cache: dict | None = None):
        u = self.ada1(h, c)
        u = u + self.attn(self.ln_attn(u), cache)
        u = u + self.mlp(self.ln_mlp(u))
        h = h + torch.sigmoid(self.gate1(c)) * u
        if m is not None:
            h = h * m
        h = h + torch.sigmoid(self.gate2(c)) * self.transition(self.ada2(h, c))
        if m is not None:
            h = h * m
        return h


class MetaBlock(nn.Module):
    """One autoregressive affine transform in its own atom ordering (inputs already permuted)."""

    def __init__(self, cfg: ProseConfig):
        super().__init__()
        c = cfg.channels
        self.w_in = nn.Linear(3, c)
        self.pe_scale = nn.Parameter(torch.tensor(0.01))
        self.register_buffer("pe", sinusoidal(torch.arange(cfg.max_positions), c, 10000.0), persistent=False)
        self.lookahead = cfg.lookahead
        self.cond_proj = nn.Sequential(
            nn.Linear((2 if cfg.lookahead else 1) * c, c), nn.GELU(), nn.Linear(c, c)
        )
        self.layers = nn.ModuleList(ProseLayer(cfg) for _ in range(cfg.layers_per_block))
        self.proj_out = nn.Linear(c, 6)
        nn.init.zeros_(self.proj_out.weight)

    def _cond(self, c: torch.Tensor) -> torch.Tensor:
        if self.lookahead:  # position i predicts token i+1: tell it which atom that is (zeros after the last)
            nxt = torch.cat([c[:, 1:], torch.zeros_like(c[:, :1])], dim=1)
            c = torch.cat([c, nxt], dim=-1)
        return self.cond_proj(c)

    def _embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        T = x.shape[1]
        if start + T > self.pe.shape[0]:
            raise ConfigError(f"molecule of {start + T} atoms exceeds max_positions {self.pe.shape[0]}")
        return self.w_in(x) + self.pe_scale * self.pe[start : start + T].to(x.dtype)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, 3] (permuted), c [B, N, C], mask [B, N] -> (z [B, N, 3], logdet [B])."""
        m = mask[..., None].to(x.dtype)
        cc = self._cond(c)
        h = self._embed(x, 0) * m
        for layer in self.layers:
            h = layer(h, cc, m)
        out = self.proj_out(h)
        out = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1) * m  # shift right by one token
        a, b = out.chunk(2, dim=-1)
        z = (x - b) * torch.exp(-a)
        return z, -a.sum(dim=(1, 2))

    def inverse(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token by token with a key/value cache: z [B, N, 3] -> (x [B, N, 3], log|dx/dz| [B]). No pads."""
        B, N, _ = z.shape
        cc = self._cond(c)
        caches = [dict() for _ in self.layers]
        xs = [z[:, :1]]
        logdet = torch.zeros(B, dtype=z.dtype, device=z.device)
        for i in range(N - 1):
            h = self._embed(xs[-1], i)
            ci = cc[:, i : i + 1]
            for layer, cache in zip(self.layers, caches, strict=True):
                h = layer(h, ci, None, cache)
            a, b = self.proj_out(h).chunk(2, dim=-1)
            xs.append(z[:, i + 1 : i + 2] * torch.exp(a) + b)
            logdet = logdet + a.sum(dim=(1, 2))
        return torch.cat(xs, dim=1), logdet


def _gather(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """t [B, N, D] reordered by perm [B, N]."""
    return torch.gather(t, 1, perm[..., None].expand(-1, -1, t.shape[-1]))


def _scatter(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Inverse of `_gather`: out[:, perm[j]] = t[:, j]."""
    return torch.zeros_like(t).scatter(1, perm[..., None].expand(-1, -1, t.shape[-1]), t)


class ProseFlow(nn.Module):
    """The Prose normalizing flow; coordinates in standardised units (nm / `config.std_nm`)."""

    def __init__(self, config: ProseConfig | dict | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = ProseConfig(**kwargs)
        elif isinstance(config, dict):
            config = ProseConfig.from_dict(config)
        self.config = config
        self.embed = ConditionEmbedder(config)
        self.blocks = nn.ModuleList(MetaBlock(config) for _ in range(config.num_blocks))

    def _perm(self, perms: torch.Tensor, k: int) -> torch.Tensor:
        return perms[:, k % perms.shape[1]]

    def forward(self, x, cond, perms, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, 3] -> (z [B, N, 3], log|dz/dx| [B]); z equals x on pads."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        c = self.embed(cond, mask)
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for k, block in enumerate(self.blocks):
            p = self._perm(perms, k)
            zp, ld = block(_gather(x, p), _gather(c, p), torch.gather(mask, 1, p))
            x = _scatter(zp, p)
            logdet = logdet + ld
        return x, logdet

    def log_prob(self, x, cond, perms, mask=None) -> torch.Tensor:
        """Exact log q(x) [B] (standardised units)."""
        z, logdet = self(x, cond, perms, mask)
        return standard_normal_logp(z, mask) + logdet

    def inverse(self, z, cond, perms) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, N, 3] -> (x, log|dx/dz| [B]) for unpadded molecules (cond [B|1, N], perms [B|1, K, N])."""
        B, N, _ = z.shape
        cond = {k: v.expand(B, N) for k, v in cond.items()}
        perms = perms.expand(B, -1, N)
        mask = torch.ones(B, N, dtype=torch.bool, device=z.device)
        c = self.embed(cond, mask)
        logdet = torch.zeros(B, dtype=z.dtype, device=z.device)
        for k in reversed(range(len(self.blocks))):
            p = self._perm(perms, k)
            xp, ld = self.blocks[k].inverse(_gather(z, p), _gather(c, p))
            z = _scatter(xp, p)
            logdet = logdet + ld
        return z, logdet

    @torch.no_grad()
    def sample(self, n: int, cond, perms, batch_size: int = 1024, generator=None, progress=None):
        """n samples of one molecule: (x [n, N, 3], log q(x) [n]) in standardised units."""
        N = next(iter(cond.values())).shape[-1]
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype

        def draw(b: int):
            z = torch.randn(b, N, 3, generator=generator, dtype=dtype, device="cpu").to(device)
            x, ld = self.inverse(z, cond, perms)
            return x, standard_normal_logp(z) - ld

        return sample_in_batches(n, batch_size, draw, progress)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
