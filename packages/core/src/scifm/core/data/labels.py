"""Read reference labels from ``ase.Atoms`` whichever way a file stored them."""

from __future__ import annotations

import numpy as np

# Keys accepted in info/arrays, first match wins (MACE-style REF_* keys included).
ENERGY_KEYS = ("energy", "REF_energy", "Energy", "total_energy")
FORCES_KEYS = ("forces", "REF_forces", "force")
STRESS_KEYS = ("stress", "REF_stress")
CHARGES_KEYS = ("charges", "REF_charges")
DIPOLE_KEYS = ("dipole", "REF_dipole")


def _first(mapping, keys):
    for k in keys:
        if k in mapping:
            return mapping[k]
    return None


def atoms_labels(atoms) -> dict:
    """Return a dict with any of energy (eV), forces [N,3], stress (Voigt or 3×3), charges [N], dipole [3]."""
    out: dict = {}
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    e = results.get("energy", _first(atoms.info, ENERGY_KEYS))
    if e is not None:
        out["energy"] = float(e)
    f = results.get("forces", _first(atoms.arrays, FORCES_KEYS))
    if f is not None:
        out["forces"] = np.asarray(f, dtype=np.float64)
    s = results.get("stress", _first(atoms.info, STRESS_KEYS))
    if s is not None:
        out["stress"] = np.asarray(s, dtype=np.float64)
    q = results.get("charges", _first(atoms.arrays, CHARGES_KEYS))
    if q is not None:
        out["charges"] = np.asarray(q, dtype=np.float64)
    d = results.get("dipole", _first(atoms.info, DIPOLE_KEYS))
    if d is not None:
        out["dipole"] = np.asarray(d, dtype=np.float64).reshape(3)
    return out
