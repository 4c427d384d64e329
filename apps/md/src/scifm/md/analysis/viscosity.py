"""Green–Kubo shear viscosity from the off-diagonal pressure tensor.

    η = V / (k_B T) ∫₀^∞ ⟨P_ab(0) P_ab(t)⟩ dt,   averaged over ab ∈ {xy, xz, yz}

The running integral is evaluated with the trapezoidal rule up to ``t_max`` (the plateau; the tail is
noise). The error bar is the SEM of η over contiguous blocks of the series, each block integrated on its
own. Inputs: P in bar, dt in fs, V in Å³, T in K; η returned in mPa·s (= cP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import constants as C

from .blocks import mean_sem, split_blocks
from .correlation import autocorrelation

BAR_IN_PA = 1e5


@dataclass(frozen=True)
class GreenKubo:
    """η (mPa·s) ± SEM; lag [L] fs; acf [L] bar² (mean over the components); running integral [L] mPa·s."""

    eta_mPa_s: float
    eta_sem_mPa_s: float
    lag_fs: np.ndarray
    acf_bar2: np.ndarray
    running_mPa_s: np.ndarray
    t_max_fs: float


def _running(acf: np.ndarray, dt_fs: float, prefactor: float) -> np.ndarray:
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (acf[1:] + acf[:-1]) * dt_fs)])
    return prefactor * integral


def green_kubo(
    p_offdiag_bar: np.ndarray,
    dt_fs: float,
    volume_A3: float,
    temperature_K: float,
    t_max_fs: float,
    n_blocks: int = 5,
) -> GreenKubo:
    """η from the off-diagonal pressure components p [T, C] (C ≥ 1, e.g. xy, xz, yz), bar, every dt_fs."""
    p = np.asarray(p_offdiag_bar, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    n_comp = p.shape[1]
    max_lag = int(round(t_max_fs / dt_fs))
    if max_lag < 1 or max_lag >= len(p):
        raise ValueError(f"t_max {t_max_fs} fs needs 1..{len(p) - 1} lags of {dt_fs} fs")
    # V/(kT) [1/J·m³] · bar² → Pa² · fs → s ; result Pa·s → mPa·s
    prefactor = volume_A3 * 1e-30 / (C.k * temperature_K) * BAR_IN_PA**2 * 1e-15 * 1e3

    def one(seg):
        acf = autocorrelation(seg, max_lag) / n_comp
        run = _running(acf, dt_fs, prefactor)
        return run[-1], acf, run

    eta, acf, run = one(p)
    sem = float("nan")
    if n_blocks >= 2 and len(p) // n_blocks > 2 * max_lag:
        sem = mean_sem([one(p[s])[0] for s in split_blocks(len(p), n_blocks)])[1]
    lag = np.arange(max_lag + 1) * dt_fs
    return GreenKubo(float(eta), sem, lag, acf, run, float(t_max_fs))
