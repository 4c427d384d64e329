"""Molecules in MD frames and gas-phase clusters cut out of them for QM labelling.

``molecule_ids(atoms)``: ``arrays["mol_id"]`` when present (the electrolyte builder writes it), else
covalent connectivity (ASE natural cutoffs × 1.15, minimum image), with alkali/alkaline-earth ions always
on their own (their contacts to solvent oxygens are coordination, not bonds).

``extract_cluster(atoms, centre, radius)``: every molecule with at least one atom within ``radius`` Å
(minimum image) of the centre molecule's centre of mass is taken whole: each molecule is made whole around
its first atom (minimum image; molecules must be smaller than half the box) and shifted by the lattice
vector that brings its centre of mass nearest to the centre. The cluster is non-periodic, centred on the
centre molecule, with ``info["charge"]`` = the sum of the molecules' formal charges (``arrays
["formal_charge"]``, or ``charges_by_formula`` for structures without it), ``arrays["mol_id"]`` renumbered
from 0 (centre first) and ``info`` ``centre_mol``, ``radius``, ``frame``.

``label_clusters`` adds GFN2-xTB (tblite) energy, forces, Mulliken charges and dipole, in the conventions
of ``scifm.mlip.data.generate`` (so the frames train with ``sci-fm train mlip``).
"""

from __future__ import annotations

import math

import numpy as np

from scifm.core.errors import ConfigError

IONS = (3, 11, 19, 37, 55, 4, 12, 20)  # Li Na K Rb Cs Be Mg Ca: never bonded


def molecule_ids(atoms, scale: float = 1.15) -> np.ndarray:
    """Molecule index per atom [N] (0..M-1, in order of first appearance)."""
    if "mol_id" in atoms.arrays:
        raw = np.asarray(atoms.arrays["mol_id"], dtype=np.int64)
        _, ids = np.unique(raw, return_inverse=True)
        first = {}
        for k in ids:  # renumber in order of first appearance
            first.setdefault(int(k), len(first))
        return np.array([first[int(k)] for k in ids], dtype=np.int64)
    from ase.neighborlist import natural_cutoffs
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from scifm.core.neighbors import neighbor_list

    n = len(atoms)
    radii = np.asarray(natural_cutoffs(atoms, mult=scale))
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    i, j, S = neighbor_list(atoms.positions, 2.0 * radii.max() if n else 1.0, np.asarray(atoms.cell), pbc)
    d = np.linalg.norm(atoms.positions[j] - atoms.positions[i] + S @ np.asarray(atoms.cell), axis=1)
    z = atoms.numbers
    bonded = (d < radii[i] + radii[j]) & (i != j) & ~np.isin(z[i], IONS) & ~np.isin(z[j], IONS)
    graph = coo_matrix((np.ones(bonded.sum()), (i[bonded], j[bonded])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = {}
    return np.array([first.setdefault(int(k), len(first)) for k in labels], dtype=np.int64)


def molecule_charges(
    atoms, mol: np.ndarray, charges_by_formula: dict[str, float] | None = None
) -> np.ndarray:
    """Total charge per molecule [M] (e) from ``arrays["formal_charge"]`` or a {formula: charge} map."""
    n_mol = int(mol.max()) + 1
    if "formal_charge" in atoms.arrays:
        return np.bincount(
            mol, weights=np.asarray(atoms.arrays["formal_charge"], dtype=float), minlength=n_mol
        )
    q = np.zeros(n_mol)
    if charges_by_formula:
        for m in range(n_mol):
            q[m] = float(charges_by_formula.get(atoms[mol == m].get_chemical_formula(mode="hill"), 0.0))
    return q


def _min_image(d: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    if not pbc.any():
        return d
    frac = d @ np.linalg.inv(cell)
    frac[..., pbc] -= np.round(frac[..., pbc])
    return frac @ cell


def whole_molecules(atoms, mol: np.ndarray) -> np.ndarray:
    """Positions [N,3] with every molecule made whole around its first atom (minimum image)."""
    pos = atoms.positions.copy()
    cell, pbc = np.asarray(atoms.cell), np.asarray(atoms.get_pbc(), dtype=bool)
    for m in range(int(mol.max()) + 1):
        idx = np.flatnonzero(mol == m)
        pos[idx] = pos[idx[0]] + _min_image(pos[idx] - pos[idx[0]], cell, pbc)
    return pos


def extract_cluster(
    atoms,
    centre: int,
    radius: float,
    mol: np.ndarray | None = None,
    charges_by_formula: dict[str, float] | None = None,
):
    """The cluster around molecule ``centre`` (see the module docstring) as a non-periodic ``ase.Atoms``."""
    from ase import Atoms

    if not radius > 0:
        raise ConfigError(f"--radius {radius}: must be > 0 Å")
    mol = molecule_ids(atoms) if mol is None else np.asarray(mol)
    n_mol = int(mol.max()) + 1
    if not 0 <= centre < n_mol:
        raise ConfigError(f"centre molecule {centre} out of range (0..{n_mol - 1})")
    cell, pbc = np.asarray(atoms.cell), np.asarray(atoms.get_pbc(), dtype=bool)
    pos = whole_molecules(atoms, mol)
    masses = atoms.get_masses()
    coms = np.stack([np.average(pos[mol == m], axis=0, weights=masses[mol == m]) for m in range(n_mol)])
    c = coms[centre]
    q_mol = molecule_charges(atoms, mol, charges_by_formula)
    chosen = [centre]
    shifts = {centre: np.zeros(3)}
    for m in range(n_mol):
        if m == centre:
            continue
        shift = _min_image(coms[m] - c, cell, pbc) - (coms[m] - c)  # lattice vector to the nearest image
        d = np.linalg.norm(pos[mol == m] + shift - c, axis=1)
        if d.min() <= radius:
            chosen.append(m)
            shifts[m] = shift
    idx, new_mol = [], []
    for k, m in enumerate(chosen):
        sel = np.flatnonzero(mol == m)
        idx.append(sel)
        new_mol.append(np.full(len(sel), k))
    idx = np.concatenate(idx)
    new_pos = np.concatenate([pos[mol == m] + shifts[m] for m in chosen]) - c
    cluster = Atoms(numbers=atoms.numbers[idx], positions=new_pos)
    cluster.arrays["mol_id"] = np.concatenate(new_mol)
    if "formal_charge" in atoms.arrays:
        cluster.arrays["formal_charge"] = np.asarray(atoms.arrays["formal_charge"])[idx]
    cluster.info.update(
        charge=float(round(sum(q_mol[m] for m in chosen))),
        centre_mol=int(centre),
        radius=float(radius),
        n_molecules=len(chosen),
    )
    return cluster


def centre_molecules(atoms, mol: np.ndarray, centres: str) -> list[int]:
    """Molecule indices whose hill formula (e.g. ``Li``, ``F6P``, ``C3H4O3``) or any atom's element
    is in the comma-separated ``centres``; ``all`` selects every molecule."""
    wanted = [c.strip() for c in centres.split(",") if c.strip()]
    n_mol = int(mol.max()) + 1
    if wanted == ["all"]:
        return list(range(n_mol))
    out = []
    for m in range(n_mol):
        sub = atoms[mol == m]
        formula = sub.get_chemical_formula(mode="hill")
        if formula in wanted or (len(sub) == 1 and sub[0].symbol in wanted):
            out.append(m)
    return out


def label_clusters(clusters, method: str = "GFN2-xTB", max_scf_iterations: int = 250, progress: bool = True):
    """GFN2-xTB labels (energy eV, forces eV/Å, Mulliken charges e, dipole e·Å) for each cluster; clusters
    whose SCF fails are dropped (returned count). Returns (labelled frames, n_failed)."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ase.calculators.calculator import CalculationFailed
    from ase.calculators.singlepoint import SinglePointCalculator
    from tblite.ase import TBLite
    from tqdm.auto import tqdm

    out, failed = [], 0
    for atoms in tqdm(clusters, desc=f"{method} labels", unit="cluster", disable=not progress):
        a = atoms.copy()
        charge = int(round(a.info.get("charge", 0.0)))
        electrons = int(a.numbers.sum()) - charge
        a.calc = TBLite(
            method=method,
            charge=charge,
            multiplicity=1 + electrons % 2,
            verbosity=0,
            max_iterations=max_scf_iterations,
        )
        try:
            e = float(a.get_potential_energy())
            f = np.array(a.get_forces(), dtype=np.float64)
            q = np.array(a.calc.get_property("charges", a), dtype=np.float64)
            mu = np.array(a.calc.get_property("dipole", a), dtype=np.float64)
        except CalculationFailed:
            failed += 1
            continue
        if not (math.isfinite(e) and np.isfinite(f).all()):
            failed += 1
            continue
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        a.arrays["charges"] = q
        a.info["dipole"] = mu
        a.info["level_of_theory"] = method
        out.append(a)
    return out, failed
