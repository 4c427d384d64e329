"""Smooth particle-mesh Ewald (scifm.mlip.physics.coulomb.pme_node_energy): agreement with the Ewald
reciprocal sum (cubic and triclinic, convergence with the spline order), the Madelung constant of rock salt
through the model's Coulomb path, forces and stress as derivatives, invariances, the ``reciprocal`` option
("auto" rule, errors) and BAMBOO with ``ewald_method="pme"``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_suite import central_difference_forces, central_difference_strain_derivative, fd_forces

from scifm.core.graph import atomic_graph, batch_graphs, edge_vectors
from scifm.mlip.models.registry import build_model, model_class
from scifm.mlip.physics.coulomb import (
    COULOMB_CONSTANT,
    PME_MIN_ATOMS,
    coulomb_node_energy,
    ewald_parameters,
    pme_mesh_shape,
    pme_node_energy,
    reciprocal_node_energy,
)
from scifm.mlip.potential import Potential

DT = torch.float64
# the model's Ewald parameters: real-space cutoff 5 Å, accuracy 1e-6 (α = 0.743 /Å, k_cut = 5.53 /Å)
ALPHA, K_CUT = ewald_parameters(5.0, 1e-6)


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=DT)


def random_charges_box(rng, n: int, length: float, triclinic: bool, min_dist: float = 1.0):
    """n random neutral charges (q ~ N(0, 0.5²) minus the mean) in a cubic or generic triclinic cell."""
    cell = length * (np.eye(3) + (0.15 * rng.normal(size=(3, 3)) if triclinic else 0.0))
    pos: list[np.ndarray] = []
    while len(pos) < n:
        x = rng.uniform(0, 1, 3) @ cell
        if all(np.linalg.norm(x - p) > min_dist for p in pos):
            pos.append(x)
    q = 0.5 * rng.normal(size=n)
    return np.array(pos), cell, q - q.mean()


@pytest.mark.parametrize("triclinic", [False, True])
def test_pme_matches_the_ewald_reciprocal_sum(triclinic):
    rng = np.random.default_rng(1 + triclinic)
    pos, cell, q = random_charges_box(rng, 60, 9.0, triclinic)
    ref = reciprocal_node_energy(_t(q), _t(pos), _t(cell), ALPHA, K_CUT)
    e = pme_node_energy(_t(q), _t(pos), _t(cell), ALPHA, K_CUT)  # order 6
    total_err = abs(float(e.sum() - ref.sum())) / abs(float(ref.sum()))
    assert abs(float(ref.sum())) > 1.0
    assert total_err < 1e-5
    # per-atom energies: within 2e-5 of the largest per-atom energy (measured 3e-6 to 6e-6)
    np.testing.assert_allclose(e.numpy(), ref.numpy(), rtol=0, atol=2e-5 * float(ref.abs().max()))
    # convergence with the spline order on the same mesh (the interpolation error falls ~ exponentially)
    mesh = pme_mesh_shape(_t(cell), K_CUT, 6)
    errs = [
        abs(
            float(
                pme_node_energy(_t(q), _t(pos), _t(cell), ALPHA, K_CUT, order=p, mesh=mesh).sum() - ref.sum()
            )
        )
        / abs(float(ref.sum()))
        for p in (4, 6, 8, 10)
    ]
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-7, errs


def test_pme_node_energies_are_half_charge_times_potential():
    """E_mesh = ½ qᵀ A q with A symmetric, so ½ q_i ∂E/∂q_i must be the per-atom energy ½ q_i φ_i that
    the back-interpolation returns, and the per-atom energies sum to the mesh energy."""
    rng = np.random.default_rng(3)
    pos, cell, q = random_charges_box(rng, 20, 7.0, True)
    qt = _t(q).requires_grad_(True)
    e = pme_node_energy(qt, _t(pos), _t(cell), ALPHA, K_CUT)
    (phi,) = torch.autograd.grad(e.sum(), qt)
    np.testing.assert_allclose(e.detach().numpy(), 0.5 * q * phi.numpy(), rtol=1e-10, atol=1e-12)


def test_pme_madelung_constant_of_rock_salt():
    from scifm.core.graph import atomic_graph

    a, cutoff = 5.64, 5.0
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    pos, cell = np.concatenate([fcc, fcc + [0.5, 0, 0]]) * a, np.eye(3) * a
    q = _t([1.0] * 4 + [-1.0] * 4)
    g = batch_graphs([atomic_graph([11] * 4 + [17] * 4, pos, cutoff, cell=cell, pbc=[True] * 3, dtype=DT)])
    g.edge_vec = edge_vectors(g.pos, g.cell, g.shifts, g.edge_index, g.batch)
    madelung = {}
    for method in ("pme", "ewald"):
        e = float(coulomb_node_energy(q, g, r_cut=cutoff, damping=False, reciprocal=method).sum())
        madelung[method] = -e / 4 * (a / 2) / COULOMB_CONSTANT  # 4 ion pairs, r_nn = a/2
    assert madelung["pme"] == pytest.approx(1.7475645946, rel=1e-4)
    assert madelung["pme"] == pytest.approx(madelung["ewald"], rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pme_forces_and_stress_are_derivatives(dtype):
    rng = np.random.default_rng(4)
    pos, cell, q = random_charges_box(rng, 8, 6.0, True)
    x = torch.as_tensor(pos, dtype=dtype).requires_grad_(True)
    eps = torch.zeros(3, 3, dtype=dtype, requires_grad=True)
    deform = torch.eye(3, dtype=dtype) + 0.5 * (eps + eps.T)
    c = torch.as_tensor(cell, dtype=dtype)
    e = pme_node_energy(torch.as_tensor(q, dtype=dtype), x @ deform, c @ deform, ALPHA, K_CUT).sum()
    gx, geps = torch.autograd.grad(e, [x, eps])
    forces, virial = -gx.double().numpy(), geps.double().numpy()
    if dtype == torch.float32:  # float32 runs and agrees with float64 autograd to single precision
        x64 = _t(pos).requires_grad_(True)
        (g64,) = torch.autograd.grad(pme_node_energy(_t(q), x64, _t(cell), ALPHA, K_CUT).sum(), x64)
        np.testing.assert_allclose(forces, -g64.numpy(), atol=1e-4 * np.abs(g64.numpy()).max())
        return
    h = 1e-5

    def energy(p, cl):
        return float(pme_node_energy(_t(q), _t(p), _t(cl), ALPHA, K_CUT).sum())

    fd = central_difference_forces(lambda p: energy(p, cell), pos, h)
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, fd, atol=1e-7)
    fd_v = central_difference_strain_derivative(energy, pos, cell, h)
    assert np.abs(virial).max() > 0.1
    np.testing.assert_allclose(virial, fd_v, atol=1e-7)


def test_pme_invariances():
    rng = np.random.default_rng(5)
    pos, cell, q = random_charges_box(rng, 30, 8.0, True)

    def total(p):
        return float(pme_node_energy(_t(q), _t(p), _t(cell), ALPHA, K_CUT).sum())

    ref = total(pos)
    moved = pos.copy()
    moved[3] += (
        cell[1] - 2 * cell[2]
    )  # a lattice translation of one atom: exact (fractional coordinates wrap)
    assert total(moved) == pytest.approx(ref, rel=1e-12)
    # a rigid shift by one mesh spacing along a lattice vector maps the mesh onto itself: exact
    mesh = pme_mesh_shape(_t(cell), K_CUT, 6)
    assert total(pos + cell[0] / mesh[0]) == pytest.approx(ref, rel=1e-12)
    # any other rigid shift: invariant to the interpolation accuracy (the mesh breaks translation symmetry)
    exact = float(reciprocal_node_energy(_t(q), _t(pos), _t(cell), ALPHA, K_CUT).sum())
    for shift in rng.normal(size=(3, 3)):
        assert total(pos + shift) == pytest.approx(ref, rel=1e-5)
        assert total(pos + shift) == pytest.approx(exact, rel=1e-5)


def _periodic_graph(n: int, cutoff: float = 5.0):
    rng = np.random.default_rng(n)
    length = (n / 0.1) ** (1 / 3)  # liquid density, 0.1 atoms/Å³
    pos, cell, q = random_charges_box(rng, n, length, False, min_dist=0.9)
    g = batch_graphs([atomic_graph([1] * n, pos, cutoff, cell=cell, pbc=[True] * 3, dtype=DT)])
    g.edge_vec = edge_vectors(g.pos, g.cell, g.shifts, g.edge_index, g.batch)
    return g, _t(q)


def test_auto_rule_and_unknown_method():
    assert PME_MIN_ATOMS == 200
    for n, expected in ((PME_MIN_ATOMS - 1, "ewald"), (PME_MIN_ATOMS, "pme")):
        g, q = _periodic_graph(n)
        auto = coulomb_node_energy(q, g, r_cut=5.0, reciprocal="auto")
        other = "ewald" if expected == "pme" else "pme"
        assert torch.equal(auto, coulomb_node_energy(q, g, r_cut=5.0, reciprocal=expected))
        assert not torch.equal(auto, coulomb_node_energy(q, g, r_cut=5.0, reciprocal=other))
        # the two methods agree to the PME accuracy on the full Coulomb energy as well
        assert float(auto.sum()) == pytest.approx(
            float(coulomb_node_energy(q, g, r_cut=5.0, reciprocal=other).sum()), rel=1e-4
        )
    with pytest.raises(ValueError, match="reciprocal must be one of"):
        coulomb_node_energy(q, g, r_cut=5.0, reciprocal="fft")
    with pytest.raises(ValueError, match="ewald_method must be one of"):
        build_model("bamboo", **model_class("bamboo").tiny_config(), ewald_method="p3m")


def _bamboo(method: str, state=None) -> Potential:
    cfg = dict(model_class("bamboo").tiny_config(), coulomb=True, electronegativity=True, ewald_method=method)
    torch.manual_seed(0)
    model = build_model("bamboo", **cfg)
    if state is None:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))  # charges of a few tenths of e
    else:
        model.load_state_dict(state)
    return Potential(model, scale=1.3, shift=-0.2).to(DT).eval()


def test_bamboo_with_pme_matches_ewald_and_forces_are_gradients():
    ewald = _bamboo("ewald")
    pme = _bamboo("pme", ewald.model.state_dict())
    assert pme.model.config["ewald_method"] == "pme"
    # models saved before the option existed have no key: they get "auto"
    old = {k: v for k, v in ewald.model.config.items() if k != "ewald_method"}
    assert model_class("bamboo").from_config(old).ewald_method == "auto"

    rng = np.random.default_rng(7)
    cell = 6.5 * (np.eye(3) + 0.05 * rng.normal(size=(3, 3)))
    z = rng.choice(np.asarray(ewald.elements), size=10)
    pos = []
    while len(pos) < len(z):
        x = rng.uniform(0, 1, 3) @ cell
        if all(np.linalg.norm(x - p) > 1.2 for p in pos):
            pos.append(x)
    pos, pbc = np.array(pos), [True] * 3

    def run(pot):
        g = batch_graphs([atomic_graph(z, pos, pot.cutoff, cell=cell, pbc=pbc, dtype=DT)])
        out = pot(g, forces=True, stress=True)
        return {k: out[k].detach().numpy() for k in ("energy", "electrostatic_energy", "forces", "stress")}

    a, b = run(ewald), run(pme)
    assert abs(float(a["electrostatic_energy"][0])) > 0.1
    np.testing.assert_allclose(b["electrostatic_energy"], a["electrostatic_energy"], rtol=1e-4)
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-4)
    np.testing.assert_allclose(b["forces"], a["forces"], atol=3e-4 * np.abs(a["forces"]).max())
    np.testing.assert_allclose(b["stress"], a["stress"], atol=3e-4 * np.abs(a["stress"]).max())
    # the PME model's own forces are the gradient of its own energy
    np.testing.assert_allclose(b["forces"], fd_forces(pme, z, pos, cell, pbc), atol=1e-7)
