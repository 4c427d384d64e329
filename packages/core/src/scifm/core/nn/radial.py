"""Radial bases: expand an interatomic distance r [E] (Å) into features [E, n_rbf]."""

from __future__ import annotations

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    """Sine (spherical Bessel j0) basis of DimeNet/NequIP: sqrt(2/c) sin(n pi r / c) / r, n = 1..n_rbf.

    Every function vanishes at r = c. With ``trainable=True`` the frequencies n*pi/c are learned
    (NequIP's default). r [E] -> [E, n_rbf]; r must be > 0 (edges never join an atom to itself at
    zero distance).
    """

    def __init__(self, cutoff: float, n_rbf: int = 8, trainable: bool = False):
        super().__init__()
        if cutoff <= 0 or n_rbf < 1:
            raise ValueError(f"BesselBasis needs cutoff > 0 and n_rbf >= 1, got {cutoff}, {n_rbf}")
        self.cutoff = float(cutoff)
        self.n_rbf = int(n_rbf)
        freqs = torch.arange(1, n_rbf + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        if trainable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * r) / r

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, n_rbf={self.n_rbf}, trainable={isinstance(self.freqs, nn.Parameter)}"


class GaussianBasis(nn.Module):
    """Gaussians exp(-(r - mu_k)^2 / (2 w^2)) with centres mu_k evenly spaced on [start, stop] (SchNet).

    The width w defaults to the spacing of the centres. r [E] -> [E, n_rbf]. These functions do not
    vanish at the cutoff: multiply by a cutoff function to get a smooth model.
    """

    def __init__(
        self,
        start: float = 0.0,
        stop: float = 5.0,
        n_rbf: int = 50,
        width: float | None = None,
        trainable: bool = False,
    ):
        super().__init__()
        if n_rbf < 2 or stop <= start:
            raise ValueError(
                f"GaussianBasis needs n_rbf >= 2 and stop > start, got {n_rbf}, [{start}, {stop}]"
            )
        self.n_rbf = int(n_rbf)
        centres = torch.linspace(start, stop, n_rbf, dtype=torch.get_default_dtype())
        w = float(width) if width is not None else float(centres[1] - centres[0])
        widths = torch.full((n_rbf,), w, dtype=torch.get_default_dtype())
        if trainable:
            self.centres = nn.Parameter(centres)
            self.widths = nn.Parameter(widths)
        else:
            self.register_buffer("centres", centres)
            self.register_buffer("widths", widths)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        d = r.unsqueeze(-1) - self.centres
        return torch.exp(-0.5 * (d / self.widths) ** 2)
