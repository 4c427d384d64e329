"""A transferable internal-coordinate flow: one model for many peptides, zero-shot on new sequences.

The single-system IC flow (`icflow.py`) has one conditioner per coupling sized for one molecule. Here a
molecule becomes a sequence of *tokens*, one per atom in Z-matrix placement order (`build_zmatrix`), each
carrying up to three internal coordinates (bond b, angle a, torsion t; the first three atoms carry fewer).
Couplings transform a subset of the (token, coordinate) entries with rational-quadratic splines whose
parameters come from a transformer over all tokens of the molecule, so the same weights apply to any
peptide:

* token features: Prose atom class, residue type and index, the digit of the Amber name (HB2 vs HB3: the
  two prochiral hydrogens of a CH2 share a class but sit on opposite sides), the classes of the three
  reference atoms j, k, l of its Z-matrix row, the torsion kind (proper, or relative to a sibling) and the
  row kind, then a coordinate-free context transformer over the molecule (run once per batch); every
  attention carries a learned per-head bias of the bond-graph distance between the two atoms;
* standardisation from the force field, not from data, so it transfers: bond b ~ (b - r0) / sqrt(kT / k_b)
  and angle a ~ (a - theta0) / sqrt(kT / k_theta) with r0, k_b, theta0, k_theta the molecule's own
  harmonic terms (OpenMM `HarmonicBondForce` / `HarmonicAngleForce`, E = k/2 (r - r0)^2); base N(0, 1) for
  bonds and angles (splines on [-B, B], identity tails), uniform on [-pi, pi] for torsions;
* couplings in cycles of four: torsions of one token half | torsions of the other half | bonds and angles
  of one half | of the other half; the first cycle splits tokens by parity, later cycles by fixed random
  bits (`mask_seed`).

A model is bound to one molecule (`bind(topology, system, temperature_K)`) to sample and evaluate
Cartesian densities exactly like `ICFlow` (uniform rotation, centroid ~ N(0, I/N), Jacobian of the
Z-matrix; `com_correction="gaussian"` makes SNIS/SMC weights exact).

Training is maximum likelihood on MD frames (`ICTransferTask`), optionally plus the reverse KL to the
Boltzmann distribution of the training molecules (`ReverseKL`, OpenMM energies of the flow's own draws).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scifm.core.errors import ConfigError, DataError
from scifm.prose.icflow import (
    build_zmatrix,
    cartesian_from_ic,
    cartesian_log_jacobian,
    dihedral,
    ic_from_cartesian,
    place_rigidly,
    rigid_log_prob,
    spline_with_tails,
)
from scifm.prose.tarflow import sample_in_batches, strict_from_dict

__all__ = [
    "BoundICTransfer",
    "ICTransferConfig",
    "ICTransferFlow",
    "ICTransferTask",
    "ReverseKL",
    "TokenDataset",
    "collate_tokens",
    "ic_to_tokens",
    "molecule_graph",
    "tokens_to_ic",
]

MODEL_NAME = "prose-ictransfer"
ROW_KINDS = 4  # rows 0, 1, 2 and full rows
GRAPH_KEYS = ("mean", "std", "present", "circ", "tokens", "dist")
_TORSION_COLUMN = torch.tensor([False, False, True])  # per-token components: bond, angle, torsion


@dataclass
class ICTransferConfig:
    std_nm: float = 0.1  # Cartesian scale (nm per standardised unit), as in ProseConfig
    d_model: int = 128
    n_heads: int = 4
    n_couplings: int = 12  # multiple of 4
    layers_per_coupling: int = 1
    context_layers: int = 2  # coordinate-free transformer over the tokens, run once per batch
    n_bins: int = 8
    tail_bound: float = 5.0
    max_distance: int = 8  # bond-graph distances are clipped here
    sibling_std: float = 0.25  # rad: scale of torsions relative to a sibling (see molecule_graph)
    # proper torsions whose bonded-energy barrier exceeds this many kT on both sides (ring-internal,
    # aromatic, amide, guanidinium) are treated as unimodal, like siblings; 0 keeps them all circular
    stiff_torsion_kT: float = 10.0
    mask_seed: int = 0
    atom_vocab: int = 64
    residue_vocab: int = 24
    max_residues: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ICTransferConfig:
        # model files written before stiff torsions existed treated every proper torsion as circular
        return strict_from_dict(cls, {"stiff_torsion_kT": 0.0} | d, "ictransfer")

    def graph_options(self) -> dict:
        """The `molecule_graph` keywords this model was trained with."""
        return dict(sibling_std=self.sibling_std, stiff_torsion_kT=self.stiff_torsion_kT)


# ------------------------------------------------------------------------------------ molecule graph
def _harmonic_terms(system) -> tuple[dict, dict]:
    """{(i, j): (r0 nm, k kJ/mol/nm^2)} and {(i, j, k): (theta0 rad, k kJ/mol/rad^2)} of a System."""
    import openmm as mm
    import openmm.unit as u

    bonds, angles = {}, {}
    for f in system.getForces():
        if isinstance(f, mm.HarmonicBondForce):
            for n in range(f.getNumBonds()):
                i, j, r0, k = f.getBondParameters(n)
                val = (r0.value_in_unit(u.nanometer), k.value_in_unit(u.kilojoule_per_mole / u.nanometer**2))
                bonds[(i, j)] = bonds[(j, i)] = val
        elif isinstance(f, mm.HarmonicAngleForce):
            for n in range(f.getNumAngles()):
                i, j, k, t0, kt = f.getAngleParameters(n)
                val = (t0.value_in_unit(u.radian), kt.value_in_unit(u.kilojoule_per_mole / u.radian**2))
                angles[(i, j, k)] = angles[(k, j, i)] = val
    return bonds, angles


def _graph_distances(n: int, bonds) -> torch.Tensor:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in bonds:
        adj[a].append(b)
        adj[b].append(a)
    d = torch.full((n, n), n, dtype=torch.long)
    for s in range(n):
        d[s, s] = 0
        q = deque([s])
        while q:
            v = q.popleft()
            for w in adj[v]:
                if d[s, w] == n:
                    d[s, w] = d[s, v] + 1
                    q.append(w)
    return d


def _name_digit(name: str) -> int:
    return int(name[-1]) if name and name[-1].isdigit() else 0


def molecule_graph(
    topology,
    system,
    temperature_K: float,
    std_nm: float,
    positions,
    sibling_std: float = ICTransferConfig.sibling_std,
    stiff_torsion_kT: float = 0.0,
) -> dict:
    """Everything the flow needs about one molecule, in token (placement) order.

    Bonds and angles: mean and std from the force field's harmonic terms. Torsions relative to a sibling
    (i-j-k-l with l also bonded to j: the place of a substituent next to another, unimodal, its sign set
    by chirality or by the prochiral name) are standardised too, around their value in the energy-minimised
    `positions` (nm) with std `sibling_std`. Proper torsions that are stiff (`stiff_torsions`: a
    bonded-energy barrier of at least `stiff_torsion_kT` kT on both sides, as for ring-internal, aromatic,
    amide and guanidinium torsions; 0 turns this off) are standardised the same way (token kind 3); the
    other proper torsions (backbone, side-chain and rotor torsions) stay on the circle ("circ", base
    uniform).

    Returns {"zmatrix": rows, "mean"/"std" [N, 3] (standardised length units / radians; circular entries
    0 / 1), "present" and "circ" [N, 3] bool, "tokens" [N, 9] long, "dist" [N, N] long}. Raises
    ConfigError when a bond or angle of the Z-matrix has no harmonic term in `system`.
    """
    from scifm.prose.encoding import encode_topology
    from scifm.prose.peptides import kT_kJ_per_mol

    atoms = list(topology.atoms())
    n = len(atoms)
    bond_list = [(b[0].index, b[1].index) for b in topology.bonds()]
    elements = [a.element.symbol if a.element is not None else "X" for a in atoms]
    zm = build_zmatrix(n, bond_list, elements)
    enc = {k: torch.as_tensor(v) for k, v in encode_topology(topology).items()}
    kT = kT_kJ_per_mol(temperature_K)
    hb, ha = _harmonic_terms(system)
    mean = torch.zeros(n, 3, dtype=torch.float64)
    std = torch.ones(n, 3, dtype=torch.float64)
    present = torch.zeros(n, 3, dtype=torch.bool)
    circ = torch.zeros(n, 3, dtype=torch.bool)
    x_min = torch.as_tensor(_minimised(system, positions), dtype=torch.float64)
    proper = [r for r, (i, j, k, l) in enumerate(zm) if l >= 0 and not _is_sibling(j, l, bond_list)]
    stiff = set()
    if stiff_torsion_kT > 0:
        stiff = stiff_torsions(system, zm, x_min, proper, temperature_K, stiff_torsion_kT)
    tokens = torch.zeros(n, 9, dtype=torch.long)
    for r, (i, j, k, l) in enumerate(zm):
        if j >= 0:
            if (i, j) not in hb:
                names = f"{atoms[i].name}-{atoms[j].name}"
                raise ConfigError(f"no harmonic bond term for atoms {i}-{j} ({names})")
            r0, kb = hb[(i, j)]
            mean[r, 0], std[r, 0], present[r, 0] = r0 / std_nm, math.sqrt(kT / kb) / std_nm, True
        if k >= 0:
            if (i, j, k) not in ha:
                names = "-".join(atoms[a].name for a in (i, j, k))
                raise ConfigError(f"no harmonic angle term for atoms {i}-{j}-{k} ({names})")
            t0, kt = ha[(i, j, k)]
            mean[r, 1], std[r, 1], present[r, 1] = t0, math.sqrt(kT / kt), True
        sibling = l >= 0 and _is_sibling(j, l, bond_list)
        if l >= 0:
            present[r, 2] = True
            if sibling or r in stiff:
                mean[r, 2] = dihedral(*(x_min[a] for a in (i, j, k, l)))
                std[r, 2] = sibling_std
            else:
                circ[r, 2] = True
        tokens[r] = torch.tensor(
            [
                enc["atom_type"][i],
                enc["residue_type"][i],
                enc["residue_index"][i],
                _name_digit(atoms[i].name),
                enc["atom_type"][j] if j >= 0 else 0,
                enc["atom_type"][k] if k >= 0 else 0,
                enc["atom_type"][l] if l >= 0 else 0,
                (2 if sibling else 3 if r in stiff else 1) if l >= 0 else 0,
                min(r, 3),
            ]
        )
    order = torch.tensor([row[0] for row in zm])
    dist = _graph_distances(n, bond_list)[order][:, order]
    return dict(
        zmatrix=zm, mean=mean.float(), std=std.float(), present=present, circ=circ, tokens=tokens, dist=dist
    )


def _is_sibling(j: int, l: int, bond_list) -> bool:
    return any(b in ((j, l), (l, j)) for b in bond_list)


_BONDED_FORCES = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "CMAPTorsionForce")


def stiff_torsions(system, zmatrix, x_min, rows, temperature_K: float, threshold_kT: float) -> set[int]:
    """The torsion rows among `rows` that are stiff at the structure x_min [N, 3] (nm).

    Each row's torsion is turned by delta in 5 degree steps up to 100 degrees either way with every other
    internal coordinate fixed, and the bonded energy (bonds, angles, torsions, CMAP: no non-bonded terms,
    so a crowded rotor is not mistaken for a stiff one) is evaluated. Rings close through their bonds and
    angles, planar groups through their two-fold torsion terms; a 3-fold rotor (ethane: about 5 kT) or a
    backbone torsion stays far below a threshold of ~10 kT. A row is stiff when the energy rises by at least
    `threshold_kT` kT on both sides.

    The curvature at delta = 0 is no guide to the width: with every other coordinate fixed a ring torsion
    looks ~5x narrower than it is (Trp ring torsions in 1 ns of MD: std 0.11-0.13 rad against 0.02-0.03
    from the curvature), so `molecule_graph` gives stiff torsions the sibling scale instead.
    """
    import openmm as mm

    from scifm.prose.energy import OpenMMEnergy

    if not rows:
        return set()
    bonded = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    for f in reversed(range(bonded.getNumForces())):
        if type(bonded.getForce(f)).__name__ not in _BONDED_FORCES:
            bonded.removeForce(f)
    energy = OpenMMEnergy(bonded, temperature_K, platform="Reference")  # U/kT
    steps = torch.arange(1, 21, dtype=torch.float64) * math.radians(5.0)
    deltas = torch.cat([torch.zeros(1, dtype=torch.float64), steps, -steps])
    ic0 = ic_from_cartesian(torch.as_tensor(x_min, dtype=torch.float64)[None], zmatrix)[0]
    out = set()
    for r in rows:
        ic = ic0.repeat(len(deltas), 1)
        ic[:, 3 * r - 4] += deltas  # the torsion of row r >= 3 (icflow layout)
        e = energy(cartesian_from_ic(ic, zmatrix).numpy())[0]
        e = e - e[0]
        n = len(steps)
        if min(e[1 : 1 + n].max(), e[1 + n :].max()) >= threshold_kT:
            out.add(r)
    energy.close()
    return out


def _minimised(system, positions) -> np.ndarray:
    """Positions (nm) after a local energy minimisation (OpenMM Reference platform)."""
    import openmm as mm
    import openmm.unit as u

    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (system.getNumParticles(), 3):
        raise ConfigError(f"positions {pos.shape} do not match the system's {system.getNumParticles()} atoms")
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * u.nanometer)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 0)
    out = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    del ctx
    return np.asarray(out)


def ic_to_tokens(ic: torch.Tensor) -> torch.Tensor:
    """ic [B, 3N - 6] (`icflow` layout) -> per-token values [B, N, 3] (zeros where absent)."""
    B, D = ic.shape
    n = (D + 6) // 3
    v = ic.new_zeros(B, n, 3)
    v[:, 1, 0] = ic[:, 0]
    v[:, 2, 0], v[:, 2, 1] = ic[:, 1], ic[:, 2]
    v[:, 3:] = ic[:, 3:].view(B, n - 3, 3)
    return v


def tokens_to_ic(v: torch.Tensor) -> torch.Tensor:
    """Inverse of `ic_to_tokens` for one molecule (v [B, N, 3])."""
    B = v.shape[0]
    return torch.cat([v[:, 1, :1], v[:, 2, :2], v[:, 3:].reshape(B, -1)], -1)


# ---------------------------------------------------------------------------------------- the model
class _TokenEmbedding(nn.Module):
    def __init__(self, cfg: ICTransferConfig):
        super().__init__()
        d = cfg.d_model
        torsion_kinds = 4 if cfg.stiff_torsion_kT > 0 else 3  # none, proper, sibling (, stiff)
        self.tables = nn.ModuleList(
            [
                nn.Embedding(cfg.atom_vocab, d),  # atom class
                nn.Embedding(cfg.residue_vocab, d),
                nn.Embedding(cfg.max_residues + 1, d),
                nn.Embedding(10, d),  # digit of the name
                nn.Embedding(cfg.atom_vocab, d),  # class of j
                nn.Embedding(cfg.atom_vocab, d),  # of k
                nn.Embedding(cfg.atom_vocab, d),  # of l
                nn.Embedding(torsion_kinds, d),
                nn.Embedding(ROW_KINDS, d),
            ]
        )
        self.limits = [cfg.atom_vocab, cfg.residue_vocab, cfg.max_residues + 1, 10] + [cfg.atom_vocab] * 3
        self.limits += [torsion_kinds, ROW_KINDS]
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = torch.minimum(tokens, torch.tensor(self.limits, device=tokens.device) - 1)
        h = sum(table(t[..., c]) for c, table in enumerate(self.tables))
        return self.mlp(h)


class _Block(nn.Module):
    """Pre-norm transformer layer with an additive attention bias [B, H, N, N] (plain modules, so eval and
    no-grad use the same kernels as training)."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.h = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, N, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, N, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, d))
        return x + self.mlp(self.ln2(x))


class _Coupling(nn.Module):
    """Transform the entries of `sel` (a [N_max, 3] pattern) given all other present entries."""

    def __init__(self, cfg: ICTransferConfig, sel: torch.Tensor):
        super().__init__()
        d, self.K, self.H = cfg.d_model, cfg.n_bins, cfg.n_heads
        self.bound = float(cfg.tail_bound)
        self.register_buffer("sel", sel, persistent=False)
        self.inp = nn.Linear(10, d)
        self.dist_bias = nn.Linear(cfg.max_distance + 1, cfg.n_heads, bias=False)  # on one-hot distances
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads) for _ in range(cfg.layers_per_coupling))
        self.head = nn.Linear(d, 3 * (3 * self.K + 1))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def mask(self, present: torch.Tensor) -> torch.Tensor:
        return present & self.sel[: present.shape[1]]

    def forward(self, u, h0, dist_onehot, graph, inverse: bool = False):
        present = graph["present"]
        B, N, _ = u.shape
        m = self.mask(present)
        c = present & ~m
        cf, mf = c.to(u.dtype), m.to(u.dtype)
        circ = graph["circ"]
        ut, ct = u[..., 2:], circ[..., 2:]
        feats = torch.cat(
            [
                u[..., :2] * cf[..., :2],
                torch.where(ct, torch.cos(ut), ut) * cf[..., 2:],
                torch.where(ct, torch.sin(ut), torch.zeros_like(ut)) * cf[..., 2:],
                cf,
                mf,
            ],
            -1,
        )
        h = h0 + self.inp(feats)
        bias = _attention_bias(self.dist_bias, dist_onehot, graph).to(h.dtype)
        for blk in self.blocks:
            h = blk(h, bias)
        p = self.head(h).view(B, N, 3, 3 * self.K + 1)
        w, hh, d = p[..., : self.K], p[..., self.K : 2 * self.K], p[..., 2 * self.K :]
        y, ld = spline_with_tails(u, w, hh, d, circ, self.bound, inverse)
        out = torch.where(m, y, u)
        return out, torch.where(m, ld, torch.zeros_like(ld)).sum((-1, -2))


def _attention_bias(linear: nn.Linear, dist_onehot: torch.Tensor, graph: dict) -> torch.Tensor:
    """Per-head additive attention bias [B, H, N, N] from one-hot graph distances; keys that are padding
    (graph["real"] False, only in padded batches) get -inf."""
    bias = linear(dist_onehot).permute(0, 3, 1, 2)
    real = graph.get("real")
    return bias if real is None else bias.masked_fill(~real[:, None, None, :], float("-inf"))


def _wrap(a: torch.Tensor) -> torch.Tensor:
    """Angles to (-pi, pi]."""
    return torch.atan2(torch.sin(a), torch.cos(a))


def _patterns(cfg: ICTransferConfig, n_max: int = 512) -> list[torch.Tensor]:
    if cfg.n_couplings < 4 or cfg.n_couplings % 4:
        raise ConfigError(f"ictransfer: n_couplings must be a positive multiple of 4, got {cfg.n_couplings}")
    out = []
    r = torch.arange(n_max)
    for cycle in range(cfg.n_couplings // 4):
        if cycle == 0:
            bits = r % 2 == 0
        else:
            g = torch.Generator().manual_seed(cfg.mask_seed * 1000 + cycle)
            bits = torch.randint(0, 2, (n_max,), generator=g).bool()
        for comps, half in (((2,), bits), ((2,), ~bits), ((0, 1), bits), ((0, 1), ~bits)):
            sel = torch.zeros(n_max, 3, dtype=torch.bool)
            for c in comps:
                sel[:, c] = half
            out.append(sel)
    return out


class ICTransferFlow(nn.Module):
    """Transferable spline flow over per-atom internal coordinates (see the module docstring)."""

    def __init__(self, config: ICTransferConfig | dict | None = None, **kwargs):
        super().__init__()
        if isinstance(config, dict):
            config = ICTransferConfig.from_dict(config)
        cfg = config or ICTransferConfig(**kwargs)
        if cfg.d_model % cfg.n_heads:
            raise ConfigError(f"ictransfer: d_model {cfg.d_model} not divisible by n_heads {cfg.n_heads}")
        self.config = cfg
        self.embed = _TokenEmbedding(cfg)
        self.context = nn.ModuleList(_Block(cfg.d_model, cfg.n_heads) for _ in range(cfg.context_layers))
        if cfg.context_layers:
            self.context_bias = nn.Linear(cfg.max_distance + 1, cfg.n_heads, bias=False)
        self.couplings = nn.ModuleList(_Coupling(cfg, sel) for sel in _patterns(cfg))

    def _context(self, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings [B, N, d] and one-hot clipped graph distances [B, N, N, max_distance + 1]."""
        h = self.embed(graph["tokens"])
        d = graph["dist"].clamp_max(self.config.max_distance)
        oh = F.one_hot(d, self.config.max_distance + 1).to(h.dtype)
        if len(self.context):
            bias = _attention_bias(self.context_bias, oh, graph)
            for blk in self.context:
                h = blk(h, bias)
        return h, oh

    @staticmethod
    def _base_logp(z, present, circ, base_scale: float = 1.0):
        s = float(base_scale)
        gauss = -0.5 * (z / s) ** 2 - 0.5 * math.log(2 * math.pi) - math.log(s)
        lp = torch.where(circ, -math.log(2 * math.pi), gauss)
        return (lp * present.to(z.dtype)).sum((-1, -2))

    def forward_tokens(self, v: torch.Tensor, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token ic v [B, N, 3] -> base variables z [B, N, 3] and log|det dz/dv| [B] over the present
        entries (graph tensors batched [B, ...]; absent entries are zero in z and ignored)."""
        present, circ = graph["present"], graph["circ"]
        diff = v - graph["mean"]
        diff = torch.where(_TORSION_COLUMN.to(v.device), _wrap(diff), diff)  # sibling torsions: circular diff
        u = torch.where(circ, v, diff / graph["std"]) * present.to(v.dtype)
        ld = -(torch.log(graph["std"]) * (present & ~circ).to(v.dtype)).sum((-1, -2))
        h0, oh = self._context(graph)
        for c in self.couplings:
            u, l = c(u, h0, oh, graph)
            ld = ld + l
        return u, ld

    def inverse_tokens(self, z: torch.Tensor, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of `forward_tokens`: (v, log|det dv/dz|)."""
        present, circ = graph["present"], graph["circ"]
        h0, oh = self._context(graph)
        u, ld = z * present.to(z.dtype), z.new_zeros(z.shape[0])
        for c in reversed(self.couplings):
            u, l = c(u, h0, oh, graph, inverse=True)
            ld = ld + l
        y = u * graph["std"] + graph["mean"]
        y = torch.where(_TORSION_COLUMN.to(z.device), _wrap(y), y)
        v = torch.where(circ, u, y) * present.to(u.dtype)
        return v, ld + (torch.log(graph["std"]) * (present & ~circ).to(u.dtype)).sum((-1, -2))

    def log_prob_tokens(self, v: torch.Tensor, graph: dict, base_scale: float = 1.0) -> torch.Tensor:
        """log q_ic [B] of per-token internal coordinates v [B, N, 3] (graph tensors batched [B, ...]);
        `base_scale`: std of the Gaussian base entries (see `sample_tokens`)."""
        z, ld = self.forward_tokens(v, graph)
        return self._base_logp(z, graph["present"], graph["circ"], base_scale) + ld

    def sample_tokens(
        self, n: int, graph: dict, generator=None, base_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws of per-token ic [n, N, 3] and their log q_ic for one molecule (graph tensors [N, ...]).

        `base_scale` < 1 draws the Gaussian base entries (bonds, angles, unimodal torsions) from
        N(0, base_scale^2) instead of N(0, 1), a colder proposal; log q is that proposal's exact density,
        so SNIS/SMC weights stay exact. Circular torsions keep their uniform base."""
        if not base_scale > 0:
            raise ConfigError(f"ictransfer: base_scale must be > 0, got {base_scale}")
        g = {k: graph[k][None].expand(n, *graph[k].shape) for k in GRAPH_KEYS}
        dev, dt = g["mean"].device, g["mean"].dtype
        N = g["mean"].shape[1]
        gauss = torch.randn(n, N, 3, generator=generator, dtype=dt).to(dev) * base_scale
        unif = ((torch.rand(n, N, 3, generator=generator, dtype=dt) * 2 - 1) * math.pi).to(dev)
        z = torch.where(g["circ"], unif, gauss) * g["present"].to(dt)
        v, ld = self.inverse_tokens(z, g)
        return v, self._base_logp(z, g["present"], g["circ"], base_scale) - ld

    def bind(
        self, topology, system, temperature_K: float, positions, base_scale: float = 1.0
    ) -> BoundICTransfer:
        """This model on one molecule (positions: any reasonable structure, nm; it is minimised to place
        the sibling torsions): `sample` / `log_prob` on standardised Cartesian coordinates, with the
        Gaussian base entries at std `base_scale` (`sample_tokens`)."""
        cfg = self.config
        graph = molecule_graph(topology, system, temperature_K, cfg.std_nm, positions, **cfg.graph_options())
        return BoundICTransfer(self, graph, base_scale)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BoundICTransfer(nn.Module):
    """An `ICTransferFlow` fixed to one molecule, with the `ProseFlow`/`ICFlow` sampling interface."""

    def __init__(self, flow: ICTransferFlow, graph: dict, base_scale: float = 1.0):
        super().__init__()
        if not base_scale > 0:
            raise ConfigError(f"ictransfer: base_scale must be > 0, got {base_scale}")
        self.flow = flow
        self.base_scale = float(base_scale)
        self.zmatrix = graph["zmatrix"]
        for k in GRAPH_KEYS:
            self.register_buffer(k, graph[k].to(next(flow.parameters()).device), persistent=False)
        self.n_atoms = len(self.zmatrix)

    @property
    def config(self) -> ICTransferConfig:
        return self.flow.config

    def graph(self) -> dict:
        return {k: getattr(self, k) for k in GRAPH_KEYS}

    def log_prob(self, x: torch.Tensor, cond=None, perms=None, mask=None) -> torch.Tensor:
        """log q(x) [B] on standardised Cartesian x [B, N, 3] (rigid motions included)."""
        if x.shape[1] != self.n_atoms:
            raise DataError("ictransfer", f"expected {self.n_atoms} atoms, got {x.shape[1]}")
        x = x.to(self.mean.dtype)
        ic = ic_from_cartesian(x, self.zmatrix)
        B = x.shape[0]
        g = {k: v[None].expand(B, *v.shape) for k, v in self.graph().items()}
        lq = self.flow.log_prob_tokens(ic_to_tokens(ic), g, self.base_scale)
        return lq + rigid_log_prob(x, ic, self.zmatrix)

    def sample(self, n: int, cond=None, perms=None, batch_size: int = 1024, generator=None, progress=None):
        """n samples (x [n, N, 3], log q(x) [n]) in standardised Cartesian units."""

        def draw(b: int):
            with torch.no_grad():
                v, lq = self.flow.sample_tokens(b, self.graph(), generator, self.base_scale)
            ic = tokens_to_ic(v)
            return place_rigidly(cartesian_from_ic(ic, self.zmatrix), ic, lq, self.zmatrix, generator)

        return sample_in_batches(n, batch_size, draw, progress)

    def n_parameters(self) -> int:
        return self.flow.n_parameters()


# ----------------------------------------------------------------------------------------- training
class TokenDataset(torch.utils.data.Dataset):
    """Per-token internal coordinates of every frame of several systems, with each molecule's graph.

    Args:
        source: a `PeptideMDFile`; ranges: {system: (start, stop)}; std_nm: the length scale; stride;
        graph_options: `molecule_graph` keywords (`ICTransferConfig.graph_options()`).
    """

    def __init__(
        self, source, ranges: dict, std_nm: float, stride: int = 1, graph_options: dict | None = None
    ):
        from scifm.prose.data import centre
        from scifm.prose.peptides import topology_from_pdb

        self.std_nm = float(std_nm)
        self.systems: list[dict] = []
        index = []
        for s_i, (name, (lo, hi)) in enumerate(ranges.items()):
            sysm = source.system(name)
            pos = topology_from_pdb(sysm.attrs["topology_pdb"])[1]
            graph = molecule_graph(
                sysm.topology,
                sysm.create_system(),
                sysm.temperature_K,
                self.std_nm,
                pos,
                **(graph_options or {}),
            )
            x = torch.as_tensor(centre(source.coordinates(name, lo, hi, stride)) / self.std_nm)
            v = torch.cat([ic_to_tokens(ic_from_cartesian(xb, graph["zmatrix"])) for xb in x.split(4096)])
            self.systems.append(dict(name=name, v=v.float(), graph=graph))
            index += [(s_i, j) for j in range(v.shape[0])]
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, j = self.index[i]
        sysm = self.systems[s]
        return {"v": sysm["v"][j], **{k: sysm["graph"][k] for k in GRAPH_KEYS}}


def collate_tokens(items: list[dict], dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Pad to the largest molecule: v, mean, std [B, N, 3] (`dtype`); present [B, N, 3]; tokens [B, N, 9];
    dist [B, N, N]; real [B, N] (pads: std 1, nothing present, distance clipped to the maximum; pad keys
    are masked out of attention)."""
    n_max = max(it["v"].shape[0] for it in items)
    B = len(items)
    out = {
        "v": torch.zeros(B, n_max, 3, dtype=dtype),
        "mean": torch.zeros(B, n_max, 3, dtype=dtype),
        "std": torch.ones(B, n_max, 3, dtype=dtype),
        "present": torch.zeros(B, n_max, 3, dtype=torch.bool),
        "circ": torch.zeros(B, n_max, 3, dtype=torch.bool),
        "tokens": torch.zeros(B, n_max, 9, dtype=torch.long),
        "dist": torch.full((B, n_max, n_max), 10**6, dtype=torch.long),
        "real": torch.zeros(B, n_max, dtype=torch.bool),
    }
    for b, it in enumerate(items):
        n = it["v"].shape[0]
        for k in ("v", "mean", "std", "present", "circ", "tokens"):
            out[k][b, :n] = it[k]
        out["dist"][b, :n, :n] = it["dist"]
        out["real"][b, :n] = True
    return out


from scifm.core.train import Task  # noqa: E402  (after the model: Task pulls in lightning)


class ReverseKL:
    """The energy-based training term KL(q || p) over training molecules (Boltzmann-generator "KL" loss).

    For molecule m with energy u_m (kT) and Z-matrix Jacobian J, the density of the target over internal
    coordinates is p(ic) ~ exp(-u_m(x(ic))) J(ic), so per sample v ~ q (reparameterised through the
    flow's inverse) the term is  [log q_ic(v) + u_m(x(v)) - log J(ic(v))] / D_m,  D_m the molecule's present
    coordinates, averaged over `n_systems` molecules drawn at random per call and `n_samples` draws each.
    Its gradient reaches the weights through the sample (OpenMM forces via `TargetEnergy`) and through
    log q. Maximum likelihood covers the data's modes; this term penalises the proposal mass that lands
    where the target energy is high (side-chain clashes, strained rings), i.e. the large SNIS log-weights.

    Energies are taken relative to u_ref (median over a few data frames of that molecule) and softened
    above `cut_kT`: u' = cut + log(1 + u - cut), so a clashing draw cannot dominate a step; draws with a
    non-finite energy are left out of the mean (and counted).

    Args:
        molecules: dicts with "name", "graph" (`molecule_graph`), "energy" (a `TargetEnergy` on this
            model's standardised coordinates) and "u_ref" (kT).
    """

    def __init__(self, molecules: list[dict], n_systems: int = 8, n_samples: int = 16, cut_kT: float = 100.0):
        if not molecules:
            raise ConfigError("reverse KL: no training molecules")
        if n_systems < 1 or n_samples < 1 or not cut_kT > 0:
            raise ConfigError(
                f"reverse KL: systems per step, samples per system and the energy cut must be positive "
                f"(got {n_systems}, {n_samples}, {cut_kT})"
            )
        self.molecules = molecules
        self.n_systems = min(int(n_systems), len(molecules))
        self.n_samples = int(n_samples)
        self.cut_kT = float(cut_kT)

    @classmethod
    def from_dataset(cls, dataset: TokenDataset, source, platform: str = "Reference", n_ref: int = 64, **kw):
        """One molecule per system of a `TokenDataset` (its `source`, a `PeptideMDFile`, gives the OpenMM
        system and temperature); u_ref from up to `n_ref` evenly spaced frames of that system."""
        from scifm.prose.energy import OpenMMEnergy, TargetEnergy

        molecules = []
        for sd in dataset.systems:
            sysm = source.system(sd["name"])
            energy = TargetEnergy(
                OpenMMEnergy(sysm.create_system(), sysm.temperature_K, platform=platform), dataset.std_nm
            )
            v = sd["v"][:: max(1, len(sd["v"]) // n_ref)][:n_ref].double()
            x = cartesian_from_ic(tokens_to_ic(v), sd["graph"]["zmatrix"])
            u = energy(x)
            u = u[torch.isfinite(u)]
            if not len(u):
                raise DataError(sd["name"], "reverse KL: no finite energy among the system's data frames")
            energy.energy.n_evaluations = 0
            molecules.append(dict(name=sd["name"], graph=sd["graph"], energy=energy, u_ref=float(u.median())))
        return cls(molecules, **kw)

    @staticmethod
    def soften(d: torch.Tensor, cut: float) -> torch.Tensor:
        """d up to the cut, cut + log(1 + d - cut) above (continuous, slope 1 at the cut)."""
        return torch.where(d <= cut, d, cut + torch.log1p((d - cut).clamp_min(0.0)))

    def __call__(self, model: ICTransferFlow, generator=None) -> tuple[torch.Tensor, dict]:
        pick = torch.randperm(len(self.molecules), generator=generator)[: self.n_systems].tolist()
        mols = [self.molecules[i] for i in pick]
        M = self.n_samples
        items = [{"v": m["graph"]["mean"], **{k: m["graph"][k] for k in GRAPH_KEYS}} for m in mols]
        dt, dev = next(model.parameters()).dtype, next(model.parameters()).device
        g = collate_tokens([it for it in items for _ in range(M)], dtype=dt)
        g = {k: t.to(dev) for k, t in g.items()}
        shape = g["mean"].shape
        gauss = torch.randn(*shape, generator=generator, dtype=dt).to(dev)
        unif = ((torch.rand(*shape, generator=generator, dtype=dt) * 2 - 1) * math.pi).to(dev)
        z = torch.where(g["circ"], unif, gauss) * g["present"].to(dt)
        v, ld = model.inverse_tokens(z, g)
        lq = model._base_logp(z, g["present"], g["circ"]) - ld
        terms, n_bad, u_mean = [], 0, []
        for s, m in enumerate(mols):
            rows = slice(s * M, (s + 1) * M)
            n = m["graph"]["mean"].shape[0]
            ic = tokens_to_ic(v[rows, :n])
            zm = m["graph"]["zmatrix"]
            u = m["energy"](cartesian_from_ic(ic, zm)) - m["u_ref"]
            ok = torch.isfinite(u)
            n_bad += int((~ok).sum())
            u = self.soften(torch.where(ok, u, torch.zeros_like(u)), self.cut_kT)
            dims = m["graph"]["present"].sum().to(dt)
            t = (lq[rows] + u - cartesian_log_jacobian(ic, zm)) / dims
            terms.append(t[ok])
            u_mean.append(u[ok].detach())
        t = torch.cat(terms)
        loss = t.mean() if t.numel() else lq.sum() * 0.0
        logs = {"kl": loss.detach(), "kl_u": torch.cat(u_mean).mean() if t.numel() else 0.0, "kl_bad": n_bad}
        return loss, logs


class ICTransferTask(Task):
    """Maximum likelihood of per-token internal coordinates (NLL per present coordinate), plus
    `kl_weight` x `ReverseKL` in training steps when a `kl` term is given."""

    def __init__(self, *args, kl: ReverseKL | None = None, kl_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.kl = kl
        self.kl_weight = float(kl_weight)

    def loss(self, batch, stage):
        lp = self.model.log_prob_tokens(batch["v"], batch)
        dims = batch["present"].sum()
        loss = -lp.sum() / dims
        logs = {"nll": (-lp).mean().detach()}
        if stage == "train" and self.kl is not None and self.kl_weight > 0:
            kl, kl_logs = self.kl(self.model)
            loss = loss + self.kl_weight * kl
            logs.update(kl_logs)
        return loss, logs
