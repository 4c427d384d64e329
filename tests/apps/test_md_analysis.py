"""Analysis on synthetic data with known answers: block SEM of AR(1), random-walk diffusion, OU
Green–Kubo viscosity, ideal-gas and lattice RDFs, Einstein vs Nernst–Einstein conductivity."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from scipy import constants as C

from scifm.md.analysis.blocks import ar1_sem, block_average, slope_sem
from scifm.md.analysis.conductivity import einstein, nernst_einstein
from scifm.md.analysis.correlation import autocorrelation, msd_fft
from scifm.md.analysis.msd import diffusion, unwrap
from scifm.md.analysis.rdf import rdf
from scifm.md.analysis.viscosity import green_kubo


def _ar1(phi, n, rng, sigma=1.0):
    eps = rng.normal(0, sigma, n)
    x = np.empty(n)
    x[0] = eps[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + eps[t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.9])
def test_block_sem_matches_ar1_analytic(phi):
    rng = np.random.default_rng(1)
    n = 1 << 16
    b = block_average(_ar1(phi, n, rng))
    exact = ar1_sem(phi, 1.0, n)
    assert b.sem == pytest.approx(exact, rel=0.2)
    # naive SEM (ignoring correlation) is wrong by sqrt((1+φ)/(1-φ)) ≈ 4.4 at φ = 0.9
    if phi > 0:
        naive = b.sems[0]
        assert naive < 0.4 * exact


def test_slope_sem_matches_the_exact_ols_error_under_ar1_noise():
    # y = a t + AR(1) noise (φ = 0.9): the exact variance of the OLS slope is cᵀΣc/(cᵀc)², c = t - t̄,
    # Σ_ij = φ^|i-j|/(1-φ²); the naive independent-residual error is too small by ≈ √19 ≈ 4.4
    rng = np.random.default_rng(3)
    n, phi, a = 2048, 0.9, 2.5e-3
    t = np.arange(n) * 0.01
    c = t - t.mean()
    lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    exact = np.sqrt(c @ (phi**lag / (1 - phi**2)) @ c) / (c @ c)
    fits = [slope_sem(t, a * t + _ar1(phi, n, rng)) for _ in range(40)]
    slopes, sems = np.array([f[0] for f in fits]), np.array([f[1] for f in fits])
    assert np.mean(sems) == pytest.approx(exact, rel=0.25)
    assert np.std(slopes) == pytest.approx(exact, rel=0.35)  # the estimates scatter as predicted
    assert abs(np.mean(slopes) - a) < 3 * exact / np.sqrt(len(fits))
    naive = np.sqrt(1 / (1 - phi**2) / (c @ c))
    assert naive < 0.4 * exact
    assert all(np.isnan(slope_sem([0.0, 1.0], [1.0, 2.0])))


def test_block_sem_of_constant_is_zero():
    assert block_average(np.full(100, 3.0)).sem == 0.0


def test_msd_fft_equals_direct_sum():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(50, 4, 3)), axis=0)
    direct = [np.mean([((x[t + k] - x[t]) ** 2).sum(-1).mean() for t in range(50 - k)]) for k in range(20)]
    np.testing.assert_allclose(msd_fft(x, 19), direct, rtol=1e-10, atol=1e-10)
    acf_direct = [np.mean([x[t, 0, 0] * x[t + k, 0, 0] for t in range(50 - k)]) for k in range(10)]
    np.testing.assert_allclose(autocorrelation(x[:, 0, 0], 9), acf_direct, rtol=1e-10)


def test_random_walk_diffusion_within_error():
    rng = np.random.default_rng(2)
    d_true = 2e-9  # m²/s = 2e-4 Å²/fs
    dt = 100.0  # fs
    step_sd = np.sqrt(2 * d_true / 1e-5 * dt)  # per Cartesian component, Å
    x = np.cumsum(rng.normal(0, step_sd, size=(1000, 256, 3)), axis=0)
    fit = diffusion(x, dt, n_blocks=5)
    assert np.isfinite(fit.D_sem_m2_s) and fit.D_sem_m2_s > 0
    assert abs(fit.D_m2_s - d_true) < 4 * fit.D_sem_m2_s + 0.02 * d_true
    assert fit.D_m2_s == pytest.approx(d_true, rel=0.15)


def test_unwrap_recovers_continuous_paths():
    rng = np.random.default_rng(3)
    cell = np.diag([5.0, 6.0, 7.0])
    x = np.cumsum(rng.normal(0, 0.4, size=(300, 5, 3)), axis=0)
    wrapped = x - np.floor(x @ np.linalg.inv(cell)) @ cell
    un = unwrap(wrapped, np.repeat(cell[None], 300, axis=0))
    np.testing.assert_allclose(un - un[0], x - x[0], atol=1e-9)


def test_green_kubo_of_ornstein_uhlenbeck_signal():
    # OU: ACF = s² exp(-t/τ) -> ∫ = s² τ; η = V s² τ / (k_B T)
    rng = np.random.default_rng(4)
    tau, s, dt, n = 50.0, 200.0, 5.0, 200_000  # fs, bar, fs, samples
    a = np.exp(-dt / tau)
    p = np.empty((n, 3))
    p[0] = rng.normal(0, s, 3)
    noise = rng.normal(0, s * np.sqrt(1 - a * a), size=(n, 3))
    for t in range(1, n):
        p[t] = a * p[t - 1] + noise[t]
    volume, temp = 20000.0, 300.0
    # the trapezoid rule on a sampled exponential overestimates by (dt/τ)/12 relative; use the exact sum
    integral = s**2 * dt * 0.5 * (1 + a) / (1 - a) * (1 - a ** round(600 / dt))
    expected = volume * 1e-30 / (C.k * temp) * integral * 1e10 * 1e-15 * 1e3
    gk = green_kubo(p, dt, volume, temp, t_max_fs=600.0, n_blocks=10)
    assert np.isfinite(gk.eta_sem_mPa_s)
    assert abs(gk.eta_mPa_s - expected) < 4 * gk.eta_sem_mPa_s
    assert gk.eta_mPa_s == pytest.approx(expected, rel=0.1)


def test_rdf_of_ideal_gas_is_one():
    rng = np.random.default_rng(5)
    frames = [
        Atoms("Ar" * 200, positions=rng.uniform(0, 15, (200, 3)), cell=np.eye(3) * 15, pbc=True)
        for _ in range(10)
    ]
    g = rdf(frames, r_max=7.0, n_bins=14)
    mask = g.r > 2.0
    assert np.all(np.abs(g.g[mask] - 1) < 0.1)
    assert np.all(np.abs(g.g[mask] - 1) < 5 * g.g_sem[mask] + 0.02)


def test_rdf_of_simple_cubic_lattice_counts_neighbours():
    a0 = 2.0
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3) * a0
    frames = [Atoms("Ar" * len(grid), positions=grid, cell=np.eye(3) * 5 * a0, pbc=True)]
    g = rdf(frames, r_max=3.0, n_bins=30)  # bins of 0.1 Å
    first = np.flatnonzero(g.g > 0)[0]
    assert g.r[first] == pytest.approx(a0, abs=0.06)  # nothing closer than the lattice constant
    k1 = np.searchsorted(g.r, 2.5)
    assert g.coordination[k1] == pytest.approx(6.0)  # first shell: 6 neighbours
    assert g.coordination[-1] == pytest.approx(18.0)  # + 12 at a√2 = 2.83 Å


def test_conductivity_einstein_sees_ion_pairing_and_matches_ne_for_free_ions():
    rng = np.random.default_rng(6)
    n_t, n_pairs, dt, sd = 2000, 32, 50.0, 0.3
    volume, temp = 8000.0, 300.0
    walk = lambda: np.cumsum(rng.normal(0, sd, size=(n_t, n_pairs, 3)), axis=0)  # noqa: E731
    z = np.r_[np.ones(n_pairs), -np.ones(n_pairs)]
    d = sd**2 / (2 * dt) * 1e-5  # m²/s
    ne = nernst_einstein({"+": n_pairs, "-": n_pairs}, {"+": 1, "-": -1}, {"+": d, "-": d}, volume, temp)
    free = einstein(np.concatenate([walk(), walk()], axis=1), z, dt, volume, temp, n_blocks=5)
    assert abs(free.sigma_S_m - ne) < 4 * free.sigma_sem_S_m + 0.1 * ne
    # bound pairs move together: the translational dipole does not diffuse, NE still counts them
    c = walk()
    bound = einstein(np.concatenate([c, c + 1.0], axis=1), z, dt, volume, temp)
    assert abs(bound.sigma_S_m) < 1e-6 * ne
    expected = C.e**2 / (C.k * temp * volume * 1e-30) * 2 * n_pairs * d
    assert ne == pytest.approx(expected)
