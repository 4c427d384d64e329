"""Unwrapping, mean-square displacement and self-diffusion coefficients.

Einstein relation: MSD(t) = ⟨|r(t₀+t) - r(t₀)|²⟩ → 6 D t (3-D) at long times, so D = slope / 6.
The slope is a least-squares line over a fit window of lag times (default: 20 %–80 % of the longest lag
that still averages over many origins); the error bar comes from splitting the trajectory into blocks and
fitting each block separately (``diffusion_blocks``).

Units: positions Å, times fs; D in Å²/fs internally (1 Å²/fs = 1e-5 m²/s), reported as m²/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blocks import mean_sem, split_blocks
from .correlation import msd_fft

A2_PER_FS_IN_M2_PER_S = 1e-5


def unwrap(positions: np.ndarray, cells: np.ndarray | None) -> np.ndarray:
    """Continuous trajectories from positions that may have been wrapped into the box.

    positions [T,N,3] Å, cells [T,3,3] (rows = lattice vectors) or None (non-periodic: returned as is).
    Each step's displacement is mapped to its minimum image in fractional coordinates of that frame's cell,
    so frames must be saved often enough that no atom moves half a box between them. With a changing cell
    (NPT) the displacement uses the later frame's cell (the convention of most MD codes' unwrapped output).
    """
    x = np.asarray(positions, dtype=np.float64)
    if cells is None:
        return x.copy()
    cells = np.asarray(cells, dtype=np.float64)
    out = np.empty_like(x)
    out[0] = x[0]
    for t in range(1, len(x)):
        inv = np.linalg.inv(cells[t])
        d = x[t] - x[t - 1]
        frac = d @ inv
        frac -= np.round(frac)
        out[t] = out[t - 1] + frac @ cells[t]
    return out


def group_centres(x: np.ndarray, masses: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Centres of mass of atom groups (e.g. molecules). x [T,N,3] unwrapped, masses [N], groups [N] int
    (ids 0..G-1) -> [T,G,3]. Unwrapped atoms keep molecules whole when they started whole."""
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    w = np.zeros((n_groups, len(groups)))
    w[groups, np.arange(len(groups))] = masses
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("gn,tnd->tgd", w, x)


@dataclass(frozen=True)
class DiffusionFit:
    """D (m²/s) ± SEM over blocks; lag [L] fs and msd [L] Å² of the whole trajectory; window (fs)."""

    D_m2_s: float
    D_sem_m2_s: float
    lag_fs: np.ndarray
    msd_A2: np.ndarray
    window_fs: tuple[float, float]
    n_particles: int


def fit_slope(lag: np.ndarray, y: np.ndarray, window: tuple[float, float]) -> float:
    """Least-squares slope of y(lag) over lag ∈ [window[0], window[1]]."""
    m = (lag >= window[0]) & (lag <= window[1])
    if m.sum() < 2:
        raise ValueError(f"fit window {window} holds fewer than 2 lag times")
    return float(np.polyfit(lag[m], y[m], 1)[0])


def diffusion(
    x: np.ndarray,
    dt_fs: float,
    fit: tuple[float, float] = (0.2, 0.8),
    max_lag_fraction: float = 0.5,
    n_blocks: int = 5,
) -> DiffusionFit:
    """Self-diffusion coefficient of the particles x [T,P,3] (unwrapped, Å) sampled every ``dt_fs`` fs.

    MSD over lags up to ``max_lag_fraction`` of the trajectory (of each block); slope fitted over the
    fractions ``fit`` of that lag range; D = slope/6. Error bar: SEM of D over ``n_blocks`` contiguous blocks
    (NaN if the trajectory is too short for blocks of ≥ 8 frames).
    """
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[0]

    def one(seg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, tuple[float, float]]:
        max_lag = max(2, int(max_lag_fraction * (len(seg) - 1)))
        msd = msd_fft(seg, max_lag)
        lag = np.arange(len(msd)) * dt_fs
        window = (fit[0] * lag[-1], fit[1] * lag[-1])
        return fit_slope(lag, msd, window) / 6.0, lag, msd, window

    d_all, lag, msd, window = one(x)
    sem = float("nan")
    if n_blocks >= 2 and t // n_blocks >= 8:
        ds = [one(x[s])[0] for s in split_blocks(t, n_blocks)]
        sem = mean_sem(ds)[1]
    return DiffusionFit(
        d_all * A2_PER_FS_IN_M2_PER_S, sem * A2_PER_FS_IN_M2_PER_S, lag, msd, window, x.shape[1]
    )
