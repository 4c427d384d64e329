"""Ionic conductivity: Nernst–Einstein (self-diffusion only) and Einstein (collective, with cross terms).

Nernst–Einstein:  σ_NE = e² / (V k_B T) · Σ_s N_s z_s² D_s
Einstein:         σ_E  = e² / (6 V k_B T) · lim_{t→∞} d/dt ⟨|Σ_i z_i [r_i(t₀+t) - r_i(t₀)]|²⟩
(the "translational dipole" MSD; it includes cation–anion and like-ion correlations that NE neglects).
z_i: integer charges of the ions (molecular ions are represented by their centres of mass), r in Å.

Units: V Å³, T K, D m²/s; σ returned in S/m (1 S/m = 10 mS/cm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import constants as C

from .blocks import mean_sem, split_blocks
from .correlation import msd_fft
from .msd import fit_slope

E2_OVER_KB = C.e**2 / C.k  # C²·K/J


def nernst_einstein(
    counts: dict[str, int],
    charges: dict[str, float],
    D_m2_s: dict[str, float],
    volume_A3: float,
    temperature_K: float,
) -> float:
    """σ_NE in S/m from per-species counts N_s, charges z_s (e) and self-diffusion D_s (m²/s)."""
    v = volume_A3 * 1e-30
    total = sum(counts[s] * charges[s] ** 2 * D_m2_s[s] for s in counts if charges.get(s, 0.0) != 0.0)
    return float(E2_OVER_KB * total / (v * temperature_K))


@dataclass(frozen=True)
class EinsteinConductivity:
    """σ (S/m) ± SEM over blocks; lag [L] fs, collective msd [L] (e²·Å²), fit window (fs)."""

    sigma_S_m: float
    sigma_sem_S_m: float
    lag_fs: np.ndarray
    msd_e2A2: np.ndarray
    window_fs: tuple[float, float]


def einstein(
    x: np.ndarray,
    z: np.ndarray,
    dt_fs: float,
    volume_A3: float,
    temperature_K: float,
    fit: tuple[float, float] = (0.2, 0.8),
    max_lag_fraction: float = 0.5,
    n_blocks: int = 5,
) -> EinsteinConductivity:
    """Collective conductivity of ions at unwrapped positions x [T,P,3] Å with charges z [P] (e).

    The translational dipole M(t) = Σ_i z_i r_i(t) [T,3] is one "particle": its MSD has no average over
    particles, only over time origins, so it is much noisier than NE (error bars say how much).
    """
    x = np.asarray(x, dtype=np.float64)
    m = np.einsum("p,tpd->td", np.asarray(z, dtype=np.float64), x)
    factor = E2_OVER_KB / (6.0 * volume_A3 * 1e-30 * temperature_K) * 1e-20 / 1e-15  # Å²/fs -> m²/s

    def one(seg):
        max_lag = max(2, int(max_lag_fraction * (len(seg) - 1)))
        msd = msd_fft(seg, max_lag)
        lag = np.arange(len(msd)) * dt_fs
        window = (fit[0] * lag[-1], fit[1] * lag[-1])
        return fit_slope(lag, msd, window) * factor, lag, msd, window

    sigma, lag, msd, window = one(m)
    sem = float("nan")
    if n_blocks >= 2 and len(m) // n_blocks >= 8:
        sem = mean_sem([one(m[s])[0] for s in split_blocks(len(m), n_blocks)])[1]
    return EinsteinConductivity(float(sigma), sem, lag, msd, window)
