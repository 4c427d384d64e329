"""NequIP: E(3)-equivariant interatomic potential (Batzner et al., Nat. Commun. 2022) on core e3nn blocks.

Features are e3nn irreps arrays. Per interaction (``scifm.core.nn.ConvGateBlock``):

    m_ij = TP_{w(r_ij)}(W x_j, Y(r̂_ij)),   x_i ← x_i + Gate(W' Σ_j m_ij / √avg_nn + SC(x_i, onehot(Z_i)))

Edges carry spherical harmonics Y_l, l ≤ l_max, and radial weights w = MLP(Bessel(r) · f_poly(r)) (a bias-free
MLP, so messages vanish smoothly at the cutoff). Hidden irreps: ``n_features`` channels of every l ≤ l_max
with parity (-1)^l (``0e + 1o + 2e + ...``). Readout: the scalar channels → per-atom energy. Energies are
E(3)-invariant (rotations and reflections).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scifm.core.nn import BesselBasis, PolynomialCutoff

from .base import MLIPModel
from .registry import register_model


@register_model("nequip")
class NequIP(MLIPModel):
    """NequIP energy model. Defaults close to the paper's: 32 channels, l_max 2, 4 interactions, 8 Bessel
    functions, polynomial cutoff p = 6, radial MLP 64×2, 5 Å. ``avg_num_neighbors`` normalises the sums."""

    def __init__(
        self,
        cutoff: float = 5.0,
        elements: Sequence[int] = (1, 6, 7, 8),
        n_features: int = 32,
        l_max: int = 2,
        n_interactions: int = 4,
        n_rbf: int = 8,
        trainable_rbf: bool = True,
        cutoff_p: int = 6,
        radial_hidden: Sequence[int] = (64, 64),
        avg_num_neighbors: float = 12.0,
    ):
        super().__init__(cutoff, elements)
        self._store_config(
            cutoff=float(cutoff),
            elements=self.elements,
            n_features=n_features,
            l_max=l_max,
            n_interactions=n_interactions,
            n_rbf=n_rbf,
            trainable_rbf=trainable_rbf,
            cutoff_p=cutoff_p,
            radial_hidden=list(radial_hidden),
            avg_num_neighbors=avg_num_neighbors,
        )
        from e3nn import o3

        from scifm.core.nn import ConvGateBlock, SphericalHarmonicEdgeAttrs

        if l_max < 0 or n_interactions < 1:
            raise ValueError(f"need l_max >= 0 and n_interactions >= 1, got {l_max}, {n_interactions}")
        f = int(n_features)
        self.irreps_attr = o3.Irreps(f"{self.num_species}x0e")
        self.sh = SphericalHarmonicEdgeAttrs(l_max)
        self.rbf = BesselBasis(self.cutoff, n_rbf, trainable=trainable_rbf)
        self.envelope = PolynomialCutoff(self.cutoff, cutoff_p)
        self.embed = o3.Linear(self.irreps_attr, o3.Irreps(f"{f}x0e"))
        target = o3.Irreps([(f, (ll, (-1) ** ll)) for ll in range(l_max + 1)])
        irreps = o3.Irreps(f"{f}x0e")
        blocks = []
        for _ in range(n_interactions):
            block = ConvGateBlock(
                irreps,
                self.sh.irreps_out,
                target,
                n_rbf,
                radial_hidden=list(radial_hidden),
                avg_num_neighbors=avg_num_neighbors,
                irreps_node_attr=self.irreps_attr,
            )
            blocks.append(block)
            irreps = block.irreps_out
        self.blocks = nn.ModuleList(blocks)
        half = max(f // 2, 1)
        self.readout = nn.Sequential(
            o3.Linear(irreps, o3.Irreps(f"{half}x0e")),
            nn.SiLU(),
            o3.Linear(o3.Irreps(f"{half}x0e"), o3.Irreps("1x0e")),
        )

    @classmethod
    def tiny_config(cls) -> dict:
        return {
            "cutoff": 4.0,
            "elements": [1, 6, 8],
            "n_features": 4,
            "l_max": 1,
            "n_interactions": 2,
            "n_rbf": 4,
            "radial_hidden": [8],
            "avg_num_neighbors": 4.0,
        }

    def forward(self, data) -> dict[str, torch.Tensor]:
        r = torch.linalg.norm(data.edge_vec, dim=-1)
        edge_attr = self.sh(data.edge_vec)
        edge_scalars = self.rbf(r) * self.envelope(r).unsqueeze(-1)
        onehot = nn.functional.one_hot(self.species(data.z), self.num_species).to(edge_scalars.dtype)
        x = self.embed(onehot)
        for block in self.blocks:
            x = block(x, edge_attr, edge_scalars, data.edge_index, onehot)
        return {"node_energy": self.readout(x).squeeze(-1)}
