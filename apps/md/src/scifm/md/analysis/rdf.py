"""Radial distribution functions of periodic frames.

g_ab(r) = V / (N_a N_b') · n_ab(r) / (4π r² dr) per frame, where n_ab(r) counts ordered pairs (i in a,
j in b, j ≠ i) with |r_ij| in [r, r+dr) and N_b' = N_b (a ≠ b) or N_a - 1 (a = b), so an ideal gas gives 1.
The bin shell volume is exact: 4π/3 (r₂³ - r₁³). Error bars: block average of the per-frame g(r) over frames.
Coordination number: n(r) = 4π ρ_b ∫₀^r g(s) s² ds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scifm.core.neighbors import neighbor_list

from .blocks import block_average


@dataclass(frozen=True)
class RDF:
    """r [K] Å (bin centres), g [K], g_sem [K], coordination [K] (running integral), pair label."""

    r: np.ndarray
    g: np.ndarray
    g_sem: np.ndarray
    coordination: np.ndarray
    pair: str


def rdf_frame(numbers, positions, cell, sel_a, sel_b, r_max: float, n_bins: int) -> np.ndarray:
    """g(r) [n_bins] of one periodic frame; sel_a/sel_b boolean masks [N] of the two atom sets."""
    i, j, S = neighbor_list(positions, r_max, cell, [True, True, True])
    keep = sel_a[i] & sel_b[j] & ~((i == j) & (S == 0).all(axis=1))
    d = positions[j[keep]] - positions[i[keep]] + S[keep] @ cell
    r = np.linalg.norm(d, axis=1)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts, _ = np.histogram(r, bins=edges)
    n_a, n_b = int(sel_a.sum()), int(sel_b.sum())
    n_b_other = n_b - 1 if np.array_equal(sel_a, sel_b) else n_b
    volume = abs(np.linalg.det(cell))
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return counts * volume / (n_a * max(n_b_other, 1) * shell)


def rdf(
    frames, a: str | int | None = None, b: str | int | None = None, r_max: float = 6.0, n_bins: int = 120
) -> RDF:
    """g_ab(r) averaged over periodic ``ase.Atoms`` frames. ``a``/``b``: element symbol or atomic number
    (None: all atoms). r_max must not exceed half the shortest box height (minimum-image limit is not
    needed with a full neighbour list, but beyond it the shells see their own periodic images)."""
    from ase.data import atomic_numbers

    def mask(numbers, s):
        if s is None:
            return np.ones(len(numbers), dtype=bool)
        z = atomic_numbers[s] if isinstance(s, str) else int(s)
        return numbers == z

    per_frame = []
    rho_b = []
    for atoms in frames:
        numbers = atoms.get_atomic_numbers()
        cell = np.asarray(atoms.get_cell(), dtype=np.float64)
        sa, sb = mask(numbers, a), mask(numbers, b)
        if not sa.any() or not sb.any():
            raise ValueError(f"no atoms of {a if not sa.any() else b} in the frame")
        per_frame.append(rdf_frame(numbers, atoms.get_positions(), cell, sa, sb, r_max, n_bins))
        rho_b.append((sb.sum() - (1 if np.array_equal(sa, sb) else 0)) / abs(np.linalg.det(cell)))
    g_frames = np.stack(per_frame)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    r = 0.5 * (edges[1:] + edges[:-1])
    g = g_frames.mean(axis=0)
    sem = (
        np.array([block_average(g_frames[:, k]).sem for k in range(n_bins)])
        if len(g_frames) > 1
        else np.full(n_bins, np.nan)
    )
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    coordination = np.cumsum(g * shell) * float(np.mean(rho_b))
    label = f"{a if a is not None else '*'}-{b if b is not None else '*'}"
    return RDF(r, g, sem, coordination, label)
