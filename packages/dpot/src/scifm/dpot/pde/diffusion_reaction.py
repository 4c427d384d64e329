"""PDEBench 2-D diffusion-reaction (FitzHugh-Nagumo activator u, inhibitor v), cell-centred finite volume.

    d_t u = Du Lap u + u - u^3 - k - v,   d_t v = Dv Lap v + u - v,   (x, y) in [-1, 1]^2

Du = 1e-3, Dv = 5e-3, k = 5e-3; zero-flux (Neumann) walls built into the 5-point Laplacian; i.i.d. standard
normal initial cells (sample i seeded with ``seed + i``, as PDEBench seeds by sample index). PDEBench
integrates
with scipy's RK45; we use classical RK4 with a fixed step well inside its stability limit, vectorised in
torch.
"""

from __future__ import annotations

import numpy as np
import torch

from scifm.dpot.pde.progress import Scaled, bar

DU, DV, K = 1e-3, 5e-3, 5e-3


def laplacian_neumann(u: torch.Tensor, dx: float) -> torch.Tensor:
    """5-point Laplacian of cell averages ``u [..., X, Y]`` with zero flux through the walls."""
    p = torch.nn.functional.pad(u.unsqueeze(0) if u.dim() == 2 else u, (1, 1, 1, 1), mode="replicate")
    if u.dim() == 2:
        p = p[0]
    return (p[..., 2:, 1:-1] + p[..., :-2, 1:-1] + p[..., 1:-1, 2:] + p[..., 1:-1, :-2] - 4 * u) / (dx * dx)


def rhs(
    state: torch.Tensor, dx: float, du: float = DU, dv: float = DV, k: float = K, reaction: bool = True
) -> torch.Tensor:
    """Time derivative of ``state [B, 2, X, Y]`` (channels u, v)."""
    u, v = state[:, 0], state[:, 1]
    lu, lv = du * laplacian_neumann(u, dx), dv * laplacian_neumann(v, dx)
    if reaction:
        lu = lu + u - u**3 - k - v
        lv = lv + u - v
    return torch.stack([lu, lv], 1)


def stable_dt(dx: float, frame_dt: float, du: float = DU, dv: float = DV) -> float:
    """A step that divides ``frame_dt`` and is far inside RK4's stability limit for diffusion and the
    cubic."""
    limit = min(0.25 * dx * dx / max(du, dv), 0.01)
    return frame_dt / int(np.ceil(frame_dt / limit))


def solve(
    state0: torch.Tensor,
    dx: float,
    n_frames: int,
    frame_dt: float,
    dt: float | None = None,
    reaction: bool = True,
    du: float = DU,
    dv: float = DV,
    k: float = K,
    progress=None,
) -> torch.Tensor:
    """RK4 from ``state0 [B, 2, X, Y]``; returns snapshots at ``frame_dt, ..., n_frames frame_dt``:
    ``[B, 2, X, Y, T]``."""
    dt = stable_dt(dx, frame_dt, du, dv) if dt is None else dt
    steps = round(frame_dt / dt)

    def f(s):
        return rhs(s, dx, du, dv, k, reaction)

    y = state0
    out = []
    for _ in range(n_frames):
        for _ in range(steps):
            k1 = f(y)
            k2 = f(y + 0.5 * dt * k1)
            k3 = f(y + 0.5 * dt * k2)
            k4 = f(y + dt * k3)
            y = y + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(y)
        if progress is not None:
            progress.update(1)
    return torch.stack(out, -1)


def block_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Average ``r x r`` blocks of ``[..., X, Y, T]`` (finite-volume restriction to a coarser grid)."""
    *lead, X, Y, T = x.shape
    return x.reshape(*lead, X // r, r, Y // r, r, T).mean((-4, -2))


def generate(
    n: int,
    nx: int = 64,
    refine: int = 1,
    n_frames: int = 20,
    frame_dt: float = 0.25,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float64",
    progress: bool = True,
):
    """Solve on ``nx * refine`` cells per side (initial cells i.i.d. N(0, 1) on that grid), restrict by block
    averages to ``nx``. Returns ``(data [n, nx, nx, n_frames, 2] float32, attrs)``."""
    m = nx * refine
    dx = 2.0 / m
    tdt = getattr(torch, dtype)
    chunks = []
    with bar(total=n * n_frames, desc="diffusion-reaction", unit="traj-frame", enabled=progress) as pb:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            ic = np.stack(
                [np.random.default_rng(seed + start + i).standard_normal((2, m, m)) for i in range(b)]
            )
            y0 = torch.as_tensor(ic, dtype=tdt, device=device)
            traj = solve(y0, dx, n_frames, frame_dt, progress=Scaled(pb, b))  # [b, 2, m, m, T]
            traj = block_mean(traj, refine) if refine > 1 else traj
            chunks.append(traj.permute(0, 2, 3, 4, 1).float().cpu())
    data = torch.cat(chunks).numpy()
    attrs = dict(
        equation="diffusion_reaction_2d",
        channels=["u", "v"],
        dx=[2.0 / nx, 2.0 / nx],
        dt=frame_dt,
        boundary="neumann",
        domain=[[-1.0, 1.0], [-1.0, 1.0]],
        parameters=dict(
            Du=DU,
            Dv=DV,
            k=K,
            ic="iid N(0,1) per solver cell",
            solver_grid=m,
            subsample=refine,
            integrator="rk4",
            solver_dt=stable_dt(dx, frame_dt),
            seed=seed,
            first_frame_time=frame_dt,
        ),
    )
    return data, attrs
