"""Atomic partial charges predicted from node features: bounding, total-charge constraint, dipole.

Units: charges in e, positions in Å, dipoles in e·Å.
"""

from __future__ import annotations

import torch

from scifm.core.nn import scatter_sum


def bounded_charges(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """Soft bound |q| < ``bound``: c·tanh(raw / c). raw [N] -> [N] (e). Smooth, identity near 0."""
    return bound * torch.tanh(raw / bound)


def shift_to_total_charge(
    q: torch.Tensor, batch: torch.Tensor, total_charge: torch.Tensor, n_graphs: int
) -> torch.Tensor:
    """Uniform shift per graph so that Σ_i q_i = Q of that graph:

        q_i ← q_i + (Q_b - Σ_{j in b} q_j) / N_b.

    q [N], batch [N] (graph of each atom), total_charge [B] (e) -> [N]. The shift keeps ∂(Σq)/∂x = 0, so the
    total charge is exactly conserved along any trajectory.
    """
    n = scatter_sum(torch.ones_like(q), batch, dim=0, dim_size=n_graphs).clamp(min=1)
    excess = total_charge.to(q.dtype).reshape(-1) - scatter_sum(q, batch, dim=0, dim_size=n_graphs)
    return q + (excess / n)[batch]


def dipole_moment(q: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """μ_b = Σ_{i in b} q_i r_i [B,3] (e·Å), about the origin of the coordinates (the convention of our xTB
    labels). Origin-independent only for neutral graphs; meaningless for periodic ones (callers mask them)."""
    return scatter_sum(q.unsqueeze(-1) * pos, batch, dim=0, dim_size=n_graphs)
