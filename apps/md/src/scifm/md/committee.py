"""Committee (query-by-committee) uncertainty: several models, their mean prediction and their spread.

``CommitteeCalculator([run_a, run_b, run_c])`` evaluates every member on the same atoms and returns the
committee mean of energy, per-atom energies, forces and stress (what the MD integrates), plus

- ``energy_std`` (eV): population std of the members' total energies,
- ``forces_std`` [N] (eV/Å): per-atom spread sqrt(mean_k |F_k,i - F̄_i|²),
- ``forces_std_max`` (eV/Å): its maximum over atoms (the usual "label this frame next" criterion),
- ``stress_std`` [6] (eV/Å³, periodic only) and ``energies_members`` [K] (each member's energy).

Identical members give exactly zero spread. Members are model directories (run dirs with ``model/`` are
accepted), ``Potential`` objects or any ASE calculators (e.g. EMT in tests).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes


def _info_differs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return True
    try:
        return any(not np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    except Exception:  # uncomparable values: recomputing is always safe
        return True


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A run directory (holding ``model/``) or an exported model directory -> the model directory."""
    p = Path(path)
    if (p / "model" / "model.json").is_file():
        return p / "model"
    return p


def make_member(
    model,
    dtype: str = "float32",
    device: str = "cpu",
    skin: float = 0.0,
    dispersion: str | None = "auto",
    dispersion_tail: bool = False,
) -> Calculator:
    """An ASE calculator for one committee member (path, Potential or calculator)."""
    if isinstance(model, Calculator):
        return model
    from scifm.mlip.calculator import SciFMCalculator

    if isinstance(model, (str, os.PathLike)):
        model = resolve_model_dir(model)
    return SciFMCalculator(
        model, dtype=dtype, device=device, skin=skin, dispersion=dispersion, dispersion_tail=dispersion_tail
    )


class CommitteeCalculator(Calculator):
    implemented_properties = [
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
        "energy_std",
        "forces_std",
        "forces_std_max",
        "stress_std",
    ]

    def __init__(
        self,
        members: Sequence,
        dtype: str = "float32",
        device: str = "cpu",
        skin: float = 0.0,
        dispersion: str | None = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(members) < 1:
            raise ValueError("a committee needs at least one member")
        self.members = [make_member(m, dtype, device, skin, dispersion) for m in members]

    def check_state(self, atoms, tol: float = 1e-15):
        changes = super().check_state(atoms, tol)
        # a new total charge (atoms.info) must reach the members
        if self.atoms is not None and "info" not in changes and _info_differs(atoms.info, self.atoms.info):
            changes.append("info")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.get_pbc())) and abs(atoms.cell.volume) > 1e-12
        energies, forces, per_atom, stresses = [], [], [], []
        for calc in self.members:
            a = atoms.copy()
            a.calc = calc
            energies.append(float(a.get_potential_energy()))
            forces.append(np.asarray(a.get_forces(apply_constraint=False), dtype=np.float64))
            try:
                per_atom.append(np.asarray(a.get_potential_energies(), dtype=np.float64))
            except Exception:  # calculators without per-atom energies (fine: the mean is then omitted)
                per_atom.append(None)
            if periodic:
                stresses.append(np.asarray(a.get_stress(), dtype=np.float64))
        e = np.asarray(energies)
        f = np.stack(forces)  # [K,N,3]
        f_mean = f.mean(axis=0)
        f_std = np.sqrt(((f - f_mean) ** 2).sum(axis=2).mean(axis=0))  # [N]
        self.results = {
            "energy": float(e.mean()),
            "free_energy": float(e.mean()),
            "forces": f_mean,
            "energy_std": float(e.std()),
            "forces_std": f_std,
            "forces_std_max": float(f_std.max()) if len(f_std) else 0.0,
            "energies_members": e,
        }
        if all(p is not None for p in per_atom):
            self.results["energies"] = np.stack(per_atom).mean(axis=0)
        if periodic:
            s = np.stack(stresses)
            self.results["stress"] = s.mean(axis=0)
            self.results["stress_std"] = s.std(axis=0)
