"""BAMBOO: graph equivariant transformer (GET) + predicted charges + electrostatics (Gong et al., 2024/2025).

Energy (eV):  E = E_NN + E_coul(q) + E_χη(q)   [+ E_disp, added by the ASE calculator at MD time only]

- Atoms carry scalars h [N,F] and Cartesian vectors V [N,3,F]. A layer, per head (H heads × C channels):
      a_ij = SiLU(q_i · k_j) · f_c(r_ij)                      (no softmax: "linear" attention)
      s_ij = SiLU(W_rbf φ(r_ij))                              (φ: trainable exp-normal basis × cosine cutoff)
      m_i  = Σ_j v_j ⊙ s_ij a_ij                               (scalar message)
      M_i  = Σ_j (v_j ⊙ s_ij) ⊗ r̂_ij                          (vector message, no attention weight)
  first layer: Δh = W_o m, V = M; middle layers: [U1,U2,U3] = W_v V, [o1,o2,o3] = W_o m,
  Δh = ⟨U1,U2⟩ ⊙ o2 + o3, ΔV = U3 ⊙ o1 + M; last layer: Δh = ⟨U1,U2⟩ ⊙ o2 + o3. Residuals on h (and V).
  Vectors enter scalars only through dot products, so E is invariant under rotations and reflections.
- E_NN = Σ_i MLP_E(h_i) (scaled/shifted by the Potential like any model's ``node_energy``).
- Charges: q̃_i = c·tanh(MLP_q(h_i)/c), c = ``charge_bound``; q_i = q̃_i + (Q - Σ_j q̃_j)/N per graph, with Q the
  graph's total charge (``data.total_charge``, from ``atoms.info["charge"]``).
- E_coul: damped Coulomb over all pairs for isolated systems, Ewald for periodic boxes (the real-space part
  over the model's own edges, the reciprocal part on the predicted charges, by the k-vector sum or by
  particle-mesh Ewald, ``ewald_method``); see ``physics.coulomb``.
- E_χη = Σ_i χ_{Z_i}² q_i + η_{Z_i}² q_i² with learned per-element χ, η (the anchor computes them with MLPs of
  the element embedding, i.e. per-element constants as well).

Forces differ from the original in one respect: our forces are the full gradient -dE/dx, including the
dependence of the charges on positions, so energy is conserved exactly; BAMBOO holds charges fixed in the
Coulomb forces and penalises the difference (its "QEq force", available here as the ``qeq_forces`` output
and an optional training loss).

Outputs: node_energy [N] (E_NN), physics_node_energy [N] (E_coul + E_χη per atom, unscaled), charges [N] e,
electrostatic_energy [B] eV, dipole [B,3] e·Å (Σ q_i r_i about the origin; NaN for periodic graphs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from scifm.core.nn import MLP, CosineCutoff, get_activation, scatter_sum

from ..physics.charges import bounded_charges, dipole_moment, shift_to_total_charge
from ..physics.coulomb import RECIPROCAL_METHODS, coulomb_node_energy
from .base import MLIPModel
from .registry import register_model


class ExpNormalBasis(nn.Module):
    """φ_k(r) = f_c(r) exp(-β_k (e^{-α r} - μ_k)²), α = 5/r_c, μ_k from e^{-r_c} to 1,
    β_k = (2(1-e^{-r_c})/K)^-2;
    μ and β trainable (PhysNet/TorchMD-Net). r [E] Å -> [E, K]; every function vanishes smoothly at r_c."""

    def __init__(self, cutoff: float, n_rbf: int, trainable: bool = True):
        super().__init__()
        self.alpha = 5.0 / cutoff
        self.fcut = CosineCutoff(cutoff)
        start = math.exp(-cutoff)
        means = torch.linspace(start, 1.0, n_rbf)
        betas = torch.full((n_rbf,), (2.0 / n_rbf * (1.0 - start)) ** -2)
        if trainable:
            self.means, self.betas = nn.Parameter(means), nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = torch.exp(-self.alpha * r).unsqueeze(-1)
        return self.fcut(r).unsqueeze(-1) * torch.exp(-self.betas * (x - self.means) ** 2)


class GETLayer(nn.Module):
    """One graph-equivariant-transformer layer. kind: "first" | "middle" | "last".
    h [N,F], V [N,3,F] (None before the first layer) -> new h, V (None after the last layer)."""

    def __init__(self, n_features: int, n_heads: int, n_rbf: int, kind: str, activation: str):
        super().__init__()
        if n_features % n_heads:
            raise ValueError(f"n_features ({n_features}) must be a multiple of n_heads ({n_heads})")
        self.kind, self.f, self.h = kind, n_features, n_heads
        self.norm = nn.LayerNorm(n_features)
        self.qkv = nn.Linear(n_features, 3 * n_features)
        self.filter = nn.Linear(n_rbf, n_features, bias=False)
        self.act = get_activation(activation)
        n_out = {"first": 1, "middle": 3, "last": 2}[kind]
        self.out = nn.Linear(n_features, n_out * n_features)
        # bias-free channel mixing keeps the vectors equivariant
        self.vec = None if kind == "first" else nn.Linear(n_features, n_out * n_features, bias=False)
        for lin in (self.qkv, self.filter, self.out, self.vec):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def forward(self, h, V, edge_index, rbf, fcut, r_hat):
        j, i = edge_index[0], edge_index[1]
        n, heads, c = h.shape[0], self.h, self.f // self.h
        qq, kk, vv = self.qkv(self.norm(h)).view(n, 3, heads, c).unbind(dim=1)
        attn = self.act((qq[i] * kk[j]).sum(-1)) * fcut.unsqueeze(-1)  # [E,H]
        vs = vv[j] * self.act(self.filter(rbf)).view(-1, heads, c)  # [E,H,C]
        m = scatter_sum((vs * attn.unsqueeze(-1)).reshape(-1, self.f), i, dim=0, dim_size=n)
        M = scatter_sum(r_hat.unsqueeze(-1) * vs.reshape(-1, 1, self.f), i, dim=0, dim_size=n)  # [N,3,F]
        o = self.out(m)
        if self.kind == "first":
            return h + o, M
        if self.kind == "middle":
            u1, u2, u3 = torch.split(self.vec(V), self.f, dim=-1)
            o1, o2, o3 = torch.split(o, self.f, dim=-1)
            return h + (u1 * u2).sum(1) * o2 + o3, V + u3 * o1.unsqueeze(1) + M
        u1, u2 = torch.split(self.vec(V), self.f, dim=-1)
        o2, o3 = torch.split(o, self.f, dim=-1)
        return h + (u1 * u2).sum(1) * o2 + o3, None


@register_model("bamboo")
class BAMBOO(MLIPModel):
    """BAMBOO energy model. Paper defaults: 64 features, 16 heads, 3 layers, 32 radial functions, 5 Å cutoff,
    SiLU, readout MLPs 64→32→32→1, charge bound 2 e, damping r0 = 2.2 Å and β = 18.7.

    ``coulomb`` / ``electronegativity`` switch E_coul / E_χη off (charges are still predicted and output).
    ``ewald_accuracy``: relative accuracy of the Ewald sum of periodic systems (real-space cutoff =
    ``cutoff``).
    ``ewald_method``: reciprocal-space part of periodic systems: "ewald" (sum over k-vectors, O(N·K)), "pme"
    (smooth particle-mesh Ewald, O(N + M log M), same energy to ~1e-5 relative) or "auto" (PME for graphs
    of at least 200 atoms, Ewald below; a rule on the atom count, so it never switches during MD). Models
    saved before the option existed have no such key and get "auto".
    ``dispersion``: a DFT-D3 functional name (e.g. "b3lyp") that the ASE calculator adds at MD time as
    D3(BJ) (``dispersion_damping``); None when the training labels already contain dispersion (GFN2-xTB does).
    """

    #: the trainer turns on charge/dipole losses (and may turn on the QEq loss) for such models
    predicts_charges = True

    def __init__(
        self,
        cutoff: float = 5.0,
        elements: Sequence[int] = (1, 6, 7, 8),
        n_features: int = 64,
        n_heads: int = 16,
        n_layers: int = 3,
        n_rbf: int = 32,
        trainable_rbf: bool = True,
        activation: str = "silu",
        readout_hidden: Sequence[int] = (32, 32),
        charge_bound: float = 2.0,
        coulomb: bool = True,
        electronegativity: bool = True,
        damping_r0: float = 2.2,
        damping_beta: float = 18.7,
        ewald_accuracy: float = 1e-6,
        ewald_method: str = "auto",
        dispersion: str | None = None,
        dispersion_damping: str = "d3bj",
    ):
        super().__init__(cutoff, elements)
        self._store_config(
            cutoff=float(cutoff),
            elements=self.elements,
            n_features=n_features,
            n_heads=n_heads,
            n_layers=n_layers,
            n_rbf=n_rbf,
            trainable_rbf=trainable_rbf,
            activation=activation,
            readout_hidden=list(readout_hidden),
            charge_bound=charge_bound,
            coulomb=coulomb,
            electronegativity=electronegativity,
            damping_r0=damping_r0,
            damping_beta=damping_beta,
            ewald_accuracy=ewald_accuracy,
            ewald_method=ewald_method,
            dispersion=dispersion,
            dispersion_damping=dispersion_damping,
        )
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if ewald_method not in RECIPROCAL_METHODS:
            raise ValueError(f"ewald_method must be one of {RECIPROCAL_METHODS}, got {ewald_method!r}")
        self.n_features = int(n_features)
        self.charge_bound = float(charge_bound)
        self.coulomb, self.electronegativity = bool(coulomb), bool(electronegativity)
        self.damping = (float(damping_r0), float(damping_beta))
        self.ewald_accuracy = float(ewald_accuracy)
        self.ewald_method = str(ewald_method)
        self.embedding = nn.Embedding(self.num_species, self.n_features)
        self.rbf = ExpNormalBasis(self.cutoff, n_rbf, trainable=trainable_rbf)
        self.fcut = CosineCutoff(self.cutoff)
        # one layer: scalars only (no vector channel is ever read)
        kinds = ["first"] if n_layers == 1 else ["first", *["middle"] * (n_layers - 2), "last"]
        self.layers = nn.ModuleList(GETLayer(self.n_features, n_heads, n_rbf, k, activation) for k in kinds)
        hidden = [int(x) for x in readout_hidden]
        self.energy_mlp = MLP(self.n_features, 1, hidden=hidden, activation=activation)
        self.charge_mlp = MLP(self.n_features, 1, hidden=hidden, activation=activation)
        # per-element electronegativity χ (eV/e) and hardness η (eV/e²), used squared (E_χη convex in q)
        self.chi = nn.Parameter(torch.full((self.num_species,), 0.1))
        self.eta = nn.Parameter(torch.full((self.num_species,), 1.0))
        #: set by the trainer when the QEq-force loss is on; adds ``qeq_forces`` [N,3] to the outputs
        self.qeq_forces = False

    @classmethod
    def tiny_config(cls) -> dict:
        # Coulomb and E_χη couple every atom to every other one (through the pair sum and the charge shift),
        # which the conformance suite's locality tests (cutoff smoothness, far-apart fragments) rule out by
        # design; the long-range terms have their own invariance tests in tests/mlip/test_bamboo.py.
        return {
            "cutoff": 4.0,
            "elements": [1, 6, 8],
            "n_features": 8,
            "n_heads": 2,
            "n_layers": 3,
            "n_rbf": 6,
            "readout_hidden": [8],
            "coulomb": False,
            "electronegativity": False,
        }

    def forward(self, data) -> dict[str, torch.Tensor]:
        z, edge_index, edge_vec = data.z, data.edge_index, data.edge_vec
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros_like(z)
        n_graphs = int(getattr(data, "num_graphs", 1) or 1)
        r = torch.linalg.norm(edge_vec, dim=-1)
        r_hat = edge_vec / r.unsqueeze(-1)
        rbf, fcut = self.rbf(r), self.fcut(r)
        species = self.species(z)
        h, V = self.embedding(species), None
        for layer in self.layers:
            h, V = layer(h, V, edge_index, rbf, fcut, r_hat)
        out = {"node_energy": self.energy_mlp(h).squeeze(-1)}

        total_charge = getattr(data, "total_charge", None)
        if total_charge is None:
            total_charge = h.new_zeros(n_graphs)
        q = bounded_charges(self.charge_mlp(h).squeeze(-1), self.charge_bound)
        q = shift_to_total_charge(q, batch, total_charge, n_graphs)
        e_phys = h.new_zeros(z.shape[0])
        if self.coulomb:
            e_phys = e_phys + coulomb_node_energy(
                q,
                data,
                r_cut=self.cutoff,
                r0=self.damping[0],
                beta=self.damping[1],
                accuracy=self.ewald_accuracy,
                reciprocal=self.ewald_method,
            )
        if self.electronegativity:
            e_phys = e_phys + self.chi[species] ** 2 * q + self.eta[species] ** 2 * q * q
        out["physics_node_energy"] = e_phys
        out["electrostatic_energy"] = scatter_sum(e_phys, batch, dim=0, dim_size=n_graphs)
        out["charges"] = q
        dipole = dipole_moment(q, data.pos, batch, n_graphs)
        pbc = getattr(data, "pbc", None)
        if pbc is not None:
            periodic = pbc.reshape(-1, 3).any(dim=1).unsqueeze(-1)
            dipole = torch.where(periodic, torch.full_like(dipole, float("nan")), dipole)
        out["dipole"] = dipole
        if self.qeq_forces and (self.coulomb or self.electronegativity):
            out["qeq_forces"] = self._qeq_forces(out["electrostatic_energy"], q, data.pos)
        return out

    @staticmethod
    def _qeq_forces(e_el: torch.Tensor, q: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """F_qeq,i = -Σ_j ∂E_el/∂q_j · ∂q_j/∂x_i [N,3] (eV/Å): the part of the force that comes from the
        charges responding to the geometry. Zero when the charges equilibrate E_el (∂E_el/∂q_j equal for
        all j, since Σ_j ∂q_j/∂x_i = 0). Needs positions that require grad (the Potential's force pass)."""
        if not (pos.requires_grad and e_el.requires_grad and torch.is_grad_enabled()):
            return torch.zeros_like(pos)
        (g,) = torch.autograd.grad(e_el.sum(), q, create_graph=True)
        (f,) = torch.autograd.grad(q, pos, grad_outputs=g, create_graph=True, allow_unused=True)
        return torch.zeros_like(pos) if f is None else -f
