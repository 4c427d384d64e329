"""Time correlation functions by FFT (Wiener–Khinchin), averaged over all time origins."""

from __future__ import annotations

import numpy as np


def autocorrelation(x: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """C(τ) = ⟨x(t) x(t+τ)⟩_t for τ = 0..max_lag, averaged over the N-τ origins (unbiased).

    x [T] or [T, D] (the D components are summed: C = Σ_d ⟨x_d(t) x_d(t+τ)⟩). No mean is removed.
    Returns [max_lag+1].
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    max_lag = n - 1 if max_lag is None else min(int(max_lag), n - 1)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, n=size, axis=0)
    acf = np.fft.irfft(f * np.conj(f), n=size, axis=0)[: max_lag + 1].sum(axis=1)
    return acf / (n - np.arange(max_lag + 1))


def msd_fft(x: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Mean-square displacement ⟨|x(t+τ) - x(t)|²⟩_t for τ = 0..max_lag, all origins, O(T log T).

    x [T, D] (e.g. one particle's unwrapped position, D = 3) or [T, P, D] (averaged over the P particles).
    Uses |x(t+τ)-x(t)|² = x(t+τ)² + x(t)² - 2 x(t)·x(t+τ) (Calandrini et al. 2011, the nMoldyn algorithm).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    t, p, d = x.shape
    max_lag = t - 1 if max_lag is None else min(int(max_lag), t - 1)
    flat = x.reshape(t, p * d)
    sq = (x**2).sum(axis=2)  # [T,P]
    # S1(τ) = (1/(T-τ)) Σ_{t=0}^{T-τ-1} [x²(t) + x²(t+τ)], by a running sum
    total = 2.0 * sq.sum(axis=0)
    s1 = np.empty((max_lag + 1, p))
    running = total.copy()
    for lag in range(max_lag + 1):
        if lag > 0:
            running = running - sq[lag - 1] - sq[t - lag]
        s1[lag] = running / (t - lag)
    size = 1 << int(np.ceil(np.log2(2 * t)))
    f = np.fft.rfft(flat, n=size, axis=0)
    s2 = np.fft.irfft(f * np.conj(f), n=size, axis=0)[: max_lag + 1].reshape(max_lag + 1, p, d).sum(axis=2)
    s2 = s2 / (t - np.arange(max_lag + 1))[:, None]
    return (s1 - 2.0 * s2).mean(axis=1)
