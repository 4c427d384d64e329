"""ZBL repulsion prior: the universal screening function, its switch, forces = -grad E, export, and that
it turns a collapse into a repulsion while leaving bonded geometries untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_suite import DT, evaluate, fd_forces, make_potential

from scifm.mlip.export import export_potential, load_potential
from scifm.mlip.physics.coulomb import COULOMB_CONSTANT
from scifm.mlip.physics.zbl import ZBL_COEFFICIENTS, ZBLRepulsion, zbl_pair_energy
from scifm.mlip.potential import Potential


def test_screening_function_limits():
    assert sum(ZBL_COEFFICIENTS) == pytest.approx(1.0, abs=1e-12)  # phi(0) = 1: bare Coulomb at r -> 0
    z6 = torch.tensor([6.0], dtype=DT)
    r = torch.tensor([1e-5], dtype=DT)
    bare = COULOMB_CONSTANT * 36 / r
    assert float(zbl_pair_energy(z6, z6, r) / bare) == pytest.approx(1.0, rel=1e-3)
    # C-C screening length a = 0.46850 / (2 * 6^0.23) Å; at r = a, phi(1) by hand
    a = 0.46850 / (2 * 6**0.23)
    phi1 = 0.18175 * np.exp(-3.19980) + 0.50986 * np.exp(-0.94229) + 0.28022 * np.exp(-0.40290)
    phi1 += 0.02817 * np.exp(-0.20162)
    v = zbl_pair_energy(z6, z6, torch.tensor([a], dtype=DT))
    assert float(v) == pytest.approx(COULOMB_CONSTANT * 36 / a * phi1, rel=1e-12)
    rs = torch.linspace(0.05, 2.0, 50, dtype=DT)
    e = zbl_pair_energy(z6.expand(50), z6.expand(50), rs)
    assert bool((e.diff() < 0).all()) and bool((e > 0).all())  # purely repulsive


def _pair_energy(zbl: ZBLRepulsion, z, r):
    z = torch.as_tensor(z)
    vec = torch.tensor([[r, 0.0, 0.0], [-r, 0.0, 0.0]], dtype=DT)
    edge_index = torch.tensor([[1, 0], [0, 1]])  # row 0 neighbour, row 1 centre
    return float(zbl(z, edge_index, vec).sum())


def test_switch_is_smooth_and_ends_below_bond_lengths():
    zbl = ZBLRepulsion().to(DT)
    from ase.data import covalent_radii

    r_s = 0.75 * 2 * covalent_radii[6]
    assert _pair_energy(zbl, [6, 6], r_s + 1e-9) == 0.0
    e1, e2 = _pair_energy(zbl, [6, 6], r_s - 1e-4), _pair_energy(zbl, [6, 6], r_s - 2e-4)
    assert 0.0 < e1 < 1e-9 and e2 / e1 == pytest.approx(8.0, rel=1e-2)  # f ~ (1 - x)^3: C2-smooth switch
    assert _pair_energy(zbl, [6, 6], 1.20) == 0.0  # C≡C triple bond: untouched
    assert _pair_energy(zbl, [8, 1], 0.96) == 0.0  # O-H: untouched
    # full pair energy (both directions) equals the switched pair potential once
    r = 0.5
    x = r / r_s
    f = 1 - 28 * x**6 + 48 * x**7 - 21 * x**8
    v = float(zbl_pair_energy(torch.tensor([6]), torch.tensor([6]), torch.tensor([r], dtype=DT)))
    assert _pair_energy(zbl, [6, 6], r) == pytest.approx(v * f, rel=1e-12)


def _with_zbl(pot: Potential) -> Potential:
    out = Potential(pot.model, zbl=True).to(DT).eval()
    out.load_state_dict(pot.state_dict())
    return out


@pytest.mark.parametrize("model_name", ["painn", "bamboo"])
def test_forces_are_minus_gradient_and_collapse_is_repelled(model_name):
    pot = make_potential(model_name)
    zp = _with_zbl(pot)
    z = np.array([pot.elements[-1], pot.elements[-1], pot.elements[0]])
    x = np.array([[0.0, 0.0, 0.0], [0.35, 0.05, 0.0], [1.2, 0.9, 0.1]])  # two heavy atoms 0.35 Å apart
    f = evaluate(zp, z, x)["forces"]
    np.testing.assert_allclose(f, fd_forces(zp, z, x), rtol=1e-6, atol=1e-6)
    d = x[1] - x[0]
    assert float(f[1] @ d) > 0 and float(f[0] @ d) < 0  # pushed apart
    assert evaluate(zp, z, x)["energy"] - evaluate(pot, z, x)["energy"] > 10.0  # eV: a strong wall
    # a bonded geometry (all pairs beyond the switch) is not changed at all
    y = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.4, 0.0]])
    a, b = evaluate(zp, z, y), evaluate(pot, z, y)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])


def test_export_keeps_the_prior(tmp_path):
    zp = _with_zbl(make_potential("schnet"))
    export_potential(zp, tmp_path / "m")
    loaded = load_potential(tmp_path / "m", dtype="float64")
    assert loaded.zbl is not None
    z = np.array([zp.elements[-1]] * 2)
    x = np.array([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0]])
    assert evaluate(loaded, z, x)["energy"] == pytest.approx(evaluate(zp, z, x)["energy"], rel=1e-12)
    assert load_potential(tmp_path / "m").state_dict().keys() == zp.state_dict().keys()
