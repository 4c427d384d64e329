"""DPOT and FNO: parameter counts, shapes, resolution handling."""

import pytest
import torch

from scifm.dpot.fno import FNO, FNOConfig
from scifm.dpot.model import ANCHOR_PARAMS, DPOT, count_config, make_config


@pytest.mark.parametrize("size", ["Ti", "S", "M", "L", "H"])
def test_parameter_counts_match_the_anchor(size):
    assert abs(count_config(size) / ANCHOR_PARAMS[size] - 1) < 2e-3


def test_output_shape_and_other_resolutions():
    torch.manual_seed(0)
    m = DPOT(make_config("tiny"))
    assert m(torch.randn(2, 16, 16, 3, 2)).shape == (2, 16, 16, 1, 2)
    assert m(torch.randn(1, 32, 24, 3, 2)).shape == (1, 32, 24, 1, 2)
    assert m(torch.randn(1, 18, 13, 3, 2)).shape == (1, 18, 13, 1, 2)  # not a multiple of the patch
    out, logits = m.forward_with_logits(torch.randn(2, 16, 16, 3, 2))
    assert logits.shape == (2, 2)
    with pytest.raises(ValueError, match="expects"):
        m(torch.randn(1, 16, 16, 4, 2))


def test_gradients_reach_every_parameter_used():
    m = DPOT(make_config("tiny"))
    m(torch.randn(2, 16, 16, 3, 2)).square().mean().backward()
    unused = {n for n, p in m.named_parameters() if p.grad is None}
    assert unused == {n for n, _ in m.named_parameters() if n.startswith("cls_head")}


@pytest.mark.parametrize("dims, shape", [(1, (2, 32, 3, 2)), (2, (2, 16, 16, 3, 2))])
def test_fno_shapes_and_resolution(dims, shape):
    m = FNO(FNOConfig(in_channels=2, out_channels=2, in_timesteps=3, width=8, modes=4, spatial_dims=dims))
    assert m(torch.randn(*shape)).shape == (*shape[:-2], 1, 2)
    bigger = (shape[0], *[2 * s for s in shape[1:-2]], *shape[-2:])
    assert m(torch.randn(*bigger)).shape == (*bigger[:-2], 1, 2)


def test_fno_spectral_layer_is_translation_equivariant():
    torch.manual_seed(0)
    m = FNO(FNOConfig(in_channels=1, out_channels=1, in_timesteps=2, width=8, modes=4)).eval()
    sc = m.spectral[0]
    h = torch.randn(1, 8, 16, 16)
    assert torch.allclose(sc(torch.roll(h, 3, 2)), torch.roll(sc(h), 3, 2), atol=1e-5)


def test_wide_embedding_and_residual_head():
    torch.manual_seed(0)
    base = DPOT(make_config("tiny"))
    assert base.patch_embed.proj[0].out_channels == 2 * 4 + 3  # the paper's C * p + 3
    wide = DPOT(make_config("tiny", embed_mid=40, residual=True))
    assert wide.patch_embed.proj[0].out_channels == 40
    x = torch.randn(2, 16, 16, 3, 2)
    with torch.no_grad():
        for p in wide.out_layer[-1].parameters():
            p.zero_()  # a zero increment: the residual head returns the last input frame exactly
    assert torch.equal(wide(x), x[..., -1:, :])
    with pytest.raises(ValueError, match="residual"):
        DPOT(make_config("tiny", residual=True, out_channels=3))
