"""Smooth cutoff functions f(r) [E] -> [E]: f(0) = 1, f(r >= c) = 0, with vanishing derivatives at c."""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineCutoff(nn.Module):
    """Behler's 0.5 (cos(pi r / c) + 1) for r < c, else 0. Value and first derivative vanish at c."""

    def __init__(self, cutoff: float):
        super().__init__()
        if cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        self.cutoff = float(cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        f = 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0)
        return torch.where(r < self.cutoff, f, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


class PolynomialCutoff(nn.Module):
    """DimeNet/NequIP envelope with x = r / c:

        f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)   for x < 1, else 0.

    f(1) = f'(1) = f''(1) = 0, so energies built from it have continuous forces and force derivatives.
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        if cutoff <= 0 or p < 1:
            raise ValueError(f"PolynomialCutoff needs cutoff > 0 and p >= 1, got {cutoff}, {p}")
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        x = r / self.cutoff
        xp = torch.pow(x, p)
        f = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * xp + p * (p + 2.0) * xp * x - 0.5 * p * (p + 1.0) * xp * x * x
        return torch.where(x < 1.0, f, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, p={self.p}"
