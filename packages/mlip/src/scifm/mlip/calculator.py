"""ASE calculator for sci-fm potentials (energy, free_energy, per-atom energies, forces, stress).

Units are ASE's: eV, eV/Å, eV/Å^3; stress in Voigt order (xx, yy, zz, yz, xz, xy) with ASE's sign, only
for fully periodic systems. The total charge is read from ``atoms.info["charge"]`` (default 0), and a
change of ``atoms.info`` triggers a new calculation.

Options beyond the model: ``compile=True`` wraps the model in ``torch.compile`` (dynamic shapes; the first
call compiles: about 2 minutes for a tiny PaiNN on a loaded 2-core CPU, so it pays off only for long runs);
``dispersion`` adds DFT-D3 (``scifm.mlip.physics.dispersion``) to energy, forces and stress — "auto" uses the
functional the model's config names under ``dispersion`` (BAMBOO: added at MD time only), None turns it off.
``dispersion_tail=True`` adds the homogeneous-fluid dispersion beyond the model's cutoff (D3 C6 between the
molecule types of the box) to the energy and stress of periodic systems: for models trained on labels that
contain dispersion (GFN2-xTB) in finite clusters, which therefore miss everything beyond their cutoff.
Extra model outputs (charges [N], dipole [3], electrostatic_energy) are passed on under their own names.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from scifm.core.graph import atomic_graph, batch_graphs

from .export import load_potential
from .potential import Potential

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _info_differs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return True
    for key in a:
        try:
            if not np.array_equal(np.asarray(a[key]), np.asarray(b[key])):
                return True
        except Exception:  # uncomparable objects: assume they changed (recomputing is always safe)
            return True
    return False


class SciFMCalculator(Calculator):
    """``SciFMCalculator(model, dtype="float32", device="cpu", skin=0.0, compile=False, dispersion="auto")``.

    ``model``: an exported model directory (or its model.json) or a ``Potential`` (copied, so the
    caller's module keeps its dtype, device and training mode). ``skin`` > 0 reuses a neighbour list
    built with cutoff + skin until an atom moved more than skin/2 (or numbers, cell or pbc changed);
    edges are filtered to the true cutoff on every call, so results do not depend on the skin.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: str | os.PathLike | Potential,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        skin: float = 0.0,
        compile: bool = False,
        dispersion: str | None = "auto",
        dispersion_damping: str | None = None,
        dispersion_tail: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        torch_dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if torch_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if isinstance(model, (str, Path, os.PathLike)):
            potential = load_potential(model, dtype=torch_dtype, device=device)
        elif isinstance(model, Potential):
            potential = copy.deepcopy(model).to(dtype=torch_dtype, device=device)
        else:
            raise TypeError(f"model must be a path or a Potential, got {type(model).__name__}")
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.potential = potential.eval()
        for p in self.potential.parameters():  # inference only: no weight gradients
            p.requires_grad_(False)
        self.dtype = torch_dtype
        self.device = torch.device(device)
        self.cutoff = self.potential.cutoff
        self.skin = float(skin)
        model_cfg = getattr(self.potential.model, "config", {})
        if compile:
            self.potential.model = torch.compile(self.potential.model, dynamic=True)
        if dispersion == "auto":
            dispersion = model_cfg.get("dispersion")
            dispersion_damping = dispersion_damping or model_cfg.get("dispersion_damping")
        self.dispersion = None
        if dispersion:
            from .physics.dispersion import D3Dispersion

            self.dispersion = D3Dispersion(dispersion, dispersion_damping or "d3bj")
        self.tail = None
        if dispersion_tail:
            if self.dispersion is not None:
                raise ValueError(
                    "dispersion_tail is for models whose labels contain dispersion; this one adds full D3 "
                    f"({dispersion}) already"
                )
            from .physics.dispersion import DispersionTail

            self.tail = DispersionTail(self.cutoff)
        self._nl = None  # (graph with cutoff + skin, reference positions, numbers, cell, pbc)

    def check_state(self, atoms, tol: float = 1e-15):
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and "info" not in changes and _info_differs(atoms.info, self.atoms.info):
            changes.append("info")
        return changes

    def _graph(self, atoms):
        numbers = atoms.get_atomic_numbers()
        pos = atoms.get_positions()
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        cell = np.asarray(atoms.get_cell(), dtype=np.float64) if pbc.any() else None
        charge = float(atoms.info.get("charge", 0.0))
        if self.skin == 0.0:
            return atomic_graph(
                numbers, pos, self.cutoff, cell=cell, pbc=pbc, total_charge=charge, dtype=self.dtype
            )
        c = self._nl
        stale = (
            c is None
            or not np.array_equal(c[2], numbers)
            or not np.array_equal(c[4], pbc)
            or (cell is not None and (c[3] is None or not np.allclose(c[3], cell, rtol=0, atol=1e-12)))
            or np.max(np.linalg.norm(pos - c[1], axis=1), initial=0.0) > 0.5 * self.skin
        )
        if stale:
            g0 = atomic_graph(numbers, pos, self.cutoff + self.skin, cell=cell, pbc=pbc, dtype=self.dtype)
            self._nl = c = (g0, pos.copy(), numbers.copy(), None if cell is None else cell.copy(), pbc.copy())
        g0 = c[0]
        j, i = g0.edge_index.numpy()
        shift = g0.shifts.double().numpy() @ (cell if cell is not None else np.zeros((3, 3)))
        keep = torch.as_tensor(np.linalg.norm(pos[j] - pos[i] + shift, axis=1) < self.cutoff)
        g = copy.copy(g0)
        g.pos = torch.as_tensor(pos, dtype=self.dtype)
        g.edge_index = g0.edge_index[:, keep]
        g.shifts = g0.shifts[keep]
        g.total_charge = torch.tensor([charge], dtype=self.dtype)
        return g

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.get_pbc())) and abs(atoms.cell.volume) > 1e-12
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a fully periodic system with a cell")
        batch = batch_graphs([self._graph(atoms)]).to(self.device)
        out = self.potential(batch, forces=True, stress=periodic)
        energy = float(out["energy"].detach().double().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["node_energy"].detach().double().cpu().numpy(),
            "forces": out["forces"].detach().double().cpu().numpy(),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(
                out["stress"][0].detach().double().cpu().numpy()
            )
        for key, value in out.items():  # extra model outputs (e.g. charges) under their own names
            if key not in ("energy", "node_energy", "forces", "stress") and isinstance(value, torch.Tensor):
                value = value.detach().double().cpu().numpy()
                if key in ("dipole", "electrostatic_energy"):  # per-graph outputs of our single graph
                    value = value[0]
                    if not np.all(np.isfinite(value)):  # e.g. the dipole of a periodic system
                        continue
                self.results[key] = value
        if self.dispersion is not None:
            self._add_dispersion(atoms, periodic)
        if self.tail is not None and periodic:  # an isolated system has no fluid beyond the cutoff
            t = self.tail.compute(atoms)
            self._add_term("dispersion_tail_energy", t["energy"], stress=t["stress"])

    def _add_dispersion(self, atoms, periodic: bool) -> None:
        """Add D3 to energy, forces, stress."""
        d = self.dispersion.compute(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
        stress = full_3x3_to_voigt_6_stress(d["stress"]) if periodic and d["stress"] is not None else None
        self._add_term("dispersion_energy", d["energy"], forces=d["forces"], stress=stress)

    def _add_term(self, name: str, energy: float, forces=None, stress=None) -> None:
        """Add an energy term (reported under `name`) to the results; per-atom energies get equal shares."""
        r = self.results
        r[name] = energy
        r["energy"] += energy
        r["free_energy"] += energy
        r["energies"] = r["energies"] + energy / len(r["energies"])
        if forces is not None:
            r["forces"] = r["forces"] + forces
        if stress is not None:
            r["stress"] = r["stress"] + stress
