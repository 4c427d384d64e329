"""PDEBench 2-D shallow water, radial dam break; our own second-order finite-volume solver.

Conservative variables q = (h, hu, hv), gravity g = 1, flat bottom, domain [-2.5, 2.5]^2. Initial state
h = 2 inside a circle of radius r ~ U(0.3, 0.7) at the origin (sample i seeded with ``seed + i``), h = 1
outside, at rest. PDEBench uses PyClaw's Roe solver; we use MUSCL reconstruction of q with the MC limiter,
the HLL flux, SSP-RK2 (Heun) in time with CFL 0.4 per direction, and zero-gradient (outflow) ghost cells.
Only h is saved (one channel), as in PDEBench. Mass ``sum(h) dx^2`` is conserved until a wave reaches a wall.
"""

from __future__ import annotations

import numpy as np
import torch

from scifm.dpot.pde.progress import Scaled, bar

G = 1.0
LENGTH = 5.0


def mc_limited(dm: torch.Tensor, dp: torch.Tensor) -> torch.Tensor:
    dc = 0.5 * (dm + dp)
    mag = torch.minimum(torch.minimum(2 * dm.abs(), 2 * dp.abs()), dc.abs())
    return torch.where(dm * dp > 0, torch.sign(dc) * mag, torch.zeros_like(dm))


def physical_flux_x(q: torch.Tensor, g: float) -> torch.Tensor:
    h, hu, hv = q[:, 0], q[:, 1], q[:, 2]
    u = hu / h
    return torch.stack([hu, hu * u + 0.5 * g * h * h, hv * u], 1)


def hll_x(ql: torch.Tensor, qr: torch.Tensor, g: float) -> torch.Tensor:
    """HLL flux through x-faces between states ``ql`` and ``qr`` ``[B, 3, ...]``."""
    ul, ur = ql[:, 1] / ql[:, 0], qr[:, 1] / qr[:, 0]
    cl, cr = torch.sqrt(g * ql[:, 0]), torch.sqrt(g * qr[:, 0])
    sl = torch.clamp(torch.minimum(ul - cl, ur - cr), max=0.0).unsqueeze(1)
    sr = torch.clamp(torch.maximum(ul + cl, ur + cr), min=0.0).unsqueeze(1)
    fl, fr = physical_flux_x(ql, g), physical_flux_x(qr, g)
    return (sr * fl - sl * fr + sl * sr * (qr - ql)) / (sr - sl)


def flux_divergence_x(q: torch.Tensor, dx: float, g: float) -> torch.Tensor:
    """``(F_{i+1/2} - F_{i-1/2}) / dx`` along axis -2 of ``q [B, 3, X, Y]`` with outflow ghost cells."""
    p = torch.cat([q[:, :, :1], q[:, :, :1], q, q[:, :, -1:], q[:, :, -1:]], 2)  # two ghost layers
    dm = p[:, :, 1:-1] - p[:, :, :-2]
    dp = p[:, :, 2:] - p[:, :, 1:-1]
    s = mc_limited(dm, dp)  # slopes of cells 1..X+2 of the padded array
    c = p[:, :, 1:-1]
    ql = (c + 0.5 * s)[:, :, :-1]
    qr = (c - 0.5 * s)[:, :, 1:]
    f = hll_x(ql, qr, g)  # X + 1 faces
    return (f[:, :, 1:] - f[:, :, :-1]) / dx


def rhs(q: torch.Tensor, dx: float, g: float = G) -> torch.Tensor:
    """``-div F(q)`` for ``q [B, 3, X, Y]``; the y sweep reuses the x flux with the momenta swapped."""
    swap = [0, 2, 1]
    fx = flux_divergence_x(q, dx, g)
    qt = q[:, swap].transpose(-1, -2)
    fy = flux_divergence_x(qt, dx, g).transpose(-1, -2)[:, swap]
    return -(fx + fy)


def solve(
    q0: torch.Tensor, dx: float, n_frames: int, frame_dt: float, g: float = G, cfl: float = 0.4, progress=None
) -> torch.Tensor:
    """SSP-RK2 from ``q0 [B, 3, X, Y]``; snapshots at ``frame_dt, ..., n_frames frame_dt``: ``[B, 3, X,
    Y, T]``."""
    q = q0
    t = 0.0
    out = []
    for k in range(1, n_frames + 1):
        t_next = k * frame_dt
        while t < t_next - 1e-12:
            h = q[:, 0]
            c = torch.sqrt(g * h)
            speed = torch.maximum((q[:, 1] / h).abs(), (q[:, 2] / h).abs()) + c
            dt = min(cfl * dx / float(speed.max()), t_next - t)
            q1 = q + dt * rhs(q, dx, g)
            q = 0.5 * (q + q1 + dt * rhs(q1, dx, g))
            t += dt
        out.append(q)
        if progress is not None:
            progress.update(1)
    return torch.stack(out, -1)


def dam_break_state(radii: np.ndarray, m: int) -> np.ndarray:
    """Initial ``[n, 3, m, m]`` state on the ``m x m`` cell centres of [-2.5, 2.5]^2."""
    x = -LENGTH / 2 + (np.arange(m) + 0.5) * LENGTH / m
    r = np.sqrt(x[:, None] ** 2 + x[None, :] ** 2)
    h = np.where(r[None] < radii[:, None, None], 2.0, 1.0)
    return np.stack([h, np.zeros_like(h), np.zeros_like(h)], 1)


def generate(
    n: int,
    nx: int = 64,
    refine: int = 2,
    n_frames: int = 20,
    frame_dt: float = 0.05,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float64",
    progress: bool = True,
):
    """Solve on ``nx * refine`` cells per side, restrict by block means to ``nx``.
    Returns ``(data [n, nx, nx, n_frames, 1] float32 (h only), attrs)``."""
    m = nx * refine
    dx = LENGTH / m
    radii = np.array([np.random.default_rng(seed + i).uniform(0.3, 0.7) for i in range(n)])
    tdt = getattr(torch, dtype)
    chunks = []
    with bar(total=n * n_frames, desc="shallow-water", unit="traj-frame", enabled=progress) as pb:
        for start in range(0, n, batch_size):
            q0 = torch.as_tensor(
                dam_break_state(radii[start : start + batch_size], m), dtype=tdt, device=device
            )
            traj = solve(q0, dx, n_frames, frame_dt, progress=Scaled(pb, q0.shape[0]))[:, 0]  # [b, m, m, T]
            b, _, _, T = traj.shape
            traj = traj.reshape(b, nx, refine, nx, refine, T).mean((2, 4))
            chunks.append(traj.float().cpu())
    data = torch.cat(chunks)[..., None].numpy()
    attrs = dict(
        equation="shallow_water_2d",
        channels=["h"],
        dx=[LENGTH / nx, LENGTH / nx],
        dt=frame_dt,
        boundary="outflow",
        domain=[[-2.5, 2.5], [-2.5, 2.5]],
        parameters=dict(
            g=G,
            h_in=2.0,
            h_out=1.0,
            radius="U(0.3,0.7)",
            solver_grid=m,
            subsample=refine,
            flux="hll+muscl-mc",
            integrator="ssp-rk2",
            cfl=0.4,
            seed=seed,
            first_frame_time=frame_dt,
        ),
    )
    return data, attrs
