"""SchNet: continuous-filter convolutions (Schütt et al., NeurIPS 2017 / J. Chem. Phys. 2018).

An interaction block updates the atom features x [N,F]:

    W_ij = Dense(ssp(Dense(rbf(r_ij)))) * f_cut(r_ij)          (filter-generating network, [E,F_filter])
    m_i  = Σ_j W_ij ⊙ (A x_j),    x_i ← x_i + Dense(ssp(Dense(m_i)))

with ssp(x) = softplus(x) - ln 2 (shifted softplus) and Gaussian radial functions. Energies depend on
distances only, so they are invariant under E(3). The cosine cutoff makes filters vanish smoothly at r_c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from scifm.core.nn import CosineCutoff, GaussianBasis, scatter_sum

from .base import MLIPModel
from .registry import register_model


class ShiftedSoftplus(nn.Module):
    """softplus(x) - ln 2: zero at 0, smooth, SchNet's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


class SchNetInteraction(nn.Module):
    """x [N,F], edges, rbf [E,K], fcut [E] -> increment [N,F]."""

    def __init__(self, n_features: int, n_filters: int, n_rbf: int):
        super().__init__()
        self.filter_net = nn.Sequential(
            nn.Linear(n_rbf, n_filters), ShiftedSoftplus(), nn.Linear(n_filters, n_filters)
        )
        self.in2f = nn.Linear(n_features, n_filters, bias=False)
        self.f2out = nn.Sequential(
            nn.Linear(n_filters, n_features), ShiftedSoftplus(), nn.Linear(n_features, n_features)
        )

    def forward(self, x, edge_index, rbf, fcut):
        j, i = edge_index[0], edge_index[1]
        w = self.filter_net(rbf) * fcut.unsqueeze(-1)
        m = scatter_sum(self.in2f(x)[j] * w, i, dim=0, dim_size=x.shape[0])
        return self.f2out(m)


@register_model("schnet")
class SchNet(MLIPModel):
    """SchNet energy model. Paper-like defaults: 128 features and filters, 3 interactions, 50 Gaussians on
    [0, cutoff], 5 Å cutoff. Outputs ``{"node_energy": [N]}`` (eV)."""

    def __init__(
        self,
        cutoff: float = 5.0,
        elements: Sequence[int] = (1, 6, 7, 8),
        n_features: int = 128,
        n_filters: int = 128,
        n_interactions: int = 3,
        n_rbf: int = 50,
    ):
        super().__init__(cutoff, elements)
        self._store_config(
            cutoff=float(cutoff),
            elements=self.elements,
            n_features=n_features,
            n_filters=n_filters,
            n_interactions=n_interactions,
            n_rbf=n_rbf,
        )
        self.embedding = nn.Embedding(self.num_species, n_features)
        self.rbf = GaussianBasis(0.0, self.cutoff, n_rbf)
        self.fcut = CosineCutoff(self.cutoff)
        self.interactions = nn.ModuleList(
            SchNetInteraction(n_features, n_filters, n_rbf) for _ in range(n_interactions)
        )
        self.readout = nn.Sequential(
            nn.Linear(n_features, max(n_features // 2, 1)),
            ShiftedSoftplus(),
            nn.Linear(max(n_features // 2, 1), 1),
        )

    @classmethod
    def tiny_config(cls) -> dict:
        return {
            "cutoff": 4.0,
            "elements": [1, 6, 8],
            "n_features": 8,
            "n_filters": 8,
            "n_interactions": 2,
            "n_rbf": 8,
        }

    def forward(self, data) -> dict[str, torch.Tensor]:
        r = torch.linalg.norm(data.edge_vec, dim=-1)
        rbf, fcut = self.rbf(r), self.fcut(r)
        x = self.embedding(self.species(data.z))
        for block in self.interactions:
            x = x + block(x, data.edge_index, rbf, fcut)
        return {"node_energy": self.readout(x).squeeze(-1)}
