"""FNO's 2-D incompressible Navier-Stokes in vorticity form on the unit torus (pseudo-spectral).

    d_t w + u . grad w = nu Lap w + f,   u = (d_y psi, -d_x psi),   -Lap psi = w,   (x, y) in [0, 1)^2

Forcing ``f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))`` and a Gaussian random field initial vorticity
(alpha 2.5, tau 7), as in the FNO data. The diffusion term is Crank-Nicolson; the advection + forcing term is
explicit: forward Euler (``scheme="cn-euler"``, FNO's scheme, first order in time) or Heun's trapezoidal
predictor-corrector (``scheme="cn-heun"``, second order, lets a 10x larger step reach the same accuracy).
The nonlinear term is de-aliased with the 2/3 rule. Axis -2 is x, axis -1 is y; fields are dimensionless.
"""

from __future__ import annotations

import math

import torch

from scifm.dpot.pde.grf import grf_torus_2d
from scifm.dpot.pde.progress import Scaled, bar

SCHEMES = ("cn-euler", "cn-heun")


def fno_forcing(s: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """FNO's forcing on the grid ``x_i = i/s``; ``[s, s]``."""
    x = torch.arange(s, dtype=dtype, device=device) / s
    xy = x[:, None] + x[None, :]
    return 0.1 * (torch.sin(2 * math.pi * xy) + torch.cos(2 * math.pi * xy))


class VorticitySolver:
    """Batched pseudo-spectral stepper for ``[B, s, s]`` vorticity fields."""

    def __init__(
        self,
        s: int,
        nu: float,
        dt: float,
        forcing: torch.Tensor | None,
        scheme: str = "cn-heun",
        dtype=torch.float64,
        device=None,
    ):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
        self.s, self.nu, self.dt, self.scheme = s, nu, dt, scheme
        kx = torch.fft.fftfreq(s, d=1.0 / s, dtype=dtype, device=device)[:, None]
        ky = torch.fft.rfftfreq(s, d=1.0 / s, dtype=dtype, device=device)[None, :]
        self.ikx = 2j * math.pi * kx  # spectral d/dx
        self.iky = 2j * math.pi * ky
        lap = 4 * math.pi**2 * (kx**2 + ky**2)
        self.lap = lap
        inv = lap.clone()
        inv[0, 0] = 1.0  # the mean mode of psi is arbitrary: set it to zero below
        self.inv_lap = 1.0 / inv
        self.inv_lap[0, 0] = 0.0
        kmax = s // 2
        self.dealias = ((kx.abs() <= 2.0 / 3.0 * kmax) & (ky.abs() <= 2.0 / 3.0 * kmax)).to(dtype)
        self.f_hat = None if forcing is None else torch.fft.rfft2(forcing.to(device=device, dtype=dtype))
        half = 0.5 * dt * nu * lap
        self.cn_num, self.cn_den = 1.0 - half, 1.0 + half

    def advection(self, w_hat: torch.Tensor) -> torch.Tensor:
        """De-aliased ``u . grad w`` in Fourier space."""
        psi_hat = w_hat * self.inv_lap
        s = (self.s, self.s)
        u = torch.fft.irfft2(self.iky * psi_hat, s=s)
        v = torch.fft.irfft2(-self.ikx * psi_hat, s=s)
        wx = torch.fft.irfft2(self.ikx * w_hat, s=s)
        wy = torch.fft.irfft2(self.iky * w_hat, s=s)
        return torch.fft.rfft2(u * wx + v * wy) * self.dealias

    def explicit(self, w_hat: torch.Tensor) -> torch.Tensor:
        rhs = -self.advection(w_hat)
        return rhs if self.f_hat is None else rhs + self.f_hat

    def step(self, w_hat: torch.Tensor) -> torch.Tensor:
        e0 = self.explicit(w_hat)
        pred = (self.cn_num * w_hat + self.dt * e0) / self.cn_den
        if self.scheme == "cn-euler":
            return pred
        e1 = self.explicit(pred)
        return (self.cn_num * w_hat + 0.5 * self.dt * (e0 + e1)) / self.cn_den

    def run(self, w0: torch.Tensor, n_frames: int, frame_dt: float, progress=None) -> torch.Tensor:
        """Integrate ``w0 [B, s, s]``; returns the ``n_frames`` snapshots at ``t = frame_dt, 2 frame_dt, ...``
        as ``[B, s, s, n_frames]`` (t = 0 excluded, as in FNO's files)."""
        steps = max(1, round(frame_dt / self.dt))
        if abs(steps * self.dt - frame_dt) > 1e-9 * max(1.0, frame_dt):
            raise ValueError(f"frame interval {frame_dt} is not a multiple of dt {self.dt}")
        w_hat = torch.fft.rfft2(w0)
        out = []
        for _ in range(n_frames):
            for _ in range(steps):
                w_hat = self.step(w_hat)
            out.append(torch.fft.irfft2(w_hat, s=(self.s, self.s)))
            if progress is not None:
                progress.update(1)
        return torch.stack(out, dim=-1)


def generate(
    n: int,
    nx: int = 64,
    refine: int = 2,
    n_frames: int = 20,
    frame_dt: float = 1.0,
    nu: float = 1e-3,
    dt: float = 1e-4,
    scheme: str = "cn-euler",
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float64",
    progress: bool = True,
):
    """``n`` trajectories, solved at ``nx * refine`` points per side and subsampled (every ``refine``-th
    point)
    to ``nx``. Returns ``(data [n, nx, nx, n_frames, 1] float32, attrs)``."""
    s = nx * refine
    tdt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(seed)
    solver = VorticitySolver(s, nu, dt, fno_forcing(s), scheme, dtype=tdt, device=device)
    chunks = []
    with bar(total=n * n_frames, desc=f"NS nu={nu:g}", unit="traj-frame", enabled=progress) as pb:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            w0 = grf_torus_2d(b, s, generator=gen).to(device=device, dtype=tdt)
            sub = Scaled(pb, b)
            traj = solver.run(w0, n_frames, frame_dt, progress=sub)
            chunks.append(traj[:, ::refine, ::refine].float().cpu())
    data = torch.cat(chunks)[..., None].numpy()
    attrs = dict(
        equation="navier_stokes_2d",
        channels=["vorticity"],
        dx=[1.0 / nx, 1.0 / nx],
        dt=frame_dt,
        boundary="periodic",
        domain=[[0.0, 1.0], [0.0, 1.0]],
        parameters=dict(
            nu=nu,
            forcing="0.1*(sin(2pi(x+y))+cos(2pi(x+y)))",
            ic="GRF alpha=2.5 tau=7 sigma=7^1.5",
            solver_grid=s,
            subsample=refine,
            solver_dt=dt,
            scheme=scheme,
            seed=seed,
            first_frame_time=frame_dt,
        ),
    )
    return data, attrs
