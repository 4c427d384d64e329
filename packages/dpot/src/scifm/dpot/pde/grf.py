"""Gaussian random fields on the periodic unit torus (FNO's initial vorticity).

Covariance ``sigma^2 (-Delta + tau^2)^(-alpha)``; sampled mode by mode in Fourier space.
"""

from __future__ import annotations

import math

import torch


def grf_torus_2d(
    n: int,
    s: int,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``n`` zero-mean samples on an ``s x s`` grid of ``[0, 1)^2``. Returns ``[n, s, s]`` (CPU).

    Each Fourier coefficient is ``sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2)`` times a complex standard
    normal, with the mean mode zeroed; the real part of the inverse FFT, times ``s^2`` to undo numpy/torch's
    ``1/s^2`` normalisation, is the field. ``sigma`` defaults to ``tau^((2 alpha - d)/2)`` with d = 2.
    """
    if sigma is None:
        sigma = tau ** (0.5 * (2 * alpha - 2))
    k = torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    re = torch.randn(n, s, s, generator=generator, dtype=torch.float64)
    im = torch.randn(n, s, s, generator=generator, dtype=torch.float64)
    coeff = sqrt_eig * torch.complex(re, im)
    field = torch.fft.ifft2(coeff).real * s * s
    return field.to(dtype)
