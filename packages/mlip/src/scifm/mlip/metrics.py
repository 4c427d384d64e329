"""Energy/force error metrics in the units users quote (meV, meV/Å)."""

from __future__ import annotations

import numpy as np


def energy_force_metrics(e_pred, e_ref, n_atoms, f_pred, f_ref) -> dict[str, float]:
    """e_* [F] eV, n_atoms [F], f_* [A,3] eV/Å → MAE/RMSE in meV and meV/Å."""
    e_pred, e_ref, n_atoms = (np.asarray(x, dtype=np.float64) for x in (e_pred, e_ref, n_atoms))
    f_pred, f_ref = np.asarray(f_pred, dtype=np.float64), np.asarray(f_ref, dtype=np.float64)
    de = e_pred - e_ref
    df = f_pred - f_ref
    return {
        "n_frames": int(len(e_ref)),
        "n_atoms": int(n_atoms.sum()),
        "energy_mae_meV": float(1000 * np.abs(de).mean()),
        "energy_rmse_meV": float(1000 * np.sqrt((de**2).mean())),
        "energy_mae_meV_per_atom": float(1000 * np.abs(de / n_atoms).mean()),
        "forces_mae_meV_per_A": float(1000 * np.abs(df).mean()),
        "forces_rmse_meV_per_A": float(1000 * np.sqrt((df**2).mean())),
    }
