"""Ziegler-Biersack-Littmark (ZBL) universal nuclear repulsion, switched off at bonding distances.

    V(r)  = k_e Z_i Z_j / r * phi(r / a),   a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)
    phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x} + 0.02817 e^{-0.20162 x}
    E_ZBL = sum over pairs i<j of V(r_ij) f(r_ij / r_s),   r_s = s (covalent radius i + covalent radius j)

with f the polynomial envelope (p = 6; f = f' = f'' = 0 at r = r_s) and s = 0.75 by default, so the term
is a smooth prior that acts only when two atoms come closer than any bond (C≡C 1.20 Å, N≡N 1.10 Å, C≡O
1.13 Å and H-H 0.74 Å lie outside r_s = 1.14, 1.07, 1.07 and 0.47 Å): it keeps a network trained on
near-equilibrium data from collapsing atoms onto each other in relaxations and hot MD, and leaves bonds to
the network (on equilibrium-like data the prior is exactly zero, so training is unchanged by it).
(MACE switches at s = 1, where the prior reaches into double and aromatic bonds and the network has to
cancel it.)
Constants: Ziegler, Biersack & Littmark, *The Stopping and Range of Ions in Solids* (1985); covalent radii:
ASE's table (Cordero et al. 2008).
"""

from __future__ import annotations

import torch
from torch import nn

from scifm.core.nn import scatter_sum

from .coulomb import COULOMB_CONSTANT

ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
ZBL_LENGTH_A = 0.46850
ENVELOPE_P = 6


def zbl_pair_energy(zi: torch.Tensor, zj: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Unswitched ZBL energy (eV) of pairs with atomic numbers ``zi``, ``zj`` at distances ``r`` (Å)."""
    zi, zj = zi.to(r.dtype), zj.to(r.dtype)
    a = ZBL_LENGTH_A / (zi.pow(0.23) + zj.pow(0.23))
    x = r / a
    phi = sum(c * torch.exp(-d * x) for c, d in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS, strict=True))
    return COULOMB_CONSTANT * zi * zj / r * phi


def _envelope(x: torch.Tensor, p: float = ENVELOPE_P) -> torch.Tensor:
    xp = x.pow(p)
    f = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * xp + p * (p + 2.0) * xp * x - 0.5 * p * (p + 1.0) * xp * x * x
    return torch.where(x < 1.0, f, torch.zeros_like(f))


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies [N] (eV) from a graph's edges (each pair appears as i->j and j->i, and each
    direction gives half the pair energy to its centre atom)."""

    def __init__(self, scale: float = 0.75):
        super().__init__()
        from ase.data import covalent_radii

        if not 0.0 < scale <= 1.5:
            raise ValueError(f"ZBL switch scale must be in (0, 1.5], got {scale}")
        self.scale = float(scale)
        r = torch.as_tensor(covalent_radii, dtype=torch.float64)
        self.register_buffer("covalent_radii", r, persistent=False)  # a constant table, not a weight

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def forward(self, z: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor) -> torch.Tensor:
        j, i = edge_index[0], edge_index[1]  # row 0: neighbour, row 1: centre
        r = edge_vec.norm(dim=-1)
        r_cov = (self.scale * (self.covalent_radii[z[i]] + self.covalent_radii[z[j]])).to(r.dtype)
        inside = r < r_cov
        r_safe = torch.where(inside, r, r_cov)  # no division by tiny r on edges that do not contribute
        e = torch.where(inside, zbl_pair_energy(z[i], z[j], r_safe) * _envelope(r_safe / r_cov), 0.0 * r)
        return scatter_sum(0.5 * e, i, dim=0, dim_size=z.shape[0])
