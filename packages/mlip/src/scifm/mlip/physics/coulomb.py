"""Electrostatics of point charges in torch, differentiable in charges, positions and cell.

Units: charges e, lengths Å, energies eV; ``COULOMB_CONSTANT`` k_e = e²/(4πε₀) = 14.3996 eV·Å.

Isolated systems (no periodic direction) — every pair, no cutoff, damped at short range (BAMBOO):

    E = k_e Σ_{i<j} q_i q_j / d(r_ij),   d(r) = r0 (1 + softplus_β((r - r0)/r0)),
    softplus_β(x) = ln(1 + e^{βx}) / β,

so 1/d → 1/r for r ≫ r0 and stays finite (1/r0) as r → 0. Defaults r0 = 2.2 Å, β = 18.7 (BAMBOO).

Periodic systems (all three directions) — Ewald summation with splitting parameter α (Å⁻¹):

    E = E_real + E_recip + E_self + E_background
    E_real  = ½ k_e Σ_i Σ'_{j,n} q_i q_j erfc(α r)/r            (pairs within r_cut, images included)
    E_recip = (2π k_e / V) Σ_{k≠0} exp(-k²/4α²)/k² |S(k)|²,      S(k) = Σ_j q_j e^{i k·r_j}
    E_self  = -k_e α/√π Σ_i q_i²
    E_bg    = -k_e π Q² / (2 V α²)                              (neutralising background, Q = Σ q)

With the short-range damping the real-space kernel becomes 1/d(r) - erf(αr)/r (the damping only changes
pairs closer than ~2 r0, well inside any sensible r_cut). Per-atom energies split every pair term half and
half (real space) or as ½ q_i φ_i (reciprocal), so they sum to the total.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from scifm.core.nn import scatter_sum

#: e²/(4πε₀) in eV·Å (= ase.units.Hartree * ase.units.Bohr)
COULOMB_CONSTANT = 14.399645478425668
_MAX_CHUNK = 4_000_000  # atoms × k-vectors per reciprocal-space chunk (bounds peak memory)


def softplus_beta(x: torch.Tensor, beta: float) -> torch.Tensor:
    """ln(1 + e^{βx})/β, evaluated stably for any x (smooth everywhere, unlike torch's thresholded one)."""
    return torch.clamp(x, min=0.0) + torch.log1p(torch.exp(-beta * x.abs())) / beta


def damped_inverse_distance(r: torch.Tensor, r0: float = 2.2, beta: float = 18.7) -> torch.Tensor:
    """1/d(r) with d(r) = r0 (1 + softplus_β((r - r0)/r0)) (Å⁻¹). r [...] Å -> same shape."""
    return 1.0 / (r0 * (1.0 + softplus_beta((r - r0) / r0, beta)))


def ewald_parameters(r_cut: float, accuracy: float = 1e-6) -> tuple[float, float]:
    """(α Å⁻¹, k_cut Å⁻¹) for a real-space cutoff and a target relative accuracy: with s = √(-ln accuracy),
    α = s / r_cut (erfc(α r_cut) ~ accuracy) and k_cut = 2 α s (exp(-k_cut²/4α²) = accuracy)."""
    if not 0 < accuracy < 1 or not r_cut > 0:
        raise ValueError(f"need r_cut > 0 and 0 < accuracy < 1, got {r_cut}, {accuracy}")
    s = math.sqrt(-math.log(accuracy))
    alpha = s / r_cut
    return alpha, 2.0 * alpha * s


def _half_space_kvectors(cell: torch.Tensor, k_cut: float) -> torch.Tensor:
    """Reciprocal vectors k = n·B (B = 2π cell⁻ᵀ) with 0 < |k| < k_cut, one of each ±k pair. cell [3,3]
    (rows = lattice vectors) -> [K,3], differentiable in the cell. The integer set is chosen on the detached
    cell, so that it does not change under the infinitesimal strains of a stress calculation."""
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)
    with torch.no_grad():
        lengths = torch.linalg.norm(cell.detach(), dim=1).double().cpu().numpy()
        nmax = np.ceil(k_cut * lengths / (2.0 * math.pi)).astype(int)
        axes = [np.arange(-m, m + 1) for m in nmax]
        n = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        half = (
            (n[:, 0] > 0)
            | ((n[:, 0] == 0) & (n[:, 1] > 0))
            | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
        )
        n = torch.as_tensor(n[half], dtype=cell.dtype, device=cell.device)
        knorm = torch.linalg.norm(n @ recip.detach(), dim=1)
        n = n[knorm < k_cut]
    return n @ recip


def reciprocal_node_energy(
    q: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor, alpha: float, k_cut: float
) -> torch.Tensor:
    """Per-atom reciprocal-space Ewald energy (eV) of one periodic system, ½ q_i φ_i^recip.
    q [N] e, pos [N,3] Å, cell [3,3] Å -> [N]."""
    k = _half_space_kvectors(cell, k_cut)
    volume = torch.linalg.det(cell).abs()
    out = q.new_zeros(q.shape[0])
    if k.shape[0] == 0:
        return out
    k2 = (k * k).sum(-1)
    # factor 2 of the half-space sum folded in: (2π/V)·2 = 4π/V
    coef = (4.0 * math.pi / volume) * torch.exp(-k2 / (4.0 * alpha * alpha)) / k2
    step = max(1, _MAX_CHUNK // max(1, q.shape[0]))
    for a in range(0, k.shape[0], step):
        phase = pos @ k[a : a + step].T  # [N, K]
        c, s = torch.cos(phase), torch.sin(phase)
        s_re, s_im = q @ c, q @ s  # structure factor S(k) [K]
        w = coef[a : a + step]
        # Σ_i q_i Re[e^{-ik·r_i} S(k)] = |S(k)|²
        out = out + q * (c @ (w * s_re) + s @ (w * s_im))
    return COULOMB_CONSTANT * out


def real_space_kernel(
    r: torch.Tensor, alpha: float, r_cut: float, damping: tuple[float, float] | None, smooth: bool
) -> torch.Tensor:
    """erfc(αr)/r, or 1/d(r) - erf(αr)/r with short-range damping (r0, β). With ``smooth`` the kernel is
    shifted so that value and slope vanish at r_cut (V(r) - V(rc) - (r - rc) V'(rc)): C¹ energies in MD,
    at a cost of order erfc(α r_cut) per pair. r [...] Å -> Å⁻¹."""

    def kernel(x):
        v = torch.special.erfc(alpha * x) / x
        if damping is not None:
            v = v + damped_inverse_distance(x, *damping) - 1.0 / x
        return v

    v = kernel(r)
    if smooth:
        rc = torch.tensor(float(r_cut), dtype=r.dtype, device=r.device, requires_grad=True)
        with torch.enable_grad():
            vc = kernel(rc)
            (dvc,) = torch.autograd.grad(vc, rc)
        v = v - vc.detach() - (r - r_cut) * dvc
    return v


def ewald_energy(
    q: torch.Tensor,
    pos: torch.Tensor,
    cell: torch.Tensor,
    alpha: float | None = None,
    accuracy: float = 1e-8,
    r_cut: float = 8.0,
) -> torch.Tensor:
    """Per-atom Ewald energies [N] (eV) of point charges in one fully periodic cell (no damping).

    q [N] e, pos [N,3] Å, cell [3,3] Å (rows = lattice vectors). With ``alpha`` None, α follows from
    ``r_cut`` and ``accuracy``; with ``alpha`` given, r_cut and k_cut follow from α and ``accuracy``.
    Differentiable in q, pos and cell (forces and stress by autograd). Real-space pairs come from the
    neighbour list (images included), so cells smaller than r_cut are fine.
    """
    from scifm.core.neighbors import neighbor_list

    if alpha is None:
        alpha, k_cut = ewald_parameters(r_cut, accuracy)
    else:
        s = math.sqrt(-math.log(accuracy))
        r_cut, k_cut = s / alpha, 2.0 * alpha * s
    i, j, shifts = neighbor_list(
        pos.detach().double().cpu().numpy(), r_cut, cell.detach().double().cpu().numpy(), [True] * 3
    )
    i, j = torch.as_tensor(i, device=pos.device), torch.as_tensor(j, device=pos.device)
    vec = pos[j] - pos[i] + torch.as_tensor(shifts, dtype=pos.dtype, device=pos.device) @ cell
    r = torch.linalg.norm(vec, dim=-1)
    pair = 0.5 * COULOMB_CONSTANT * q[i] * q[j] * real_space_kernel(r, alpha, r_cut, None, smooth=False)
    e = scatter_sum(pair, i, dim=0, dim_size=q.shape[0])
    return e + reciprocal_node_energy(q, pos, cell, alpha, k_cut) + _self_and_background(q, cell, alpha)


def _self_and_background(q: torch.Tensor, cell: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-atom self energy -k_e α q_i²/√π plus the background term -k_e π Q²/(2Vα²) shared equally."""
    volume = torch.linalg.det(cell).abs()
    total = q.sum()
    bg = -math.pi * total * total / (2.0 * volume * alpha * alpha) / q.shape[0]
    return COULOMB_CONSTANT * (-alpha / math.sqrt(math.pi) * q * q + bg)


def _intra_graph_pairs(
    batch: torch.Tensor, graphs: list[int], n_graphs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs i < j inside each listed graph (global atom indices) -> (i [P], j [P])."""
    counts = torch.bincount(batch, minlength=n_graphs)
    start = torch.cumsum(counts, 0) - counts
    ii, jj = [], []
    for b in graphs:
        n = int(counts[b])
        if n < 2:
            continue
        t = torch.triu_indices(n, n, 1, device=batch.device) + start[b]
        ii.append(t[0])
        jj.append(t[1])
    if not ii:
        empty = torch.zeros(0, dtype=torch.long, device=batch.device)
        return empty, empty
    return torch.cat(ii), torch.cat(jj)


def coulomb_node_energy(
    q: torch.Tensor,
    data,
    r_cut: float | None = None,
    r0: float = 2.2,
    beta: float = 18.7,
    accuracy: float = 1e-6,
    damping: bool = True,
) -> torch.Tensor:
    """Per-atom electrostatic energies [N] (eV) of a batch of graphs with charges q [N] (e).

    Uses ``data.pos`` [N,3], ``data.cell`` [B,3,3], ``data.pbc`` [B,3], ``data.batch``, ``data.num_graphs``,
    and for periodic graphs the edges ``data.edge_index``/``data.edge_vec`` as the real-space pairs: ``r_cut``
    must be their cutoff (Å); α and k_cut follow from it and ``accuracy``. Graphs without periodic
    directions: damped all-pairs sum; fully periodic graphs: Ewald; partly periodic graphs: ValueError.
    """
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    n_graphs = int(getattr(data, "num_graphs", 1) or 1)
    pbc = getattr(data, "pbc", None)
    pbc = torch.zeros(n_graphs, 3, dtype=torch.bool) if pbc is None else pbc.reshape(-1, 3).bool()
    periodic = pbc.all(dim=1)
    if bool((pbc.any(dim=1) & ~periodic).any()):
        raise ValueError("Coulomb energy of partly periodic systems (slabs, wires) is not supported")
    pos = data.pos
    damp = (r0, beta) if damping else None
    e = q.new_zeros(q.shape[0])
    isolated = [b for b in range(n_graphs) if not bool(periodic[b])]
    if isolated:
        i, j = _intra_graph_pairs(batch, isolated, n_graphs)
        if i.numel():
            r = torch.linalg.norm(pos[j] - pos[i], dim=-1)
            inv = damped_inverse_distance(r, r0, beta) if damping else 1.0 / r
            half = 0.5 * COULOMB_CONSTANT * q[i] * q[j] * inv
            e = e.index_add(0, i, half).index_add(0, j, half)
    if len(isolated) < n_graphs:
        if r_cut is None:
            raise ValueError(
                "periodic Coulomb needs r_cut (the cutoff of the edges used as real-space pairs)"
            )
        edge_index, edge_vec = data.edge_index, data.edge_vec
        alpha, k_cut = ewald_parameters(r_cut, accuracy)
        j, i = edge_index[0], edge_index[1]
        keep = periodic[batch[i]]
        j, i = j[keep], i[keep]
        r = torch.linalg.norm(edge_vec[keep], dim=-1)
        kern = real_space_kernel(r, alpha, r_cut, damp, smooth=True)
        e = e + scatter_sum(0.5 * COULOMB_CONSTANT * q[i] * q[j] * kern, i, dim=0, dim_size=q.shape[0])
        cell = data.cell.reshape(-1, 3, 3)
        for b in range(n_graphs):
            if not bool(periodic[b]):
                continue
            idx = torch.nonzero(batch == b).squeeze(-1)
            qb, cb = q[idx], cell[b]
            eb = reciprocal_node_energy(qb, pos[idx], cb, alpha, k_cut) + _self_and_background(qb, cb, alpha)
            e = e.index_add(0, idx, eb)
    return e
