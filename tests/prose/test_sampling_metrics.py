"""SNIS and SMC recover known targets from a wrong proposal; metrics on distributions with known distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scifm.prose import metrics, sampling


def _gauss(mu, sigma):
    mu = torch.as_tensor(mu, dtype=torch.float64)

    def energy_grad(x):
        d = (x - mu) / sigma**2
        return 0.5 * ((x - mu) ** 2).sum(-1) / sigma**2, d

    return energy_grad


def test_kish_ess_known_values():
    assert sampling.kish_ess(torch.zeros(10)) == pytest.approx(1.0)
    lw = torch.tensor([0.0, -torch.inf, -torch.inf, -torch.inf])
    assert sampling.kish_ess(lw) == pytest.approx(1.0)  # only finite weights count
    lw = torch.log(torch.tensor([1.0, 1.0, 2.0]))
    assert sampling.kish_ess(lw) == pytest.approx(16 / 6 / 3)
    assert metrics.kish_ess(lw.numpy()) == pytest.approx(16 / 6 / 3)


def test_clipping_drops_the_largest_log_weights():
    lw = torch.arange(1000.0)
    keep = sampling.clip_log_weights(lw, 0.002)
    assert int(keep.sum()) == 998 and not keep[-2:].any()


def test_systematic_resampling_is_unbiased_and_low_variance():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    idx = sampling.systematic_resample(torch.log(p), 1000, g)
    counts = torch.bincount(idx, minlength=4).double() / 1000
    assert torch.allclose(counts, p, atol=2e-3)  # systematic: error <= 1/n per category


@pytest.mark.parametrize("dim", [1, 2])
def test_snis_recovers_target_mean(dim):
    g = torch.Generator().manual_seed(0)
    mu_t = torch.tensor([1.0, -0.5][:dim], dtype=torch.float64)
    x = 1.5 * torch.randn(20000, dim, generator=g, dtype=torch.float64)  # proposal N(0, 1.5^2)
    es = _gauss(torch.zeros(dim), 1.5)(x)[0]
    et = _gauss(mu_t, 0.7)(x)[0]
    r = sampling.snis(es, et, clip=0.002, generator=g)
    mean_w = (r["weights"][:, None] * x).sum(0)
    mean_r = x[r["indices"]].mean(0)
    assert x.mean(0).sub(mu_t).abs().max() > 0.4  # the proposal really is wrong
    assert torch.allclose(mean_w, mu_t, atol=0.05)
    assert torch.allclose(mean_r, mu_t, atol=0.06)
    assert 0.05 < r["ess"] < 1.0


@pytest.mark.parametrize("kernel,steps,h", [("ula", 40, 0.02), ("mala", 40, 0.1)])
def test_smc_recovers_target_mean_and_reaches_the_target(kernel, steps, h):
    g = torch.Generator().manual_seed(1)
    mu_t = torch.tensor([1.5, -1.0], dtype=torch.float64)
    x0 = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    res = sampling.smc(
        x0,
        _gauss(torch.zeros(2), 1.0),
        _gauss(mu_t, 0.5),
        n_steps=steps,
        step_size=h,
        kernel=kernel,
        ess_threshold=0.5,
        generator=g,
    )
    x = res["x"]
    assert torch.allclose(x.mean(0), mu_t, atol=0.08)
    assert torch.allclose(x.std(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.06)
    # log Z_target / Z_source = 2 log(0.5 / 1.0) for these two unnormalised Gaussians
    assert res["log_z"] == pytest.approx(2 * math.log(0.5), abs=0.1)
    assert res["n_resamples"] >= 1


def test_smc_with_one_step_is_importance_resampling_to_the_target():
    # With K = 1 the only weight increment is the full E_s - E_t (t goes 0 -> 1): the fixed t grid.
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(20000, 1, generator=g, dtype=torch.float64) * 1.5
    res = sampling.smc(
        x0,
        _gauss(torch.zeros(1), 1.5),
        _gauss(torch.tensor([0.8]), 0.6),
        n_steps=1,
        step_size=1e-6,
        generator=g,
    )
    assert float(res["x"].mean()) == pytest.approx(0.8, abs=0.04)


def test_energy_w2_of_shifted_distributions():
    q = (np.arange(2000) + 0.5) / 2000
    from scipy.stats import norm

    a = norm.ppf(q)
    assert metrics.energy_w2(a, a + 3.0) == pytest.approx(3.0, rel=1e-6)
    # W2 between N(0,1) and N(0, 2^2) is |2 - 1| = 1 in 1-D
    assert metrics.energy_w2(a, 2 * a) == pytest.approx(1.0, rel=2e-2)


def test_torus_w2_wraps_angles():
    a = np.full((50, 2), np.pi - 0.1)
    b = np.full((50, 2), -np.pi + 0.1)
    assert metrics.torus_w2(a, b) == pytest.approx(math.sqrt(2 * 0.2**2), rel=1e-6)
    assert metrics.wasserstein2(a, b) == pytest.approx(math.sqrt(2 * (2 * np.pi - 0.2) ** 2), rel=1e-6)


def test_wasserstein2_point_clouds():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 2))
    assert metrics.wasserstein2(a, a) == pytest.approx(0.0, abs=1e-9)
    assert metrics.wasserstein2(a, a + np.array([3.0, 4.0])) == pytest.approx(5.0, rel=1e-6)


def test_jensen_shannon_known_values():
    assert metrics.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert metrics.js_divergence([1, 1], [1, 1]) == pytest.approx(0.0)
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    expected = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert metrics.js_divergence(p, q) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.normal(-3, 0.3, (500, 2)), rng.normal(3, 0.3, (500, 2))])
    same = np.concatenate([rng.normal(-3, 0.3, (500, 2)), rng.normal(3, 0.3, (500, 2))])
    one_basin = rng.normal(3, 0.3, (1000, 2))
    assert metrics.jsd_macrostates(ref, same, k=4) < 0.01
    # basins (1/2, 1/2) vs (0, 1): JSD = H(1/4, 3/4) - (1 + 0) / 2 = 0.3113 bits
    assert metrics.jsd_macrostates(ref, one_basin, k=4) == pytest.approx(0.3113, abs=0.01)
