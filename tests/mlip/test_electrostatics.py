"""Electrostatics (scifm.mlip.physics): Ewald against Madelung constants, independence of the splitting
parameter, forces and stress as derivatives, damped Coulomb limits, charge constraints, D3 dispersion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from physics_suite import central_difference_forces, central_difference_strain_derivative

from scifm.core.graph import atomic_graph, batch_graphs, edge_vectors
from scifm.mlip.physics import (
    COULOMB_CONSTANT,
    bounded_charges,
    coulomb_node_energy,
    damped_inverse_distance,
    dipole_moment,
    ewald_energy,
    shift_to_total_charge,
)

DT = torch.float64
FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=DT)


def rocksalt(a: float = 5.64):
    """Conventional NaCl cell: 4 cations + 4 anions, nearest-neighbour distance a/2."""
    frac = np.concatenate([FCC, FCC + [0.5, 0, 0]])
    return frac * a, np.eye(3) * a, np.array([1.0] * 4 + [-1.0] * 4)


def random_box(rng, n=8, charged=False):
    """n charges in a generic triclinic cell, no pair closer than 1 Å, neutral unless ``charged``."""
    cell = 5.0 * (np.eye(3) + 0.15 * rng.normal(size=(3, 3)))
    pos = []
    while len(pos) < n:
        x = rng.uniform(0, 1, 3) @ cell
        if all(np.linalg.norm(x - p) > 1.0 for p in pos):
            pos.append(x)
    q = rng.normal(size=n)
    if not charged:
        q -= q.mean()
    return np.array(pos), cell, q


def test_ewald_reproduces_madelung_constant_of_rock_salt():
    pos, cell, q = rocksalt(5.64)
    e = float(ewald_energy(_t(q), _t(pos), _t(cell)).sum())
    # E per ion pair = -M k_e / r_nn with r_nn = a/2; 4 ion pairs in the cell
    madelung = -e / 4 * (5.64 / 2) / COULOMB_CONSTANT
    assert madelung == pytest.approx(1.747565, rel=1e-4)
    assert madelung == pytest.approx(1.7475645946, rel=1e-8)  # the constant to 10 digits


def test_ewald_primitive_triclinic_cell_and_cesium_chloride():
    # NaCl in its 2-atom fcc primitive (triclinic) cell: the same energy per ion pair
    a = 5.64
    cell = 0.5 * a * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]])
    pos = np.array([[0, 0, 0], [0.5 * a, 0, 0]])
    e = float(ewald_energy(_t([1.0, -1.0]), _t(pos), _t(cell)).sum())
    assert -e * (a / 2) / COULOMB_CONSTANT == pytest.approx(1.7475645946, rel=1e-8)
    # CsCl: M = 1.762675 with r_nn = a√3/2
    a = 4.12
    e = float(ewald_energy(_t([1.0, -1.0]), _t([[0, 0, 0], [a / 2] * 3]), _t(np.eye(3) * a)).sum())
    assert -e * (a * math.sqrt(3) / 2) / COULOMB_CONSTANT == pytest.approx(1.762675, rel=1e-6)


@pytest.mark.parametrize("charged", [False, True])
def test_ewald_energy_is_independent_of_the_splitting_parameter(charged):
    rng = np.random.default_rng(3)
    pos, cell, q = random_box(rng, charged=charged)
    energies = [float(ewald_energy(_t(q), _t(pos), _t(cell), alpha=alpha).sum()) for alpha in (0.3, 0.5, 0.9)]
    assert abs(energies[0]) > 0.1
    np.testing.assert_allclose(energies, energies[0], rtol=1e-8, atol=0)
    if charged:  # the neutralising-background term is what makes a charged cell α-independent
        a1 = float(ewald_energy(_t(q), _t(pos), _t(cell), alpha=0.3).sum())
        vol = abs(np.linalg.det(cell))
        bg = lambda al: -COULOMB_CONSTANT * math.pi * q.sum() ** 2 / (2 * vol * al**2)  # noqa: E731
        assert abs((a1 - bg(0.3)) - (energies[2] - bg(0.9))) > 1e-3


def test_ewald_forces_and_stress_are_derivatives():
    rng = np.random.default_rng(4)
    pos, cell, q = random_box(rng, n=6)
    x = _t(pos).requires_grad_(True)
    eps = torch.zeros(3, 3, dtype=DT, requires_grad=True)
    deform = torch.eye(3, dtype=DT) + 0.5 * (eps + eps.T)
    e = ewald_energy(_t(q), x @ deform, _t(cell) @ deform).sum()
    gx, geps = torch.autograd.grad(e, [x, eps])
    forces, stress = -gx.numpy(), geps.numpy() / abs(np.linalg.det(cell))
    h = 1e-5

    def energy(p, c):
        return float(ewald_energy(_t(q), _t(p), _t(c)).sum())

    fd = central_difference_forces(lambda p: energy(p, cell), pos, h)
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, fd, atol=1e-6)
    fd_s = central_difference_strain_derivative(energy, pos, cell, h)
    np.testing.assert_allclose(stress, fd_s / abs(np.linalg.det(cell)), atol=1e-7)


def test_damped_inverse_distance_limits():
    r = _t([1e-6, 2.2, 10.0, 30.0])
    inv = damped_inverse_distance(r, r0=2.2, beta=18.7).numpy()
    assert inv[0] == pytest.approx(1 / 2.2, rel=1e-8)  # finite at contact: k_e q q / r0
    assert inv[2] == pytest.approx(1 / 10.0, rel=1e-12)  # bare Coulomb beyond a few r0
    assert inv[3] == pytest.approx(1 / 30.0, rel=1e-12)
    assert 1 / 2.2 > inv[1] > 1 / 4.4  # d(r0) = r0 (1 + ln2/β)
    assert inv[1] == pytest.approx(1 / (2.2 * (1 + math.log(2) / 18.7)), rel=1e-12)


def test_all_pairs_coulomb_of_an_isolated_cluster_by_hand():
    pos = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 4.0, 0], [0, 0, 9.0]])
    q = np.array([0.5, -0.3, 0.2, -0.4])
    g = batch_graphs([atomic_graph([1, 1, 1, 1], pos, 3.0, dtype=DT)])
    e = coulomb_node_energy(_t(q), g)
    ref = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            d = np.linalg.norm(pos[i] - pos[j])
            ref += COULOMB_CONSTANT * q[i] * q[j] * float(damped_inverse_distance(_t(d)))
    assert float(e.sum()) == pytest.approx(ref, rel=1e-12)
    # pairs beyond any cutoff count: moving atom 3 from 9 Å to 20 Å changes the energy
    pos2 = pos.copy()
    pos2[3, 2] = 20.0
    g2 = batch_graphs([atomic_graph([1, 1, 1, 1], pos2, 3.0, dtype=DT)])
    assert abs(float(coulomb_node_energy(_t(q), g2).sum()) - ref) > 1e-2


def test_graph_ewald_matches_standalone_ewald_and_mixed_batches():
    """The model's path (real space over graph edges with a smooth shifted kernel, no damping) agrees with
    the plain Ewald sum; a batch mixing an isolated and a periodic system gives each its own energy."""
    rng = np.random.default_rng(5)
    pos, cell, q = random_box(rng)
    cutoff = 6.0
    g = atomic_graph([1] * len(q), pos, cutoff, cell=cell, pbc=[True] * 3, dtype=DT)
    mol = atomic_graph([1, 1], [[0, 0, 0], [0, 0, 3.0]], cutoff, dtype=DT)
    b = batch_graphs([mol, g])
    b.edge_vec = edge_vectors(b.pos, b.cell, b.shifts, b.edge_index, b.batch)
    qq = _t(np.concatenate([[0.3, -0.3], q]))
    e = coulomb_node_energy(qq, b, r_cut=cutoff, accuracy=1e-8, damping=False)
    ref = float(ewald_energy(_t(q), _t(pos), _t(cell), accuracy=1e-10).sum())
    assert float(e[2:].sum()) == pytest.approx(ref, abs=1e-5)
    assert float(e[:2].sum()) == pytest.approx(-COULOMB_CONSTANT * 0.09 / 3.0, rel=1e-12)


def test_charges_are_bounded_and_sum_to_the_total_charge():
    raw = _t([-10.0, 0.1, 3.0, 0.5, -0.2])
    q = bounded_charges(raw, 2.0)
    assert float(q.abs().max()) < 2.0 and float(q[1]) == pytest.approx(0.1, rel=1e-3)
    batch = torch.tensor([0, 0, 0, 1, 1])
    total = _t([1.0, -1.0])
    qs = shift_to_total_charge(q, batch, total, 2)
    np.testing.assert_allclose([float(qs[:3].sum()), float(qs[3:].sum())], [1.0, -1.0], atol=1e-14)
    pos = _t([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, -1]])
    mu = dipole_moment(qs, pos, batch, 2)
    np.testing.assert_allclose(mu[1].numpy(), [0, 0, float(qs[3] - qs[4])], atol=1e-14)


def test_d3_dispersion_matches_the_reference_ase_calculator():
    from ase.build import bulk, molecule
    from ase.stress import full_3x3_to_voigt_6_stress
    from dftd3.ase import DFTD3

    from scifm.mlip.physics.dispersion import D3Dispersion

    d3 = D3Dispersion("b3lyp", "d3bj")
    atoms = molecule("CH3CH2OH")
    res = d3.compute(atoms.numbers, atoms.positions)
    atoms.calc = DFTD3(method="b3lyp", damping="d3bj")
    assert res["energy"] < 0 and res["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(res["forces"], atoms.get_forces(), atol=1e-12)
    atoms.positions[0] += 0.1  # the model is reused with new positions
    res = d3.compute(atoms.numbers, atoms.positions)
    assert res["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    crystal = bulk("NaCl", "rocksalt", a=5.64)
    res = d3.compute(crystal.numbers, crystal.positions, crystal.cell.array, crystal.pbc)
    crystal.calc = DFTD3(method="b3lyp", damping="d3bj")
    np.testing.assert_allclose(full_3x3_to_voigt_6_stress(res["stress"]), crystal.get_stress(), atol=1e-12)
    with pytest.raises(ValueError, match="damping"):
        D3Dispersion("b3lyp", "nonsense")
