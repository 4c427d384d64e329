"""Each generator converges at its design order, or conserves what it must."""

import math

import numpy as np
import pytest
import torch

from scifm.dpot.pde import burgers, diffusion_reaction, navier_stokes, shallow_water
from scifm.dpot.pde.grf import grf_torus_2d

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ Navier-Stokes
def test_ns_single_mode_decays_exactly():
    # A one-mode vorticity has u . grad w = 0, so w(t) = exp(-nu |2 pi k|^2 t) w0 with |k|^2 = 2.
    s, nu, t = 32, 1e-2, 0.5
    x = torch.arange(s, dtype=torch.float64) / s
    w0 = torch.cos(2 * math.pi * (x[:, None] + x[None, :]))[None]
    out = navier_stokes.VorticitySolver(s, nu, 1e-2, None, "cn-heun").run(w0, 1, t)[..., 0]
    exact = w0 * math.exp(-nu * 8 * math.pi**2 * t)
    assert (out - exact).abs().max() < 1e-5


@pytest.mark.parametrize("scheme, order", [("cn-euler", 1), ("cn-heun", 2)])
def test_ns_time_convergence(scheme, order):
    w0 = grf_torus_2d(2, 32, generator=torch.Generator().manual_seed(0))
    f = navier_stokes.fno_forcing(32)
    sols = [
        navier_stokes.VorticitySolver(32, 1e-3, dt, f, scheme).run(w0, 1, 0.2)[..., 0]
        for dt in (4e-3, 2e-3, 1e-3)
    ]
    ratio = float((sols[0] - sols[1]).norm() / (sols[1] - sols[2]).norm())
    assert abs(math.log2(ratio) - order) < 0.15, ratio


def test_ns_fine_grid_subsampling_agrees_with_coarse_solve():
    # The same band-limited initial field solved on 32^2 and on 64^2 (then every 2nd point) agrees closely:
    # the subsampled fine solve is a resolved solution, not an interpolation artefact.
    g = torch.Generator().manual_seed(1)
    w_c = grf_torus_2d(1, 16, generator=g)
    spec = torch.fft.fft2(w_c, norm="forward")
    big = torch.zeros(1, 64, 64, dtype=spec.dtype)
    big[:, :8, :8], big[:, -8:, :8], big[:, :8, -8:], big[:, -8:, -8:] = (
        spec[:, :8, :8],
        spec[:, -8:, :8],
        spec[:, :8, -8:],
        spec[:, -8:, -8:],
    )
    w_f = torch.fft.ifft2(big, norm="forward").real
    w_32 = w_f[:, ::2, ::2]
    f32, f64 = navier_stokes.fno_forcing(32), navier_stokes.fno_forcing(64)
    a = navier_stokes.VorticitySolver(32, 1e-3, 2e-3, f32, "cn-heun").run(w_32, 1, 0.5)[..., 0]
    b = navier_stokes.VorticitySolver(64, 1e-3, 2e-3, f64, "cn-heun").run(w_f, 1, 0.5)[..., 0][:, ::2, ::2]
    assert float((a - b).norm() / b.norm()) < 1e-3


def test_ns_generate_layout_and_zero_mean():
    data, attrs = navier_stokes.generate(
        2, nx=8, refine=2, n_frames=2, frame_dt=0.02, dt=1e-2, scheme="cn-heun", progress=False
    )
    assert data.shape == (2, 8, 8, 2, 1) and data.dtype == np.float32
    assert attrs["parameters"]["solver_grid"] == 16 and attrs["channels"] == ["vorticity"]
    data, _ = navier_stokes.generate(
        2, nx=16, refine=1, n_frames=2, frame_dt=0.02, dt=1e-2, scheme="cn-heun", progress=False
    )
    assert abs(data.mean()) < 1e-5  # forcing and initial field have zero mean; the mean mode is conserved


# ------------------------------------------------------------------------------------------------ Burgers
def test_burgers_conserves_mass():
    x = (np.arange(128) + 0.5) / 128
    u0 = torch.as_tensor(burgers.initial_condition(4, x, seed=3))
    out = burgers.solve(u0, nu=1e-3, dx=1 / 128, n_frames=3, frame_dt=0.1)
    assert torch.allclose(out.sum(1), u0.sum(1)[:, None].expand(-1, 3), atol=1e-10)


def test_burgers_second_order_in_space():
    def run(m):
        x = (np.arange(m) + 0.5) / m
        u0 = torch.as_tensor(0.5 + 0.4 * np.sin(2 * np.pi * x))[None]
        return burgers.solve(u0, nu=0.01, dx=1 / m, n_frames=1, frame_dt=0.1)[0, :, 0]

    ref = run(512)
    errs = [float((run(m) - ref.reshape(m, -1).mean(1)).abs().mean()) for m in (32, 64, 128)]
    assert errs[0] / errs[1] > 3.0 and errs[1] / errs[2] > 3.0, errs


# --------------------------------------------------------------------------------- diffusion-reaction
def _cell_average_mode(m, k):
    # exact cell averages of cos(k pi (x + 1) / 2) on m cells of [-1, 1]
    edges = np.linspace(-1, 1, m + 1)
    a = k * np.pi / 2
    return (np.sin(a * (edges[1:] + 1)) - np.sin(a * (edges[:-1] + 1))) / (a * (2 / m))


def test_dr_neumann_diffusion_matches_exact_mode():
    # With the reaction off, cos(pi (x+1)/2) cos(pi (y+1)) decays at rate D (pi^2/4 + pi^2); the
    # finite-volume Laplacian is second order.
    t = 0.5
    errs = []
    for m in (16, 32, 64):
        mode = np.outer(_cell_average_mode(m, 1), _cell_average_mode(m, 2))
        s0 = torch.as_tensor(np.stack([mode, mode]))[None]
        out = diffusion_reaction.solve(s0, 2 / m, 1, t, reaction=False)[0, :, :, :, 0]
        decay = np.exp(
            -np.array([diffusion_reaction.DU, diffusion_reaction.DV])[:, None, None]
            * (np.pi**2 / 4 + np.pi**2)
            * t
        )
        errs.append(float(np.abs(out.numpy() - decay * mode).max()))
    assert errs[0] / errs[1] > 3.5 and errs[1] / errs[2] > 3.5, errs


def test_dr_pure_diffusion_conserves_mass():
    s0 = torch.randn(2, 2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = diffusion_reaction.solve(s0, 2 / 16, 2, 0.5, reaction=False)
    assert torch.allclose(out.sum((2, 3)), s0.sum((2, 3))[..., None].expand(-1, -1, 2), atol=1e-10)


def test_dr_full_model_converges_in_space():
    def run(m):
        x = -1 + (np.arange(m) + 0.5) * 2 / m
        u = np.cos(np.pi * (x[:, None] + 1) / 2) * np.cos(np.pi * (x[None, :] + 1))
        s0 = torch.as_tensor(np.stack([u, 0.5 * u.T]))[None]
        return diffusion_reaction.solve(s0, 2 / m, 1, 0.5, dt=2e-3)[0, :, :, :, 0]

    ref = run(128)
    errs = [
        float((run(m) - diffusion_reaction.block_mean(ref[..., None], 128 // m)[..., 0]).abs().max())
        for m in (16, 32)
    ]
    assert errs[0] / errs[1] > 3.0, errs


# ----------------------------------------------------------------------------------------- shallow water
def test_swe_dam_break_conserves_mass_and_symmetry():
    m = 32
    q0 = torch.as_tensor(shallow_water.dam_break_state(np.array([0.5]), m))
    dx = shallow_water.LENGTH / m
    out = shallow_water.solve(q0, dx, 2, 0.25)  # waves stay inside the box until t ~ 1.2
    mass = out[:, 0].sum((1, 2)) * dx * dx
    assert torch.allclose(mass, (q0[:, 0].sum() * dx * dx).expand_as(mass), rtol=1e-12)
    h = out[0, 0, :, :, -1]
    assert torch.allclose(h, h.T, atol=1e-12) and torch.allclose(h, h.flip(0), atol=1e-12)
    assert float(h.max()) < 2.0 and float(h.min()) > 0.4  # the dam has started to collapse


def test_swe_converges_on_smooth_hump():
    def run(m):
        x = -2.5 + (np.arange(m) + 0.5) * 5 / m
        r2 = x[:, None] ** 2 + x[None, :] ** 2
        h = 1 + 0.1 * np.exp(-r2 / 0.3)
        q0 = torch.as_tensor(np.stack([h, 0 * h, 0 * h]))[None]
        return shallow_water.solve(q0, 5 / m, 1, 0.3)[0, 0, :, :, 0]

    ref = run(256)
    errs = []
    for m in (32, 64):
        r = 256 // m
        errs.append(float((run(m) - ref.reshape(m, r, m, r).mean((1, 3))).abs().mean()))
    assert errs[0] / errs[1] > 2.5, errs
