"""PDEBench 1-D viscous Burgers, finite volume on the periodic unit interval.

    d_t u + d_x (u^2 / 2) = (nu / pi) d_xx u,   x in [0, 1) periodic, cell centres x_i = (i + 1/2) dx

Second-order MUSCL reconstruction with a monotonised-central limiter, a local Lax-Friedrichs (Rusanov) flux,
central viscous flux, and the midpoint predictor-corrector in time with
``dt = cfl * min(dx / max|u|, 0.5 dx^2 / (nu / pi))``, cfl = 0.25 (PDEBench's values). PDEBench's flux uses
the speed ``|u_L + u_R| / 2``; we use ``max(|u_L|, |u_R|)``, which also satisfies the entropy condition at
sonic points. The scheme is conservative: ``sum(u) dx`` is constant to round-off.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from scifm.dpot.pde.progress import Scaled, bar


def mc_slope(u: torch.Tensor) -> torch.Tensor:
    """Monotonised-central limited slope (per cell, times dx) of periodic ``u [..., X]``."""
    dm = u - torch.roll(u, 1, -1)
    dp = torch.roll(u, -1, -1) - u
    dc = 0.5 * (dm + dp)
    mag = torch.minimum(torch.minimum(2 * dm.abs(), 2 * dp.abs()), dc.abs())
    return torch.where(dm * dp > 0, torch.sign(dc) * mag, torch.zeros_like(u))


def rhs(u: torch.Tensor, dx: float, visc: float) -> torch.Tensor:
    """``-(F_{i+1/2} - F_{i-1/2}) / dx`` for periodic ``u [..., X]``; ``visc = nu / pi``."""
    s = mc_slope(u)
    ul = u + 0.5 * s  # left state at i+1/2
    ur = torch.roll(u - 0.5 * s, -1, -1)  # right state at i+1/2
    a = torch.maximum(ul.abs(), ur.abs())
    flux = 0.25 * (ul**2 + ur**2) - 0.5 * a * (ur - ul)
    flux = flux - visc * (torch.roll(u, -1, -1) - u) / dx
    return -(flux - torch.roll(flux, 1, -1)) / dx


def solve(
    u0: torch.Tensor, nu: float, dx: float, n_frames: int, frame_dt: float, cfl: float = 0.25, progress=None
) -> torch.Tensor:
    """Integrate ``u0 [B, X]``; returns snapshots at ``t = frame_dt, ..., n_frames frame_dt``: ``[B, X,
    T]``."""
    visc = nu / math.pi
    u = u0
    out = []
    t = 0.0
    for k in range(1, n_frames + 1):
        t_next = k * frame_dt
        while t < t_next - 1e-12:
            umax = float(u.abs().max())
            dt = cfl * min(dx / max(umax, 1e-12), 0.5 * dx * dx / visc if visc > 0 else math.inf)
            dt = min(dt, t_next - t)
            u_half = u + 0.5 * dt * rhs(u, dx, visc)
            u = u + dt * rhs(u_half, dx, visc)
            t += dt
        out.append(u)
        if progress is not None:
            progress.update(1)
    return torch.stack(out, dim=-1)


def initial_condition(n: int, x: np.ndarray, seed: int) -> np.ndarray:
    """PDEBench-style random initial states ``[n, X]`` (sample i uses ``default_rng(seed + i)``).

    Four terms ``A_k sin(2 pi k c_k x / L + phi_k)``, k = 1..4, where ``c_k`` counts how often k was hit
    by two
    draws from {1..4}; with probability 0.1 the absolute value; a random sign; with probability 0.1 a
    tanh window.
    """
    L = x[-1] - x[0]
    out = np.empty((n, x.size))
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        picks = rng.integers(1, 5, size=2)
        c = np.array([(picks == k).sum() for k in range(1, 5)])
        amp = rng.uniform(0, 1, 4)
        phase = rng.uniform(0, 2 * np.pi, 4)
        k = np.arange(1, 5)
        u = (amp[:, None] * np.sin(2 * np.pi * (k * c)[:, None] * x[None, :] / L + phase[:, None])).sum(0)
        if rng.uniform() < 0.1:
            u = np.abs(u)
        u = u * rng.choice([-1.0, 1.0])
        if rng.uniform() < 0.1:
            xl, xr = rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9)
            win = 0.5 * (np.tanh((x - xl) / 0.01) - np.tanh((x - xr) / 0.01))
            u = u * win
        out[i] = u
    return out


def generate(
    n: int,
    nx: int = 256,
    refine: int = 4,
    n_frames: int = 20,
    frame_dt: float = 0.05,
    nu: float = 1e-2,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    dtype: str = "float64",
    progress: bool = True,
):
    """Solve on ``nx * refine`` cells, average blocks of ``refine`` cells down to ``nx`` (finite-volume cell
    averages). Returns ``(data [n, nx, n_frames, 1] float32, attrs)``."""
    m = nx * refine
    dx = 1.0 / m
    x = (np.arange(m) + 0.5) * dx
    u0 = initial_condition(n, x, seed)
    tdt = getattr(torch, dtype)
    chunks = []
    with bar(total=n * n_frames, desc=f"Burgers nu={nu:g}", unit="traj-frame", enabled=progress) as pb:
        for start in range(0, n, batch_size):
            b = torch.as_tensor(u0[start : start + batch_size], dtype=tdt, device=device)
            scaled = Scaled(pb, b.shape[0])
            traj = solve(b, nu, dx, n_frames, frame_dt, progress=scaled)
            traj = traj.reshape(b.shape[0], nx, refine, n_frames).mean(2)
            chunks.append(traj.float().cpu())
    data = torch.cat(chunks)[..., None].numpy()
    attrs = dict(
        equation="burgers_1d",
        channels=["u"],
        dx=[1.0 / nx],
        dt=frame_dt,
        boundary="periodic",
        domain=[[0.0, 1.0]],
        parameters=dict(
            nu=nu,
            viscosity="nu/pi",
            cfl=0.25,
            solver_cells=m,
            subsample=refine,
            seed=seed,
            flux="rusanov+muscl-mc",
            first_frame_time=frame_dt,
        ),
    )
    return data, attrs
