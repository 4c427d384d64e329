"""Prose flow: exact inverse, exact log-determinant, padding masks, paper-size parameter count."""

from __future__ import annotations

import pytest
import torch

from scifm.prose.data import collate
from scifm.prose.tarflow import ProseFlow, make_config


def _molecule(n: int, k: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(n, 3, generator=g),
        "perms": torch.stack([torch.randperm(n, generator=g) for _ in range(k)]),
        "atom_type": torch.randint(1, 59, (n,), generator=g),
        "residue_type": torch.randint(1, 23, (n,), generator=g),
        "residue_index": torch.randint(1, 4, (n,), generator=g),
        "seq_len": torch.full((n,), 3),
    }


def _perturbed(model: ProseFlow, scale: float = 0.1) -> ProseFlow:
    """Leave the zero initialisation so the transforms are far from the identity."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _cond(b):
    return {k: b[k] for k in ("atom_type", "residue_type", "residue_index", "seq_len")}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_inverse_recovers_input(dtype, tol):
    model = _perturbed(ProseFlow(make_config("tiny", num_blocks=3)), 0.05).to(dtype).eval()
    b = collate([_molecule(12, seed=s) for s in range(1)])
    b["x"] = torch.randn(6, 12, 3, dtype=dtype)
    cond = {k: v.expand(6, -1) for k, v in _cond(b).items()}
    with torch.no_grad():
        z, ld = model(b["x"], cond, b["perms"].expand(6, -1, -1))
        x, ld_inv = model.inverse(z, _cond(b), b["perms"])
    assert (z - b["x"]).abs().max() > 1e-2  # not the identity
    assert (x - b["x"]).abs().max() < tol
    assert (ld + ld_inv).abs().max() < tol * 10


def test_log_determinant_matches_autograd_jacobian():
    torch.set_default_dtype(torch.float64)
    try:
        model = _perturbed(ProseFlow(make_config("tiny", num_blocks=2))).double()
        b = collate([_molecule(5, seed=3)])
        x = b["x"][0].double()

        def f(flat):
            z, _ = model(flat.view(1, 5, 3), _cond(b), b["perms"])
            return z.reshape(-1)

        J = torch.autograd.functional.jacobian(f, x.reshape(-1))
        _, ld = model(x[None], _cond(b), b["perms"])
        assert J.shape == (15, 15)
        assert torch.allclose(ld[0], torch.linalg.slogdet(J)[1], atol=1e-8)
        assert abs(float(ld[0].detach())) > 1e-3
    finally:
        torch.set_default_dtype(torch.float32)


def test_padding_does_not_change_real_atoms():
    model = _perturbed(ProseFlow(make_config("tiny"))).eval()
    small, big = _molecule(7, seed=4), _molecule(11, seed=5)
    alone = collate([small])
    padded = collate([small, big])
    # garbage in the pads of the small molecule must not matter
    padded["x"][0, 7:] = 100.0 * torch.randn(4, 3)
    with torch.no_grad():
        lp_alone = model.log_prob(alone["x"], _cond(alone), alone["perms"], alone["mask"])
        lp_pad = model.log_prob(padded["x"], _cond(padded), padded["perms"], padded["mask"])
        z_alone, _ = model(alone["x"], _cond(alone), alone["perms"], alone["mask"])
        z_pad, _ = model(padded["x"], _cond(padded), padded["perms"], padded["mask"])
    assert torch.allclose(lp_alone[0], lp_pad[0], atol=1e-4)
    assert torch.allclose(z_alone[0], z_pad[0, :7], atol=1e-5)
    # and the same molecule alone in a batch of two gives its own log-likelihood
    lp_big = model.log_prob(collate([big])["x"], _cond(collate([big])), collate([big])["perms"])
    assert torch.allclose(lp_big[0], lp_pad[1], atol=1e-4)


def test_log_prob_of_samples_matches_sampling_density():
    model = _perturbed(ProseFlow(make_config("tiny")), 0.05).eval()
    b = collate([_molecule(9, seed=6)])
    x, logq = model.sample(4, _cond(b), b["perms"], generator=torch.Generator().manual_seed(0))
    lp = model.log_prob(x, {k: v.expand(4, -1) for k, v in _cond(b).items()}, b["perms"].expand(4, -1, -1))
    assert torch.allclose(lp, logq, atol=1e-4)


def test_paper_config_parameter_count():
    # The anchor's count of the released Prose config (C=384, 8 blocks x 8 layers): 288,117,560.
    with torch.device("meta"):
        model = ProseFlow(make_config("paper"))
    assert model.n_parameters() == 288_117_560


def test_unknown_size_is_a_config_error():
    from scifm.core.errors import ConfigError

    with pytest.raises(ConfigError):
        make_config("huge")
