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
