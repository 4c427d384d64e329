"""Block averaging: the standard error of the mean of a correlated time series.

Blocking (Flyvbjerg & Petersen 1989): average neighbouring pairs repeatedly; at level k the series has
n_k = N / 2^k blocks of B = 2^k samples, and SEM_k = std(block means, ddof=1) / √n_k grows until the blocks
are longer than the correlation time, then plateaus. The block size is chosen with the criterion of
Lee, Needs & Towler (2011, used by pyblock): the smallest B with B³ > 2 N (SEM_B / SEM_1)⁴, i.e. the block
size beyond which the remaining bias is below the statistical error of the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockEstimate:
    """mean and its standard error; ``block_size`` (samples) and ``n_blocks`` of the chosen level;
    ``sems`` [levels] the SEM estimate at every level (block size 2^k)."""

    mean: float
    sem: float
    block_size: int
    n_blocks: int
    sems: tuple[float, ...]


def blocking_levels(x: np.ndarray, min_blocks: int = 4) -> list[tuple[int, int, float]]:
    """[(block size, number of blocks, SEM estimate)] for block sizes 1, 2, 4, ... (≥ ``min_blocks``)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    out = []
    size = 1
    while len(x) >= min_blocks:
        n = len(x)
        out.append((size, n, float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")))
        m = n // 2
        x = 0.5 * (x[: 2 * m : 2] + x[1 : 2 * m : 2])
        size *= 2
    return out


def block_average(x, min_blocks: int = 4) -> BlockEstimate:
    """Mean and SEM of the series ``x`` [N] (any units) with automatic block size (module docstring).

    Fewer than 2 samples give sem = NaN. A constant series gives sem = 0.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return BlockEstimate(float("nan"), float("nan"), 0, 0, ())
    mean = float(x.mean())
    if len(x) < 2:
        return BlockEstimate(mean, float("nan"), 1, 1, ())
    levels = blocking_levels(x, min_blocks=min(min_blocks, len(x)))
    sems = tuple(s for _, _, s in levels)
    s0 = sems[0]
    if not s0 > 0:
        return BlockEstimate(mean, 0.0, 1, len(x), sems)
    chosen = None
    for size, n, s in levels:
        if size**3 > 2.0 * len(x) * (s / s0) ** 4:
            chosen = (size, n, s)
            break
    if chosen is None:  # never reached the plateau: the largest block size is the best (under-)estimate
        chosen = max(levels, key=lambda t: t[2])
    return BlockEstimate(mean, chosen[2], chosen[0], chosen[1], sems)


def slope_sem(t, y) -> tuple[float, float]:
    """Least-squares slope of ``y`` against ``t`` and its standard error for correlated residuals (e.g.
    the NVE energy drift): SE = √g σ_r / √Σ(t - t̄)², with √g σ_r = √N · SEM_block(residuals), the
    statistical inefficiency g taken from the blocking analysis of the residuals (``block_average``).
    For independent residuals this is the textbook OLS standard error."""
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if len(t) < 3 or not np.ptp(t) > 0:
        return (float("nan"), float("nan"))
    tc = t - t.mean()
    slope = float(np.dot(tc, y - y.mean()) / np.dot(tc, tc))
    resid = y - y.mean() - slope * tc
    sem = block_average(resid).sem * np.sqrt(len(t)) / np.sqrt(np.dot(tc, tc))
    return slope, float(sem)


def ar1_sem(phi: float, sigma_noise: float, n: int) -> float:
    """Analytic SEM of the mean of n samples of a stationary AR(1) process x_t = φ x_{t-1} + ε_t,
    ε ~ N(0, σ²): var(x) = σ²/(1-φ²), and for n ≫ 1/(1-φ), var(mean) ≈ var(x) (1+φ)/(1-φ) / n."""
    var_x = sigma_noise**2 / (1.0 - phi**2)
    # exact finite-n sum: var(mean) = var_x/n [1 + 2 Σ_{k=1}^{n-1} (1 - k/n) φ^k]
    k = np.arange(1, n)
    factor = 1.0 + 2.0 * np.sum((1.0 - k / n) * phi**k)
    return float(np.sqrt(var_x * factor / n))


def split_blocks(n: int, n_blocks: int) -> list[slice]:
    """``n_blocks`` contiguous slices of range(n) of equal length (the remainder is dropped at the end)."""
    if n_blocks < 1 or n < n_blocks:
        raise ValueError(f"cannot split {n} samples into {n_blocks} blocks")
    size = n // n_blocks
    return [slice(k * size, (k + 1) * size) for k in range(n_blocks)]


def mean_sem(values) -> tuple[float, float]:
    """Mean and SEM of independent estimates (e.g. one per trajectory block): std(ddof=1)/√n."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))
