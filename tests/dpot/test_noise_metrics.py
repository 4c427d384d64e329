"""Noise injection statistics, L2RE on known fields, the loss mask, the schedule."""

import math

import pytest
import torch

from scifm.dpot.metrics import l2re, per_step_error
from scifm.dpot.noise import REFERENCE_NUMEL, add_noise, effective_scale
from scifm.dpot.train import onecycle_lr, rel_l2_loss


def test_noise_std_is_scaled_norm_per_sample_and_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 32, 10, 2, generator=g, dtype=torch.float64)
    x[..., 1] *= 5.0
    x[1] *= 3.0
    s = 5e-4
    noisy = add_noise(x, s, generator=g)
    d = noisy - x
    s_eff = effective_scale(s, x)
    assert s_eff == pytest.approx(s * math.sqrt(REFERENCE_NUMEL / (32 * 32 * 10)))
    norm = torch.linalg.vector_norm(x, dim=(1, 2, 3))  # [B, C]
    std = d.std(dim=(1, 2, 3))
    torch.testing.assert_close(std / (s_eff * norm), torch.ones_like(std), atol=0.03, rtol=0)
    assert d.mean(dim=(1, 2, 3)).abs().max() < 4 * (s_eff * norm).max() / math.sqrt(32 * 32 * 10)
    # relative to the RMS, the anchor's s = 5e-4 is about 0.2 on any window size
    rms = x.pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(
        std / rms, torch.full_like(std, 5e-4 * math.sqrt(REFERENCE_NUMEL)), atol=0.01, rtol=0
    )


def test_noise_skips_padded_channels_and_zero_scale():
    x = torch.randn(2, 8, 8, 3, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y = add_noise(x, 1e-3, mask)
    assert torch.equal(y[0, ..., 1], x[0, ..., 1]) and not torch.equal(y[1, ..., 1], x[1, ..., 1])
    assert add_noise(x, 0.0) is x


def test_l2re_on_known_fields():
    true = torch.randn(3, 8, 8, 5, 2, dtype=torch.float64)
    pred = true.clone()
    pred[..., 0] *= 1.1  # 10 % error on channel 0
    pred[..., 1] = 0.0  # 100 % error on channel 1
    m = l2re(pred, true)
    assert m["l2re_per_channel"] == pytest.approx([0.1, 1.0])
    assert m["l2re"] == pytest.approx(0.55)
    assert l2re(pred, true, n_channels=1)["l2re"] == pytest.approx(0.1)
    # error growing linearly with the step shows in the per-step curve
    grow = true * (1 + 0.01 * torch.arange(1, 6, dtype=torch.float64))[:, None]
    assert per_step_error(grow, true) == pytest.approx([0.01 * k for k in range(1, 6)])


def test_loss_ignores_inactive_channels():
    y = torch.randn(2, 4, 4, 1, 2)
    pred = y.clone()
    pred[..., 1] += 100.0
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert rel_l2_loss(pred, y, mask) == pytest.approx(0.0, abs=1e-7)
    assert rel_l2_loss(pred, y) > 1.0


def test_onecycle_shape():
    assert onecycle_lr(0.0, 1e-3) == pytest.approx(1e-7)
    assert onecycle_lr(0.2, 1e-3) == pytest.approx(1e-3)
    assert onecycle_lr(1.0, 1e-3) == pytest.approx(1e-11)
    assert onecycle_lr(0.1, 1e-3) < onecycle_lr(0.15, 1e-3) and onecycle_lr(0.5, 1e-3) > onecycle_lr(
        0.9, 1e-3
    )
