"""PubChemQCR metrics: the paper's S2EF numbers plus OC20-style ones, and relaxation metrics.

S2EF (per snapshot, anchor §2 and §5):

* ``energy_mae_meV_per_atom``: mean over snapshots of |E_pred - E_ref| / N (the paper's energy metric);
* ``forces_rmse_meV_per_A``: per snapshot sqrt(mean over atoms of |F_pred - F_ref|^2) (squared vector
  norm), then the mean over snapshots (the paper's force metric, "per molecule then averaged");
* ``forces_mae_meV_per_A``: mean absolute error over all force components;
* ``forces_cosine``: mean over atoms of the cosine between predicted and reference force vectors;
* ``efwt``: fraction of snapshots with |dE| < 0.02 eV (total energy) and every |dF| component < 0.03 eV/Å.

Relaxation: heavy-atom RMSD after optimal (Kabsch) superposition, the bond graph of the relaxed geometry
against the reference minimum's, and the aggregate written to metrics.json. A relaxation *succeeds* when
the optimizer converged (fmax reached within the step limit) **and** the bond graph is the reference's: a
model that collapses atoms onto each other or breaks a bond has found a spurious minimum, not the molecule's.
"""

from __future__ import annotations

import numpy as np

EFWT_ENERGY_EV = 0.02
EFWT_FORCE_EV_PER_A = 0.03
RMSD_THRESHOLDS_A = (0.1, 0.3)
BOND_SCALE = 1.25  # bonded when d < 1.25 x (sum of covalent radii)


def bond_graph(numbers, positions, scale: float = BOND_SCALE) -> np.ndarray:
    """Boolean adjacency matrix: atoms i, j bonded when their distance is below ``scale`` times the sum of
    their covalent radii (ASE's table, Cordero et al.)."""
    from ase.data import covalent_radii

    pos = np.asarray(positions, dtype=float)
    r = covalent_radii[np.asarray(numbers)]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    adj = d < scale * (r[:, None] + r[None, :])
    np.fill_diagonal(adj, False)
    return adj


def same_bond_graph(numbers, positions, ref_positions, scale: float = BOND_SCALE) -> bool:
    """True when ``positions`` have exactly the bonds of ``ref_positions`` (same atom order)."""
    return bool(
        np.array_equal(bond_graph(numbers, positions, scale), bond_graph(numbers, ref_positions, scale))
    )


def s2ef_metrics(e_pred, e_ref, n_atoms, f_pred, f_ref) -> dict[str, float]:
    """e_* [F] eV (total), n_atoms [F], f_* [A,3] eV/Å with A = sum(n_atoms) -> metrics in meV units."""
    e_pred, e_ref = np.asarray(e_pred, np.float64), np.asarray(e_ref, np.float64)
    n_atoms = np.asarray(n_atoms, np.int64)
    f_pred, f_ref = (
        np.asarray(f_pred, np.float64).reshape(-1, 3),
        np.asarray(f_ref, np.float64).reshape(-1, 3),
    )
    if not (e_pred.shape == e_ref.shape == n_atoms.shape) or f_pred.shape != f_ref.shape:
        raise ValueError("prediction and reference shapes differ")
    if int(n_atoms.sum()) != len(f_ref):
        raise ValueError(f"forces have {len(f_ref)} rows but n_atoms sums to {int(n_atoms.sum())}")
    frame = np.repeat(np.arange(len(n_atoms)), n_atoms)
    de = e_pred - e_ref
    df = f_pred - f_ref
    sq = np.bincount(frame, weights=(df**2).sum(axis=1), minlength=len(n_atoms))  # sum |dF|^2 per frame
    rmse_per_frame = np.sqrt(sq / n_atoms)
    maxcomp = np.zeros(len(n_atoms))
    np.maximum.at(maxcomp, frame, np.abs(df).max(axis=1))
    norm = np.linalg.norm(f_pred, axis=1) * np.linalg.norm(f_ref, axis=1)
    cos = (f_pred * f_ref).sum(axis=1) / np.maximum(norm, 1e-12)
    return {
        "n_frames": int(len(e_ref)),
        "n_atoms": int(n_atoms.sum()),
        "energy_mae_meV_per_atom": float(1000 * np.mean(np.abs(de) / n_atoms)),
        "energy_mae_meV": float(1000 * np.mean(np.abs(de))),
        "forces_rmse_meV_per_A": float(1000 * rmse_per_frame.mean()),
        "forces_mae_meV_per_A": float(1000 * np.abs(df).mean()),
        "forces_cosine": float(cos.mean()),
        "efwt": float(np.mean((np.abs(de) < EFWT_ENERGY_EV) & (maxcomp < EFWT_FORCE_EV_PER_A))),
    }


def kabsch_rotation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The proper rotation R [3,3] minimising sum |R p_i - q_i|^2 for centred p, q [N,3] (no reflection)."""
    h = p.T @ q
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def kabsch_rmsd(p, q) -> float:
    """RMSD (Å) between p and q [N,3] after removing translation and the best proper rotation."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"need two [N,3] arrays of the same shape, got {p.shape} and {q.shape}")
    p0, q0 = p - p.mean(axis=0), q - q.mean(axis=0)
    r = kabsch_rotation(p0, q0)
    return float(np.sqrt(np.mean(np.sum((p0 @ r.T - q0) ** 2, axis=1))))


def heavy_atom_rmsd(numbers, p, q, min_heavy: int = 3) -> tuple[float, str]:
    """Kabsch RMSD over heavy atoms (Z > 1) -> (Å, "heavy"); molecules with fewer than ``min_heavy`` heavy
    atoms (water, methane: any superposition of 1-2 points is trivially exact) use all atoms -> (Å, "all")."""
    numbers = np.asarray(numbers)
    heavy = numbers > 1
    if heavy.sum() >= min_heavy:
        return kabsch_rmsd(np.asarray(p)[heavy], np.asarray(q)[heavy]), "heavy"
    return kabsch_rmsd(p, q), "all"


def _stat(values, fn):
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(fn(v)) if v else None


def _kept(r: dict) -> bool:
    return not r.get("error") and bool(r.get("bonds_kept", True))


def relaxation_summary(results: list[dict]) -> dict:
    """Aggregate per-molecule relaxation results.

    Each result: ``converged`` (bool), ``steps`` (int), ``seconds``, ``energy_error_meV_per_atom``
    (MLIP final energy - reference relaxed energy, per atom; None if failed), ``rmsd_A`` (None if failed),
    ``bonds_kept`` (bond graph equal to the reference minimum's; a result without it counts as kept),
    optional ``ref_energy_gap_meV_per_atom`` (reference method at the MLIP geometry - reference minimum),
    ``error`` (a string when the relaxation crashed). Fractions and the success rate use every molecule
    as the denominator (a failed relaxation counts as not converged and not under any threshold).
    ``success_rate`` = converged and bonds kept; ``converged_rate`` and ``bonds_kept_rate`` separately.
    """
    n = len(results)
    rmsd = [r.get("rmsd_A") for r in results]
    de = [r.get("energy_error_meV_per_atom") for r in results]
    out = {
        "n_molecules": n,
        "n_failed": int(sum(1 for r in results if r.get("error"))),
        "success_rate": (
            float(np.mean([bool(r.get("converged")) and _kept(r) for r in results])) if n else None
        ),
        "converged_rate": float(np.mean([bool(r.get("converged")) for r in results])) if n else None,
        "bonds_kept_rate": float(np.mean([_kept(r) for r in results])) if n else None,
        "energy_error_meV_per_atom_mae": _stat([None if x is None else abs(x) for x in de], np.mean),
        "energy_error_meV_per_atom_median": _stat(de, np.median),
        "rmsd_A_mean": _stat(rmsd, np.mean),
        "rmsd_A_median": _stat(rmsd, np.median),
        "steps_mean": _stat([r.get("steps") for r in results], np.mean),
        "seconds_per_relaxation": _stat([r.get("seconds") for r in results], np.mean),
    }
    for t in RMSD_THRESHOLDS_A:
        out[f"frac_rmsd_below_{t}A"] = (
            float(np.mean([x is not None and np.isfinite(x) and x < t for x in rmsd])) if n else None
        )
    gaps = [r.get("ref_energy_gap_meV_per_atom") for r in results if "ref_energy_gap_meV_per_atom" in r]
    if gaps:
        out["ref_energy_gap_meV_per_atom_mean"] = _stat(gaps, np.mean)
        out["ref_energy_gap_meV_per_atom_median"] = _stat(gaps, np.median)
    return out
