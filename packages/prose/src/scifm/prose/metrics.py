"""Sample-quality metrics against a reference MD of the same peptide (anchor §4).

* `energy_w2`: 1-D Wasserstein-2 between reference and sample energies (kT);
* `torus_w2`: exact W2 (POT) between the joint backbone dihedral vectors (all phi and psi), ground cost
  sum_d min(|d_d|, 2 pi - |d_d|)^2;
* `tica_w2`: W2 on the first two TICA components (deeptime, fitted on the time-ordered reference;
  features: pairwise distances between C/N/S atoms + sin/cos of phi, psi, omega);
* `macrostate_jsd`: k-means (k = 20, fitted on the reference TICA-2D) occupation, squared base-2
  Jensen-Shannon distance;
* chirality: sign of the triple product at every stereocentre (CA of non-Gly residues, CB of Ile/Thr)
  compared with the reference's first frame; a sample whose every centre is inverted is mirrored (x -> -x)
  before the metrics and counted as wrong; a sample with mixed inversions cannot be fixed and is counted too.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "backbone_dihedrals",
    "chirality_signs",
    "energy_w2",
    "fix_chirality",
    "jsd_macrostates",
    "kish_ess",
    "tica_features",
    "torus_w2",
    "wasserstein2",
]


def kish_ess(logw: np.ndarray) -> float:
    """Normalised Kish ESS of log-weights (non-finite ones dropped)."""
    lw = np.asarray(logw, dtype=np.float64)
    lw = lw[np.isfinite(lw)]
    if lw.size == 0:
        return 0.0
    m = lw.max()
    w = np.exp(lw - m)
    return float(w.sum() ** 2 / (w**2).sum() / lw.size)


def energy_w2(e_ref: np.ndarray, e_gen: np.ndarray) -> float:
    """1-D W2 between two energy samples (kT); non-finite sample energies are dropped."""
    import ot

    a = np.asarray(e_ref, dtype=np.float64)
    b = np.asarray(e_gen, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(np.sqrt(ot.emd2_1d(a, b, metric="sqeuclidean")))


def _subsample(x: np.ndarray, n_max: int, seed: int) -> np.ndarray:
    if len(x) <= n_max:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), n_max, replace=False))]


def wasserstein2(
    a: np.ndarray, b: np.ndarray, cost: str = "euclidean", n_max: int = 3000, seed: int = 0
) -> float:
    """Exact W2 between point clouds a [n, d], b [m, d] with uniform weights (POT `emd2`).

    cost: "euclidean" (squared distance) or "torus" (squared wrapped-angle distance). Clouds larger than
    `n_max` are subsampled (the cost matrix is n x m).
    """
    import ot

    a = _subsample(np.asarray(a, dtype=np.float64), n_max, seed)
    b = _subsample(np.asarray(b, dtype=np.float64), n_max, seed + 1)
    d = np.abs(a[:, None, :] - b[None, :, :])
    if cost == "torus":
        d = np.minimum(d, 2 * np.pi - d)
    M = (d**2).sum(-1)
    return float(
        np.sqrt(
            max(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), M, numItermax=10**7), 0.0)
        )
    )


def torus_w2(angles_ref: np.ndarray, angles_gen: np.ndarray, n_max: int = 3000, seed: int = 0) -> float:
    """W2 on the torus between dihedral vectors [n, d] (radians)."""
    return wasserstein2(angles_ref, angles_gen, cost="torus", n_max=n_max, seed=seed)


def _md_traj(topology, x_nm: np.ndarray):
    import mdtraj as md

    top = md.Topology.from_openmm(topology)
    return md.Trajectory(np.asarray(x_nm, dtype=np.float32), top)


def backbone_dihedrals(topology, x_nm: np.ndarray) -> np.ndarray:
    """All backbone phi then psi angles [n, n_phi + n_psi] (radians), via mdtraj."""
    import mdtraj as md

    t = _md_traj(topology, x_nm)
    return np.concatenate([md.compute_phi(t)[1], md.compute_psi(t)[1]], axis=1)


def ramachandran_pairs(topology, x_nm: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(label, phi [n], psi [n])] for residues that have both angles.

    A peptide in which no residue has both (a zwitterionic dipeptide: psi only on residue 1, phi only on
    residue 2) gets the pairs across each peptide bond instead, psi of residue i with phi of residue i+1,
    labelled "psi1/phi2": the two backbone angles such a molecule has."""
    import mdtraj as md

    t = _md_traj(topology, x_nm)
    pi, phi = md.compute_phi(t)
    si, psi = md.compute_psi(t)
    # phi_i uses C(i-1), psi_i uses N(i+1): match them on the shared CA (second atom of phi, second of psi).
    psi_by_ca = {int(q[1]): j for j, q in enumerate(si)}
    out = []
    for i, q in enumerate(pi):
        ca = int(q[2])
        if ca in psi_by_ca:
            res = t.topology.atom(ca).residue
            out.append((f"{res.name}{res.index + 1}", phi[:, i], psi[:, psi_by_ca[ca]]))
    if not out:
        # psi_i ends on N(i+1), the second atom of phi_(i+1)
        phi_by_n = {int(q[1]): i for i, q in enumerate(pi)}
        for j, q in enumerate(si):
            if int(q[3]) in phi_by_n:
                r = t.topology.atom(int(q[1])).residue.index + 1
                out.append((f"psi{r}/phi{r + 1}", phi[:, phi_by_n[int(q[3])]], psi[:, j]))
    return out


def tica_features(topology, x_nm: np.ndarray) -> np.ndarray:
    """Pairwise distances between C, N and S atoms + sin/cos of phi, psi, omega: [n, F]."""
    import mdtraj as md

    t = _md_traj(topology, x_nm)
    sel = [a.index for a in t.topology.atoms if a.element is not None and a.element.symbol in ("C", "N", "S")]
    pairs = np.array([(i, j) for k, i in enumerate(sel) for j in sel[k + 1 :]])
    feats = [md.compute_distances(t, pairs)] if len(pairs) else []
    for fn in (md.compute_phi, md.compute_psi, md.compute_omega):
        ang = fn(t)[1]
        if ang.size:
            feats += [np.sin(ang), np.cos(ang)]
    return np.concatenate(feats, axis=1).astype(np.float64)


class TICAProjector:
    """deeptime TICA (2 components) fitted on a time-ordered reference trajectory."""

    def __init__(self, topology, reference_nm: np.ndarray, lag: int = 100, dim: int = 2):
        from deeptime.decomposition import TICA

        self.topology = topology
        feats = tica_features(topology, reference_nm)
        lag = int(max(1, min(lag, len(feats) // 10)))
        self.lag = lag
        self.model = TICA(lagtime=lag, dim=dim).fit(feats).fetch_model()

    def __call__(self, x_nm: np.ndarray) -> np.ndarray:
        return self.model.transform(tica_features(self.topology, x_nm))


def jsd_macrostates(ref: np.ndarray, gen: np.ndarray, k: int = 20, seed: int = 0) -> float:
    """Squared base-2 Jensen-Shannon distance between k-means state occupations (k-means fitted on ref)."""
    from deeptime.clustering import KMeans

    ref = np.ascontiguousarray(ref, dtype=np.float64)
    gen = np.ascontiguousarray(gen, dtype=np.float64)
    k = int(min(k, len(ref)))
    km = KMeans(n_clusters=k, fixed_seed=seed, max_iter=200, n_jobs=1).fit(ref).fetch_model()
    lr, lg = km.transform(ref), km.transform(gen)  # -1 marks a row with non-finite features
    p = np.bincount(lr[lr >= 0], minlength=k).astype(np.float64)
    q = np.bincount(lg[lg >= 0], minlength=k).astype(np.float64)
    return js_divergence(p, q)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (= squared base-2 JS distance) of two histograms."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    m = 0.5 * (p + q)

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return max(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0)


def stereocentres(topology) -> np.ndarray:
    """[S, 4] atom indices (centre, a, b, c) whose triple-product sign defines each centre's chirality."""
    out = []
    for res in topology.residues():
        by = {a.name: a.index for a in res.atoms()}
        if {"CA", "N", "C", "CB"} <= set(by):  # every L-amino acid but glycine
            out.append((by["CA"], by["N"], by["C"], by["CB"]))
        if res.name == "ILE" and {"CB", "CA", "CG1", "CG2"} <= set(by):
            out.append((by["CB"], by["CA"], by["CG1"], by["CG2"]))
        if res.name == "THR" and {"CB", "CA", "OG1", "CG2"} <= set(by):
            out.append((by["CB"], by["CA"], by["OG1"], by["CG2"]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def chirality_signs(x_nm: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Signs [n, S] of (a - c0) . ((b - c0) x (c - c0)) at every stereocentre."""
    x = np.asarray(x_nm, dtype=np.float64)
    c0 = x[:, centres[:, 0]]
    u, v, w = (x[:, centres[:, j]] - c0 for j in (1, 2, 3))
    return np.sign(np.einsum("nsd,nsd->ns", u, np.cross(v, w)))


def fix_chirality(topology, x_nm: np.ndarray, reference_frame_nm: np.ndarray) -> tuple[np.ndarray, dict]:
    """Mirror samples whose every stereocentre is inverted; count wrong/uncorrectable ones.

    Returns (fixed x [n, N, 3], {"wrong_chirality_fraction", "mirrored_fraction", "uncorrectable_fraction"}).
    """
    centres = stereocentres(topology)
    n = len(x_nm)
    if len(centres) == 0 or n == 0:
        return np.asarray(x_nm), {
            "wrong_chirality_fraction": 0.0,
            "mirrored_fraction": 0.0,
            "uncorrectable_fraction": 0.0,
        }
    ref = chirality_signs(reference_frame_nm[None], centres)[0]
    s = chirality_signs(x_nm, centres)
    match = s == ref[None]
    all_flipped = (~match).all(axis=1)
    wrong = (~match).any(axis=1)
    fixed = np.array(x_nm, copy=True)
    fixed[all_flipped] *= -1.0
    return fixed, {
        "wrong_chirality_fraction": float(wrong.mean()),
        "mirrored_fraction": float(all_flipped.mean()),
        "uncorrectable_fraction": float((wrong & ~all_flipped).mean()),
    }


def evaluate(
    topology,
    reference_nm: np.ndarray,
    reference_energy: np.ndarray,
    samples_nm: np.ndarray,
    samples_energy: np.ndarray,
    n_max: int = 3000,
    tica_lag: int = 100,
    k: int = 20,
    seed: int = 0,
    tica: TICAProjector | None = None,
) -> dict:
    """Energy, torus and TICA W2 and macrostate JSD of `samples_nm` against the reference (both nm).

    `samples_energy` must be the target energies (kT) of `samples_nm` (mirroring keeps them: the force
    field terms are even under inversion up to improper-torsion phases).
    """
    fixed, chir = fix_chirality(topology, samples_nm, reference_nm[0])
    tica = tica or TICAProjector(topology, reference_nm, lag=tica_lag)
    ref_t, gen_t = tica(reference_nm), tica(fixed)
    ref_d, gen_d = backbone_dihedrals(topology, reference_nm), backbone_dihedrals(topology, fixed)
    return {
        "energy_w2": energy_w2(reference_energy, samples_energy),
        "torus_w2": torus_w2(ref_d, gen_d, n_max=n_max, seed=seed),
        "tica_w2": wasserstein2(ref_t[:, :2], gen_t[:, :2], n_max=n_max, seed=seed),
        "macrostate_jsd": jsd_macrostates(ref_t[:, :2], gen_t[:, :2], k=k, seed=seed),
        "tica_lag": tica.lag,
        **chir,
    }
