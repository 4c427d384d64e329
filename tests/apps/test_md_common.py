"""Helpers shared by the MD app tests (no tests here): a tiny random BAMBOO and a small water box."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from scifm.mlip.export import export_potential
from scifm.mlip.models.registry import build_model
from scifm.mlip.potential import Potential

TINY = {
    "cutoff": 4.0,
    "n_features": 8,
    "n_heads": 2,
    "n_layers": 2,
    "n_rbf": 6,
    "readout_hidden": [8],
    "coulomb": False,
    "electronegativity": False,
}


def tiny_potential(seed: int = 0, elements=(1, 8), dtype=torch.float64, perturb: float = 0.05) -> Potential:
    torch.manual_seed(seed)
    model = build_model("bamboo", elements=list(elements), **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    pot = Potential(model, scale=0.5, shift=-1.0)
    return pot.to(dtype).eval()


def export_tiny(path, seed: int = 0, dtype=torch.float64, **kw):
    export_potential(tiny_potential(seed, dtype=dtype, **kw), path)
    return path


WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])


def water_box(n_side: int = 2, spacing: float = 3.1, seed: int = 0) -> Atoms:
    """n_side³ water molecules on a jittered grid in a cubic periodic box; arrays mol_id, formal_charge."""
    rng = np.random.default_rng(seed)
    pos, mol = [], []
    k = 0
    for i in range(n_side):
        for j in range(n_side):
            for m in range(n_side):
                c = spacing * (np.array([i, j, m]) + 0.5) + rng.normal(0, 0.1, 3)
                pos.append(WATER + c)
                mol += [k] * 3
                k += 1
    atoms = Atoms("OH2" * k, positions=np.concatenate(pos), cell=np.eye(3) * spacing * n_side, pbc=True)
    atoms.arrays["mol_id"] = np.array(mol)
    atoms.arrays["formal_charge"] = np.zeros(len(atoms))
    return atoms
