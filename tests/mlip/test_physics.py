"""Physics conformance of every registered MLIP model (see physics_suite.py): symmetry, gradients,
periodic images, extensivity, smoothness at the cutoff and batching. New models get these for free."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from physics_suite import (
    DT,
    MODELS,
    evaluate,
    fd_forces,
    make_potential,
    periodic_cell,
    random_molecule,
    random_rotation,
    tiny_config,
)

from scifm.core.graph import atomic_graph, batch_graphs
from scifm.mlip.models.registry import build_model

pytestmark = pytest.mark.parametrize("model_name", MODELS)

ATOL = 1e-9  # float64 symmetry tolerance (eV, eV/Å)


@pytest.fixture
def pot(model_name):
    return make_potential(model_name)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _molecule(pot, rng, n=5):
    return random_molecule(pot.elements, n, rng)


def test_config_round_trip(model_name, pot):
    cfg = pot.model.config
    text = json.dumps(cfg)  # JSON-serialisable
    assert (
        cfg["cutoff"] == pytest.approx(tiny_config(model_name)["cutoff"]) and cfg["elements"] == pot.elements
    )
    clone = build_model(model_name, **json.loads(text)).to(DT)
    clone.load_state_dict(pot.model.state_dict())
    assert clone.config == cfg
    g = batch_graphs(
        [atomic_graph([pot.elements[0], pot.elements[-1]], [[0, 0, 0], [1.1, 0.2, 0]], pot.cutoff, dtype=DT)]
    )
    g.edge_vec = g.pos[g.edge_index[0]] - g.pos[g.edge_index[1]]
    torch.testing.assert_close(clone(g)["node_energy"], pot.model(g)["node_energy"], rtol=0, atol=0)


def test_outputs_are_nontrivial(model_name, pot, rng):
    z, x = _molecule(pot, rng)
    r = evaluate(pot, z, x)
    assert np.abs(r["forces"]).max() > 1e-3
    assert np.ptp(r["node_energy"]) > 1e-3


def test_rotation_invariance_and_force_equivariance(model_name, pot, rng):
    z, x = _molecule(pot, rng)
    ref = evaluate(pot, z, x)
    reflections = (False, True) if pot.model.reflection_invariant else (False,)
    for reflect in reflections:
        Q = random_rotation(rng, reflect)
        rot = evaluate(pot, z, x @ Q.T)
        assert rot["energy"] == pytest.approx(ref["energy"], abs=ATOL)
        np.testing.assert_allclose(rot["forces"], ref["forces"] @ Q.T, atol=ATOL)


def test_rotation_periodic_with_stress(model_name, pot, rng):
    z, x, cell = periodic_cell(pot.elements, rng)
    ref = evaluate(pot, z, x, cell, [True] * 3, stress=True)
    Q = random_rotation(rng)
    rot = evaluate(pot, z, x @ Q.T, cell @ Q.T, [True] * 3, stress=True)
    assert rot["energy"] == pytest.approx(ref["energy"], abs=ATOL)
    np.testing.assert_allclose(rot["forces"], ref["forces"] @ Q.T, atol=ATOL)
    np.testing.assert_allclose(rot["stress"], Q @ ref["stress"] @ Q.T, atol=ATOL)


def test_translation_invariance(model_name, pot, rng):
    z, x = _molecule(pot, rng)
    ref = evaluate(pot, z, x)
    moved = evaluate(pot, z, x + np.array([3.1, -7.2, 0.4]))
    assert moved["energy"] == pytest.approx(ref["energy"], abs=ATOL)
    np.testing.assert_allclose(moved["forces"], ref["forces"], atol=ATOL)
    # periodic: a translation followed by wrapping atoms back into the cell changes nothing
    z, x, cell = periodic_cell(pot.elements, rng)
    ref = evaluate(pot, z, x, cell, [True] * 3, stress=True)
    frac = np.linalg.solve(cell.T, (x + np.array([1.7, 2.9, -0.8])).T).T
    wrapped = (frac % 1.0) @ cell
    moved = evaluate(pot, z, wrapped, cell, [True] * 3, stress=True)
    assert moved["energy"] == pytest.approx(ref["energy"], abs=ATOL)
    np.testing.assert_allclose(moved["forces"], ref["forces"], atol=ATOL)
    np.testing.assert_allclose(moved["stress"], ref["stress"], atol=ATOL)


def test_permutation_invariance(model_name, pot, rng):
    z, x = _molecule(pot, rng, n=6)
    ref = evaluate(pot, z, x)
    perm = rng.permutation(len(z))
    out = evaluate(pot, z[perm], x[perm])
    assert out["energy"] == pytest.approx(ref["energy"], abs=ATOL)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=ATOL)
    np.testing.assert_allclose(out["node_energy"], ref["node_energy"][perm], atol=ATOL)


def test_forces_are_minus_energy_gradient(model_name, pot, rng):
    z, x = _molecule(pot, rng)
    f = evaluate(pot, z, x)["forces"]
    np.testing.assert_allclose(f, fd_forces(pot, z, x), atol=1e-7, rtol=1e-6)
    z, x, cell = periodic_cell(pot.elements, rng)
    f = evaluate(pot, z, x, cell, [True] * 3)["forces"]
    assert np.abs(f).max() > 1e-4
    np.testing.assert_allclose(f, fd_forces(pot, z, x, cell, [True] * 3), atol=1e-7, rtol=1e-6)


def test_stress_is_strain_derivative(model_name, pot, rng):
    z, x, cell = periodic_cell(pot.elements, rng)
    pbc = [True] * 3
    stress = evaluate(pot, z, x, cell, pbc, stress=True)["stress"]
    volume = abs(np.linalg.det(cell))
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * h
            eps[b, a] += 0.5 * h  # symmetric strain
            e = []
            for sign in (1, -1):
                deform = np.eye(3) + sign * eps
                e.append(evaluate(pot, z, x @ deform, cell @ deform, pbc)["energy"])
            fd[a, b] = (e[0] - e[1]) / (2 * h) / volume
    assert np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(stress, stress.T, atol=1e-10)
    np.testing.assert_allclose(stress, fd, atol=1e-7, rtol=1e-6)


def test_supercell_is_extensive(model_name, pot, rng):
    z, x, cell = periodic_cell(pot.elements, rng)
    pbc = [True] * 3
    assert min(np.linalg.norm(cell, axis=1)) < pot.cutoff  # every atom sees its own periodic images
    ref = evaluate(pot, z, x, cell, pbc, stress=True)
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    big_x = (x[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    big_z = np.tile(z, len(shifts))
    big = evaluate(pot, big_z, big_x, 2 * cell, pbc, stress=True)
    assert big["energy"] / len(big_z) == pytest.approx(ref["energy"] / len(z), abs=1e-10)
    np.testing.assert_allclose(big["forces"], np.tile(ref["forces"], (len(shifts), 1)), atol=1e-9)
    np.testing.assert_allclose(big["stress"], ref["stress"], atol=1e-9)


def test_far_apart_fragments_add_up(model_name, pot, rng):
    z1, x1 = _molecule(pot, rng, n=3)
    z2, x2 = _molecule(pot, rng, n=4)
    x2 = x2 + np.array([pot.cutoff + 10.0, 0, 0])
    both = evaluate(pot, np.concatenate([z1, z2]), np.concatenate([x1, x2]))
    e1, e2 = evaluate(pot, z1, x1), evaluate(pot, z2, x2)
    assert both["energy"] == pytest.approx(e1["energy"] + e2["energy"], abs=ATOL)
    np.testing.assert_allclose(both["forces"], np.concatenate([e1["forces"], e2["forces"]]), atol=ATOL)


def test_smooth_when_atom_crosses_cutoff(model_name, pot):
    """A pair (atoms 0, 1) plus atom 2 on the axis; only the 0-2 distance crosses the cutoff. Energy and
    force must be continuous there: the jump in E shrinks at least ~quadratically and F ~linearly."""
    c = pot.cutoff
    z = np.array([pot.elements[0], pot.elements[-1], pot.elements[-1]])

    def at(d):
        x = np.array([[0.0, 0.0, 0.0], [-1.2, 0.3, 0.0], [d, 0.0, 0.0]])
        return evaluate(pot, z, x)

    outside = at(c + 1e-3)
    far = at(c + 0.5)
    assert outside["energy"] == pytest.approx(far["energy"], abs=1e-12)  # no interaction beyond the cutoff
    assert np.abs(outside["forces"][2]).max() < 1e-12
    jumps, forces = [], []
    for delta in (1e-2, 1e-3):
        inside = at(c - delta)
        jumps.append(abs(inside["energy"] - far["energy"]))
        forces.append(np.abs(inside["forces"][2]).max())
    assert jumps[0] > 1e-12 and forces[0] > 1e-10  # the atom does interact inside the cutoff
    assert jumps[1] < jumps[0] / 30  # ~ delta^2 (a C1 cutoff)
    assert forces[1] < forces[0] / 5  # ~ delta
    assert forces[1] < 1e-4


def test_batch_equals_separate(model_name, pot, rng):
    z1, x1 = _molecule(pot, rng, n=4)
    z2, x2, cell = periodic_cell(pot.elements, rng)
    z3, x3, cell3 = periodic_cell(pot.elements, rng)
    pbc = [True] * 3
    graphs = [
        atomic_graph(z1, x1, pot.cutoff, dtype=DT),
        atomic_graph(z2, x2, pot.cutoff, cell, pbc, dtype=DT),
    ]
    out = pot(batch_graphs(graphs), forces=True)
    sep = [evaluate(pot, z1, x1), evaluate(pot, z2, x2, cell, pbc)]
    np.testing.assert_allclose(out["energy"].detach().numpy(), [s["energy"] for s in sep], atol=ATOL)
    np.testing.assert_allclose(
        out["forces"].detach().numpy(), np.concatenate([s["forces"] for s in sep]), atol=ATOL
    )
    # two periodic graphs with stress
    graphs = [graphs[1], atomic_graph(z3, x3, pot.cutoff, cell3, pbc, dtype=DT)]
    out = pot(batch_graphs(graphs), forces=True, stress=True)
    sep = [evaluate(pot, z2, x2, cell, pbc, stress=True), evaluate(pot, z3, x3, cell3, pbc, stress=True)]
    np.testing.assert_allclose(
        out["stress"].detach().numpy(), np.stack([s["stress"] for s in sep]), atol=ATOL
    )
    np.testing.assert_allclose(out["energy"].detach().numpy(), [s["energy"] for s in sep], atol=ATOL)
