"""Losses and metrics against hand computations on tiny inputs; SGRL's scattering identity."""

from __future__ import annotations

import math

import pytest
import torch

from scifm.circuitgcl.losses import (
    GMM,
    ClassLoss,
    RegressionLoss,
    balanced_softmax_ce,
    bmc_loss,
    bni_loss,
    fit_gmm,
    gai_loss,
)
from scifm.circuitgcl.metrics import accuracy, macro_f1, r2_score
from scifm.circuitgcl.sgrl import alignment_loss, ema_update, scattering_loss

P = torch.tensor([0.2, 0.7], dtype=torch.float64)
Y = torch.tensor([0.0, 1.0], dtype=torch.float64)


def test_mse():
    assert float(RegressionLoss("mse")(P, Y)) == pytest.approx((0.04 + 0.09) / 2)


def test_bmc_by_hand():
    s2 = 0.25
    # logits_ij = -(p_i - y_j)^2 / (2 s2); CE with target i; times 2 s2
    l00, l01 = -(0.2**2) / 0.5, -(0.8**2) / 0.5
    l10, l11 = -(0.7**2) / 0.5, -(0.3**2) / 0.5
    ce0 = -(l00 - math.log(math.exp(l00) + math.exp(l01)))
    ce1 = -(l11 - math.log(math.exp(l10) + math.exp(l11)))
    assert float(bmc_loss(P, Y, s2)) == pytest.approx((ce0 + ce1) / 2 * 2 * s2)


def test_gai_by_hand():
    s2 = 0.01
    g = GMM(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([0.04, 0.09]))
    total = 0.0
    for p, y in zip(P.tolist(), Y.tolist(), strict=True):
        mse_term = (p - y) ** 2 / (2 * s2) + 0.5 * math.log(s2)
        terms = [
            math.log(0.5) - 0.5 * math.log(v + s2) - (p - mu) ** 2 / (2 * (v + s2))
            for mu, v in ((0.0, 0.04), (1.0, 0.09))
        ]
        total += (mse_term + math.log(sum(math.exp(t) for t in terms))) * 2 * s2
    assert float(gai_loss(P, Y, g, s2)) == pytest.approx(total / 2, rel=1e-5)


def test_bni_by_hand():
    s2 = 0.04
    w = torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1])
    c = [0.0, 0.25, 0.5, 0.75, 1.0]
    total = 0.0
    for p, y in zip(P.tolist(), Y.tolist(), strict=True):
        bal = math.log(
            sum(wb * math.exp(-((p - cb) ** 2) / (2 * s2)) for wb, cb in zip(w.tolist(), c, strict=True))
        )
        total += ((p - y) ** 2 / (2 * s2) + bal) * 2 * s2
    assert float(bni_loss(P, Y, s2, w)) == pytest.approx(total / 2, rel=1e-5)


def test_balanced_softmax_by_hand():
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    counts = torch.tensor([10.0, 1.0, 0.0])
    z = [1.0 + math.log(10), 0.0 + math.log(1)]  # class 2 has count 0 -> log 0 = -inf
    expected = -(z[1] - math.log(sum(math.exp(v) for v in z)))
    assert float(balanced_softmax_ce(logits, torch.tensor([1]), counts)) == pytest.approx(expected, rel=1e-6)
    assert float(ClassLoss("ce")(logits, torch.tensor([1]))) == pytest.approx(
        -(0.0 - math.log(math.e + 1 + math.exp(-1))), rel=1e-6
    )


def test_gmm_recovers_two_clusters():
    g = torch.Generator().manual_seed(0)
    y = torch.cat([0.2 + 0.02 * torch.randn(500, generator=g), 0.8 + 0.02 * torch.randn(500, generator=g)])
    gmm = fit_gmm(y, k=2)
    assert sorted(gmm.mu.tolist()) == pytest.approx([0.2, 0.8], abs=0.01)
    assert gmm.pi.tolist() == pytest.approx([0.5, 0.5], abs=0.02)


def test_scattering_equals_norm_c_squared_minus_one():
    z = torch.randn(37, 16, generator=torch.Generator().manual_seed(1)) * 3 + 1
    u = z / z.norm(dim=1, keepdim=True)
    c = u.mean(0)
    assert float(scattering_loss(z)) == pytest.approx(float(c @ c) - 1.0, abs=1e-6)
    # all embeddings equal -> c is a unit vector -> loss 0; antipodal pair -> c = 0 -> loss -1
    assert float(scattering_loss(torch.ones(5, 3))) == pytest.approx(0.0, abs=1e-6)
    assert float(scattering_loss(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))) == pytest.approx(-1.0)


def test_alignment_and_ema():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    assert float(alignment_loss(a, b)) == pytest.approx(-(1 / math.sqrt(2) - 1) / 2)
    alignment_loss(a, b).backward()
    assert b.grad is None  # the target side is stop-gradient
    t, o = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    w_t, w_o = t.weight.detach().clone(), o.weight.detach().clone()
    ema_update(t, o, 0.9)
    assert torch.allclose(t.weight, 0.9 * w_t + 0.1 * w_o)


def test_metrics_by_hand():
    y = torch.tensor([1.0, 2.0, 3.0])
    assert r2_score(torch.tensor([1.0, 2.0, 4.0]), y) == pytest.approx(1 - 1 / 2)
    yt, yp = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])
    # F1: class0 2*1/(2+0+1)=2/3, class1 2*1/(2+2+0)=1/2, class2 0 -> mean 7/18
    assert macro_f1(yp, yt) == pytest.approx(7 / 18)
    assert accuracy(yp, yt) == 0.5
