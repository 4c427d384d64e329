"""Instantaneous thermodynamic observables of an ``ase.Atoms`` and the thermo log (CSV) of an MD run.

Columns (units in the names): step, time_fs, temperature_K, pressure_bar, volume_A3, density_g_cm3,
epot_eV, ekin_eV, etot_eV, pxx_bar, pyy_bar, pzz_bar, pyz_bar, pxz_bar, pxy_bar, forces_std_max_eV_A.
Pressure P = -σ including the kinetic (ideal-gas) part, σ the ASE stress (eV/Å³, positive = tensile),
converted with ``ase.units.bar``. Non-periodic systems have NaN pressure, volume and density; a calculator
without committee output has NaN ``forces_std_max_eV_A``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from ase import units

# 1 amu / Å³ in g/cm³ (1.66053906660e-24 g / 1e-24 cm³)
AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660

COLUMNS = (
    "step",
    "time_fs",
    "temperature_K",
    "pressure_bar",
    "volume_A3",
    "density_g_cm3",
    "epot_eV",
    "ekin_eV",
    "etot_eV",
    "pxx_bar",
    "pyy_bar",
    "pzz_bar",
    "pyz_bar",
    "pxz_bar",
    "pxy_bar",
    "forces_std_max_eV_A",
)


def is_periodic(atoms) -> bool:
    return bool(np.all(atoms.get_pbc())) and abs(atoms.cell.volume) > 1e-12


def density_g_cm3(atoms) -> float:
    """Mass density (g/cm³) of a periodic cell; NaN otherwise."""
    if not is_periodic(atoms):
        return float("nan")
    return float(atoms.get_masses().sum() * AMU_PER_A3_IN_G_PER_CM3 / atoms.get_volume())


def pressure_tensor_bar(atoms) -> np.ndarray:
    """3×3 pressure tensor P = -σ(virial + kinetic) in bar; NaN for non-periodic systems."""
    if not is_periodic(atoms):
        return np.full((3, 3), np.nan)
    stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
    return -np.asarray(stress) / units.bar


def observables(atoms, step: int, time_fs: float) -> dict[str, float]:
    """One thermo row (see COLUMNS) of ``atoms`` with its calculator's current results."""
    epot = float(atoms.get_potential_energy())
    ekin = float(atoms.get_kinetic_energy())
    p = pressure_tensor_bar(atoms)
    periodic = is_periodic(atoms)
    std = float("nan")
    calc = atoms.calc
    if calc is not None and "forces_std" in getattr(calc, "results", {}):
        std = float(np.max(calc.results["forces_std"]))
    return {
        "step": step,
        "time_fs": time_fs,
        "temperature_K": float(atoms.get_temperature()),
        "pressure_bar": float(np.trace(p) / 3.0),
        "volume_A3": float(atoms.get_volume()) if periodic else float("nan"),
        "density_g_cm3": density_g_cm3(atoms),
        "epot_eV": epot,
        "ekin_eV": ekin,
        "etot_eV": epot + ekin,
        "pxx_bar": float(p[0, 0]),
        "pyy_bar": float(p[1, 1]),
        "pzz_bar": float(p[2, 2]),
        "pyz_bar": float(p[1, 2]),
        "pxz_bar": float(p[0, 2]),
        "pxy_bar": float(p[0, 1]),
        "forces_std_max_eV_A": std,
    }


class ThermoLog:
    """Append rows to a CSV file, flushed after every row (a crash keeps everything logged so far)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = open(self.path, "w", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._fh.flush()
        self.rows: list[dict[str, float]] = []

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow({k: (repr(float(row[k])) if k != "step" else int(row[k])) for k in COLUMNS})
        self._fh.flush()
        self.rows.append(row)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def column(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.rows], dtype=np.float64)


def read_thermo(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a thermo CSV as float arrays (DataError if missing or malformed)."""
    from scifm.core.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "thermo log not found")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "time_fs" not in reader.fieldnames:
            raise DataError(path, "not a thermo log (no time_fs column)")
        cols: dict[str, list[float]] = {k: [] for k in reader.fieldnames}
        for n, row in enumerate(reader, start=2):
            for k, v in row.items():
                try:
                    cols[k].append(float(v) if v not in ("", None) else math.nan)
                except ValueError:
                    raise DataError(path, f"column {k!r}: not a number: {v!r}", record=f"line {n}") from None
    return {k: np.asarray(v) for k, v in cols.items()}
