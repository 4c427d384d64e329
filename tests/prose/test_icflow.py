"""Internal-coordinate flow: Z-matrix geometry, the Cartesian volume element, splines, exact densities."""

from __future__ import annotations

import pytest
import torch

from scifm.core.errors import ConfigError
from scifm.prose.icflow import (
    ICFlow,
    ICFlowConfig,
    build_zmatrix,
    cartesian_from_ic,
    cartesian_log_jacobian,
    fit_statistics,
    ic_from_cartesian,
    make_icflow,
    rq_spline,
)
from scifm.prose.peptides import build_peptide
from scifm.prose.train import load_run, random_rotations


@pytest.fixture(scope="module")
def ala2():
    pep = build_peptide("A", True, seed=0)
    atoms = list(pep.topology.atoms())
    zm = build_zmatrix(
        len(atoms),
        [(b[0].index, b[1].index) for b in pep.topology.bonds()],
        [a.element.symbol for a in atoms],
    )
    return pep, atoms, zm


def _frames(pep, n=64, sigma=0.003, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(pep.positions, dtype=torch.float64)
    return x[None] + sigma * torch.randn(n, *x.shape, generator=g, dtype=torch.float64)


def _perturbed(flow: ICFlow, scale=0.05, seed=0) -> ICFlow:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def test_zmatrix_places_every_atom_once_and_makes_phi_a_proper_torsion(ala2):
    pep, atoms, zm = ala2
    assert sorted(r[0] for r in zm) == list(range(22))
    names = [[atoms[i].name if i >= 0 else None for i in r] for r in zm]
    assert names[0][0] == "CA"  # the most central heavy atom is the root
    bonded = {frozenset((b[0].index, b[1].index)) for b in pep.topology.bonds()}
    placed = set()
    for r, (i, j, k, l) in enumerate(zm):
        refs = [a for a in (j, k, l) if a >= 0]
        assert all(a in placed for a in refs), f"row {r} uses an atom placed later"
        if j >= 0:
            assert frozenset((i, j)) in bonded and (k < 0 or frozenset((j, k)) in bonded)
        placed.add(i)
    # phi (C(ace)-N-CA-C) is one of the torsions, read straight off the Z-matrix
    res = [a.residue.name for a in atoms]
    rows = {
        (atoms[i].name, res[i], atoms[j].name, atoms[k].name, atoms[l].name, res[l]) for i, j, k, l in zm[3:]
    }
    assert ("C", "ACE", "N", "CA", "C", "ALA") in rows
    with pytest.raises(ConfigError, match="not connected"):
        build_zmatrix(4, [(0, 1), (2, 3)])


def test_ic_round_trip_is_a_rigid_motion(ala2):
    pep, _, zm = ala2
    x = _frames(pep, 8)
    ic = ic_from_cartesian(x, zm)
    assert ic.shape == (8, 60)
    y = cartesian_from_ic(ic, zm)
    assert torch.allclose(torch.cdist(x, x), torch.cdist(y, y), atol=1e-12)
    assert torch.allclose(ic_from_cartesian(y, zm), ic, atol=1e-12)
    # internal coordinates do not see rotations or translations
    R = random_rotations(8, torch.float64, torch.Generator().manual_seed(1))
    xr = torch.einsum("bij,bnj->bni", R, x) + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(ic_from_cartesian(xr, zm), ic, atol=1e-12)


def test_cartesian_volume_element_matches_the_autograd_jacobian(ala2):
    """x(c, omega, ic) = exp(omega) (y(ic) - mean y) + c; at omega = 0 the exponential coordinates have
    Haar density 1, so |det dx/d(c, omega, ic)| must equal J(ic) of the module docstring."""
    pep, _, zm = ala2
    ic0 = ic_from_cartesian(_frames(pep, 1), zm)[0]

    def skew(w):
        z = torch.zeros((), dtype=w.dtype)
        return torch.stack(
            [torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]), torch.stack([-w[1], w[0], z])]
        )

    def x_of(theta):
        c, w, ic = theta[:3], theta[3:6], theta[6:]
        y = cartesian_from_ic(ic[None], zm)[0]
        y = y - y.mean(0)
        return (y @ torch.linalg.matrix_exp(skew(w)).T + c).reshape(-1)

    theta = torch.cat(
        [torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), torch.zeros(3, dtype=torch.float64), ic0]
    )
    jac = torch.autograd.functional.jacobian(x_of, theta)
    assert jac.shape == (66, 66)
    _, logdet = torch.linalg.slogdet(jac)
    assert float(logdet) == pytest.approx(float(cartesian_log_jacobian(ic0[None], zm)[0]), abs=1e-8)


def test_rq_spline_is_invertible_with_exact_log_derivative():
    g = torch.Generator().manual_seed(0)
    K = 8
    x = torch.rand(200, generator=g, dtype=torch.float64) * 6 - 3
    w, h, d = (torch.randn(200, n, generator=g, dtype=torch.float64) for n in (K, K, K + 1))
    y, ld = rq_spline(x, w, h, d, 3.0)
    xb, ldi = rq_spline(y, w, h, d, 3.0, inverse=True)
    assert torch.allclose(xb, x, atol=1e-10) and torch.allclose(ldi, -ld, atol=1e-10)
    assert y.min() >= -3 and y.max() <= 3
    xg = x.clone().requires_grad_(True)
    (dy,) = torch.autograd.grad(rq_spline(xg, w, h, d, 3.0)[0].sum(), xg)
    assert torch.allclose(torch.log(dy), ld, atol=1e-10)
    zero = torch.zeros(200, K, dtype=torch.float64)
    y0, ld0 = rq_spline(x, zero, zero, torch.zeros(200, K + 1, dtype=torch.float64), 3.0)
    assert torch.allclose(y0, x, atol=1e-12) and torch.allclose(ld0, torch.zeros_like(ld0), atol=1e-12)


def _small_flow(pep, zm):
    mean, std = fit_statistics(_frames(pep, 64), zm)
    cfg = ICFlowConfig(zmatrix=zm, ic_mean=mean, ic_std=std, std_nm=1.0, n_layers=4, hidden=32, n_bins=6)
    return _perturbed(ICFlow(cfg).double())


def test_flow_log_density_is_the_change_of_variables(ala2):
    pep, _, zm = ala2
    flow = _small_flow(pep, zm)
    ic, lq = flow.sample_ic(5, torch.Generator().manual_seed(0))
    assert torch.allclose(flow.log_prob_ic(ic), lq, atol=1e-8)

    # log q_ic(ic) = log p_base(z(ic)) + log|det dz/dic| with the autograd Jacobian
    def z_of(v):
        u, _ = flow._to_u(v[None])
        for layer in flow.layers:
            u, _ = layer(u)
        return u[0]

    for i in range(2):
        jac = torch.autograd.functional.jacobian(z_of, ic[i])
        _, logdet = torch.linalg.slogdet(jac)
        expected = flow._base_logp(z_of(ic[i])[None])[0] + logdet
        assert float(flow.log_prob_ic(ic[i : i + 1])[0]) == pytest.approx(float(expected), abs=1e-8)


def test_cartesian_density_is_consistent_and_rotation_invariant(ala2):
    pep, _, zm = ala2
    flow = _small_flow(pep, zm)
    x, lq = flow.sample(40, batch_size=16, generator=torch.Generator().manual_seed(3))
    assert x.shape == (40, 22, 3) and torch.isfinite(lq).all()
    assert torch.allclose(flow.log_prob(x), lq, atol=1e-7)
    c = x.mean(1, keepdim=True)
    R = random_rotations(40, torch.float64, torch.Generator().manual_seed(4))
    xr = torch.einsum("bij,bnj->bni", R, x - c) + c
    assert torch.allclose(flow.log_prob(xr), lq, atol=1e-7)
    # samples keep chemistry: bonds of the training frames within a few std
    ic = ic_from_cartesian(x, zm)
    bonds = torch.tensor([0, 1] + [3 + 3 * r for r in range(19)])
    z = (ic[:, bonds] - flow.mean[bonds]) / flow.std[bonds]
    assert z.abs().max() < 50


def test_density_integrates_to_one():
    """Three atoms: ic = (b1, b2, a2), no torsions; q_ic integrates to 1."""
    zm = build_zmatrix(3, [(0, 1), (1, 2)], ["O", "H", "H"])
    cfg = ICFlowConfig(
        zmatrix=zm, ic_mean=[1.0, 1.0, 1.8], ic_std=[0.1, 0.1, 0.1], n_layers=4, hidden=8, n_bins=4
    )
    flow = _perturbed(ICFlow(cfg).double(), scale=0.1)
    # Riemann sum over a box of +-10 standard deviations (the flow's splines act within +-5)
    axes = [torch.linspace(m - 1.0, m + 1.0, 81, dtype=torch.float64) for m in (1.0, 1.0, 1.8)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        mass = torch.exp(flow.log_prob_ic(grid)).sum() * 0.025**3
    assert float(mass) == pytest.approx(1.0, abs=3e-3)


def test_make_icflow_from_a_topology_and_export_round_trip(tmp_path, ala2):
    pep, _, _ = ala2
    flow = make_icflow(pep.topology, _frames(pep, 32).float(), 1.0, n_layers=2, hidden=16)
    from scifm.prose.train import export_run

    export_run(tmp_path / "run", flow, {"systems": ["Ace-A-Nme"]})
    back, meta = load_run(tmp_path / "run")
    assert isinstance(back, ICFlow) and meta["systems"] == ["Ace-A-Nme"]
    x = _frames(pep, 4).float()
    assert torch.allclose(back.log_prob(x), flow.log_prob(x))
    with pytest.raises(ConfigError, match="even"):
        ICFlow(ICFlowConfig(**{**flow.config.to_dict(), "n_layers": 3}))
