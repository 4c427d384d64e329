"""DFT-D3 dispersion through the ``dftd3`` package (simple-DFT-D3), as an ASE-side correction at MD time.

BAMBOO trains on dispersion-free DFT labels and adds D3 only in simulations;
``SciFMCalculator(dispersion=...)`` does the same. Do not add it to models trained on labels that already
contain dispersion (GFN2-xTB includes D4; most "-D3" DFT data sets include D3).

Units in and out: Å, eV, eV/Å, eV/Å³ (stress with ASE's sign); dftd3 itself works in Bohr and Hartree.
"""

from __future__ import annotations

import numpy as np
from ase.units import Bohr, Hartree

DAMPINGS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d3op", "d3cso")


def _param(method: str, damping: str):
    from dftd3 import interface as d3

    classes = {
        "d3bj": d3.RationalDampingParam,
        "d3zero": d3.ZeroDampingParam,
        "d3bjm": d3.ModifiedRationalDampingParam,
        "d3zerom": d3.ModifiedZeroDampingParam,
        "d3op": d3.OptimizedPowerDampingParam,
        "d3cso": d3.CSODampingParam,
    }
    if damping not in classes:
        raise ValueError(f"unknown D3 damping {damping!r}; choose one of {', '.join(DAMPINGS)}")
    try:
        return classes[damping](method=method)
    except Exception as exc:  # dftd3 raises its own error type for unknown functionals
        raise ValueError(f"no D3 ({damping}) parameters for functional {method!r}: {exc}") from None


class D3Dispersion:
    """``D3Dispersion("b3lyp", damping="d3bj").compute(numbers, positions, cell, pbc)`` ->
    {"energy": eV, "forces": [N,3] eV/Å, "stress": [3,3] eV/Å³ or None (non-periodic)}.

    Keeps the dftd3 model between calls and only updates positions/cell while the atoms and pbc stay the same.
    Partly periodic systems are passed to dftd3 as they are.
    """

    def __init__(self, method: str = "b3lyp", damping: str = "d3bj"):
        self.method, self.damping = str(method), str(damping).lower()
        self.param = _param(self.method, self.damping)
        self._model = None
        self._key = None

    def compute(self, numbers, positions, cell=None, pbc=None) -> dict:
        from dftd3 import interface as d3

        numbers = np.asarray(numbers, dtype=np.int64)
        pbc = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
        pos_b = np.asarray(positions, dtype=np.float64) / Bohr
        lat_b = None if not pbc.any() else np.asarray(cell, dtype=np.float64) / Bohr
        key = (numbers.tobytes(), pbc.tobytes())
        if self._model is None or key != self._key:
            self._model = d3.DispersionModel(
                numbers, pos_b, lattice=lat_b, periodic=pbc if pbc.any() else None
            )
            self._key = key
        else:
            self._model.update(pos_b, lat_b)
        res = self._model.get_dispersion(self.param, grad=True)
        out = {
            "energy": float(res["energy"]) * Hartree,
            "forces": -np.asarray(res["gradient"]) * (Hartree / Bohr),
            "stress": None,
        }
        if pbc.all():
            volume = abs(np.linalg.det(np.asarray(cell, dtype=np.float64)))
            out["stress"] = np.asarray(res["virial"]) * Hartree / volume
        return out


# ------------------------------------------------------------------------------------------------------
# Long-range dispersion beyond a model's cutoff (homogeneous-fluid tail correction)


def molecules(atoms) -> np.ndarray:
    """Molecule index per atom: ``atoms.arrays["mol_id"]`` when present, else covalent connectivity
    (ASE natural cutoffs, bonds across periodic boundaries included)."""
    if "mol_id" in atoms.arrays:
        _, ids = np.unique(np.asarray(atoms.arrays["mol_id"]), return_inverse=True)
        return ids
    from ase.neighborlist import NeighborList, natural_cutoffs
    from scipy.sparse.csgraph import connected_components

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True, skin=0.0)
    nl.update(atoms)
    return connected_components(nl.get_connectivity_matrix(sparse=True), directed=False)[1]


def pair_c6(numbers_a, positions_a, numbers_b, positions_b, separation: float = 25.0) -> float:
    """Two-body D3 C6 (eV·Å⁶) between molecule A and molecule B, summed over their atom pairs: the D3 C6_ij
    of each pair at the coordination numbers the atoms have in their own molecule.

    Measured from simple-dftd3's pairwise energies of the two molecules `separation` Å apart (inside its
    60 Bohr two-body cutoff), with s6 = 1 and neither the C8 nor the three-body term, so each pair gives
    exactly -C6_ij / (r^6 + R0^6), and R0^6 / r^6 is negligible at that distance.
    """
    from dftd3 import interface as d3

    pa, pb = np.asarray(positions_a, float), np.asarray(positions_b, float)
    pa = pa - pa.mean(0)
    pb = pb - pb.mean(0) + np.array([separation, 0.0, 0.0])
    na = len(pa)
    numbers = np.concatenate([np.asarray(numbers_a), np.asarray(numbers_b)]).astype(np.int64)
    model = d3.DispersionModel(numbers, np.vstack([pa, pb]) / Bohr)
    param = d3.RationalDampingParam(s6=1.0, s8=0.0, s9=0.0, a1=0.4, a2=5.0)
    e2 = np.asarray(model.get_pairwise_dispersion(param)["additive pairwise energy"])  # Hartree, [n, n]
    r = np.linalg.norm(pa[:, None] - pb[None], axis=-1) / Bohr
    if r.max() * Bohr > 31.0:  # dftd3's two-body cutoff is 60 Bohr (31.75 Å): pairs beyond it would be lost
        raise ValueError(
            f"molecules too large for the C6 probe (atom pairs up to {r.max() * Bohr:.1f} Å apart)"
        )
    block = e2[:na, na:] + e2[na:, :na].T  # the pair energy, however the matrix splits it
    # E = -C6 / (r^6 + R0^6) with R0 < 10 Bohr: at 25 Å (47 Bohr) -E r^6 is C6 to better than 1e-4
    c6 = float(-(block * r**6).sum())
    return c6 * Hartree * Bohr**6


class DispersionTail:
    """Long-range dispersion beyond a cutoff r_c for a homogeneous periodic fluid:

        E_tail = -(2 pi / 3) / (V r_c^3) * sum_{A,B} N_A N_B C6_AB,     P_tail = E_tail / V,

    (the textbook tail correction, as LAMMPS's ``pair_modify tail`` or GROMACS's ``DispCorr``), with
    C6_AB the D3 C6 between molecule types A and B (``pair_c6``). For a model trained on labels that contain
    dispersion (GFN2-xTB has D4) in finite clusters: the model reproduces dispersion within its cutoff and
    nothing beyond it. No forces; the stress is isotropic, sigma = -P_tail (ASE's sign: sigma = (1/V)
    dE/deps). Molecule types are keyed by their sorted atomic numbers; coefficients are computed once per
    structure composition.
    """

    def __init__(self, cutoff: float):
        if cutoff <= 0:
            raise ValueError(f"tail cutoff must be > 0, got {cutoff}")
        self.cutoff = float(cutoff)
        self._key = None
        self._k = 0.0

    def coefficient(self, atoms) -> float:
        """K (eV·Å³) with E_tail = -K / V."""
        key = (atoms.numbers.tobytes(), np.asarray(atoms.arrays.get("mol_id", [])).tobytes())
        if key != self._key:
            mol = molecules(atoms)
            pos = atoms.get_positions()
            kinds: dict[tuple, list] = {}
            for m in range(mol.max() + 1):
                idx = np.flatnonzero(mol == m)
                # whole molecule even across the boundary: unwrap each atom to its first atom (minimum image)
                d = (
                    atoms.get_distances(idx[0], idx, mic=True, vector=True)
                    if len(idx) > 1
                    else np.zeros((1, 3))
                )
                kind = tuple(sorted(atoms.numbers[idx]))
                kinds.setdefault(kind, [0, atoms.numbers[idx], pos[idx[0]] + d])[0] += 1
            total = 0.0
            items = list(kinds.values())
            for a in items:
                for b in items:
                    total += a[0] * b[0] * pair_c6(a[1], a[2], b[1], b[2])
            self._k = 2.0 * np.pi / 3.0 * total / self.cutoff**3
            self._key = key
        return self._k

    def compute(self, atoms) -> dict:
        """{"energy": eV, "stress": Voigt [6] eV/Å³, "pressure": eV/Å³} for a fully periodic ``atoms``."""
        volume = abs(atoms.cell.volume)
        k = self.coefficient(atoms)
        s = k / volume**2
        return {"energy": -k / volume, "stress": np.array([s, s, s, 0.0, 0.0, 0.0]), "pressure": -s}
