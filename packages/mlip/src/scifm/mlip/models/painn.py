"""PaiNN: polarizable atom interaction neural network (Schütt, Unke, Gastegger, ICML 2021).

Each atom carries scalar features s [N, F] and vector features v [N, 3, F]. A layer is a message block

    (ds, dvv, dvs)_ij = phi(s_j) * W(r_ij),            W = Linear(rbf(r_ij)) * f_cut(r_ij)
    s_i += sum_j ds_ij,   v_i += sum_j (dvv_ij v_j + dvs_ij r_hat_ij)

followed by an update block

    (a_vv, a_sv, a_ss) = MLP([s_i, ||V v_i||]),   v_i += a_vv U v_i,   s_i += a_sv <U v_i, V v_i> + a_ss.

The per-atom energy is an MLP of the final scalars. Energies are invariant under E(3) (vectors only
enter through inner products and norms).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scifm.core.nn import MLP, BesselBasis, CosineCutoff, scatter_sum

from .base import MLIPModel
from .registry import register_model


class PaiNNMessage(nn.Module):
    """Message block: [N,F], [N,3,F], edges -> increments ds [N,F], dv [N,3,F]."""

    def __init__(self, n_features: int, n_rbf: int, activation: str):
        super().__init__()
        self.n_features = n_features
        self.phi = MLP(n_features, 3 * n_features, hidden=[n_features], activation=activation)
        self.filter = nn.Linear(n_rbf, 3 * n_features)

    def forward(self, s, v, edge_index, rbf, fcut, r_hat):
        j, i = edge_index[0], edge_index[1]
        x = self.phi(s)[j] * self.filter(rbf) * fcut.unsqueeze(-1)
        ds, dvv, dvs = torch.split(x, self.n_features, dim=-1)
        dv = v[j] * dvv.unsqueeze(1) + dvs.unsqueeze(1) * r_hat.unsqueeze(-1)
        n = s.shape[0]
        return scatter_sum(ds, i, dim=0, dim_size=n), scatter_sum(dv, i, dim=0, dim_size=n)


class PaiNNUpdate(nn.Module):
    """Update block: mixes scalar and vector channels of each atom. [N,F], [N,3,F] -> ds, dv."""

    def __init__(self, n_features: int, activation: str, epsilon: float):
        super().__init__()
        self.n_features = n_features
        self.epsilon = epsilon
        self.U = nn.Linear(n_features, n_features, bias=False)
        self.V = nn.Linear(n_features, n_features, bias=False)
        self.mlp = MLP(2 * n_features, 3 * n_features, hidden=[n_features], activation=activation)

    def forward(self, s, v):
        uv, vv = self.U(v), self.V(v)
        # epsilon keeps the norm differentiable at v = 0 (the first layer starts with zero vectors)
        vnorm = torch.sqrt((vv * vv).sum(dim=1) + self.epsilon)
        a = self.mlp(torch.cat([s, vnorm], dim=-1))
        a_vv, a_sv, a_ss = torch.split(a, self.n_features, dim=-1)
        dv = a_vv.unsqueeze(1) * uv
        ds = a_sv * (uv * vv).sum(dim=1) + a_ss
        return ds, dv


@register_model("painn")
class PaiNN(MLIPModel):
    """PaiNN energy model. Paper defaults: 128 features, 3 layers, 20 radial functions, 5 Å cutoff.

    ``shared_interactions`` ties the weights of all layers. Outputs ``{"node_energy": [N]}`` (eV).
    """

    def __init__(
        self,
        cutoff: float = 5.0,
        elements: Sequence[int] = (1, 6, 7, 8),
        n_features: int = 128,
        n_layers: int = 3,
        n_rbf: int = 20,
        trainable_rbf: bool = False,
        shared_interactions: bool = False,
        activation: str = "silu",
        readout_hidden: int | None = None,
        epsilon: float = 1e-8,
    ):
        super().__init__(cutoff, elements)
        self._store_config(
            cutoff=float(cutoff),
            elements=self.elements,
            n_features=n_features,
            n_layers=n_layers,
            n_rbf=n_rbf,
            trainable_rbf=trainable_rbf,
            shared_interactions=shared_interactions,
            activation=activation,
            readout_hidden=readout_hidden,
            epsilon=epsilon,
        )
        self.n_features = int(n_features)
        self.n_layers = int(n_layers)
        self.embedding = nn.Embedding(self.num_species, self.n_features)
        self.rbf = BesselBasis(self.cutoff, n_rbf, trainable=trainable_rbf)
        self.fcut = CosineCutoff(self.cutoff)
        n_blocks = 1 if shared_interactions else self.n_layers
        self.messages = nn.ModuleList(
            PaiNNMessage(self.n_features, n_rbf, activation) for _ in range(n_blocks)
        )
        self.updates = nn.ModuleList(
            PaiNNUpdate(self.n_features, activation, epsilon) for _ in range(n_blocks)
        )
        hidden = readout_hidden if readout_hidden is not None else max(self.n_features // 2, 1)
        self.readout = MLP(self.n_features, 1, hidden=[hidden], activation=activation)

    @classmethod
    def tiny_config(cls) -> dict:
        return {"cutoff": 4.0, "elements": [1, 6, 8], "n_features": 8, "n_layers": 2, "n_rbf": 6}

    def forward(self, data) -> dict[str, torch.Tensor]:
        z, edge_index, edge_vec = data.z, data.edge_index, data.edge_vec
        r = torch.linalg.norm(edge_vec, dim=-1)
        r_hat = edge_vec / r.unsqueeze(-1)
        rbf, fcut = self.rbf(r), self.fcut(r)
        s = self.embedding(self.species(z))
        v = s.new_zeros(s.shape[0], 3, self.n_features)
        for k in range(self.n_layers):
            b = 0 if len(self.messages) == 1 else k
            ds, dv = self.messages[b](s, v, edge_index, rbf, fcut, r_hat)
            s, v = s + ds, v + dv
            ds, dv = self.updates[b](s, v)
            s, v = s + ds, v + dv
        return {"node_energy": self.readout(s).squeeze(-1)}
