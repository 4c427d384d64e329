"""BAMBOO with its long-range terms switched on (the registry's physics suite covers the local network):
gradients, invariances and extensivity with Coulomb/Ewald and E_χη, the unscaled physics hook, charges and
dipoles, the QEq force, D3 at MD time through the calculator, and `sci-fm train mlip --model bamboo`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from physics_suite import evaluate, fd_forces, periodic_cell, random_molecule, random_rotation

from scifm.core.graph import atomic_graph, batch_graphs
from scifm.mlip.models.registry import build_model, model_class
from scifm.mlip.potential import Potential

DT = torch.float64
ATOL = 1e-9


def full_physics_potential(seed: int = 0, **overrides) -> Potential:
    torch.manual_seed(seed)
    cfg = dict(model_class("bamboo").tiny_config(), coulomb=True, electronegativity=True, **overrides)
    model = build_model("bamboo", **cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # charges of a few tenths of e: Coulomb matters
    return Potential(model, scale=1.3, shift=-0.2).to(DT).eval()


@pytest.fixture(scope="module")
def pot():
    return full_physics_potential()


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def test_forces_are_minus_gradient_with_coulomb(pot, rng):
    z, x = random_molecule(pot.elements, 5, rng)
    r = evaluate(pot, z, x)
    np.testing.assert_allclose(r["forces"], fd_forces(pot, z, x), atol=1e-7)
    z, x, cell = periodic_cell(pot.elements, rng)
    pbc = [True] * 3
    r = evaluate(pot, z, x, cell, pbc, stress=True)
    np.testing.assert_allclose(r["forces"], fd_forces(pot, z, x, cell, pbc), atol=1e-7)
    h, vol, fd = 1e-5, abs(np.linalg.det(cell)), np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            d = np.zeros((3, 3))
            d[a, b] += h / 2
            d[b, a] += h / 2
            e = [
                evaluate(pot, z, x @ (np.eye(3) + s * d), cell @ (np.eye(3) + s * d), pbc)["energy"]
                for s in (1, -1)
            ]
            fd[a, b] = (e[0] - e[1]) / (2 * h) / vol
    assert np.abs(r["stress"]).max() > 1e-3
    np.testing.assert_allclose(r["stress"], fd, atol=1e-7)


def test_invariances_and_extensivity_with_ewald(pot, rng):
    z, x = random_molecule(pot.elements, 6, rng)
    ref = evaluate(pot, z, x)
    for reflect in (False, True):
        Q = random_rotation(rng, reflect)
        rot = evaluate(pot, z, x @ Q.T + 3.0)
        assert rot["energy"] == pytest.approx(ref["energy"], abs=ATOL)
        np.testing.assert_allclose(rot["forces"], ref["forces"] @ Q.T, atol=ATOL)
    perm = rng.permutation(len(z))
    assert evaluate(pot, z[perm], x[perm])["energy"] == pytest.approx(ref["energy"], abs=ATOL)
    # periodic: rotation, and a 2x2x2 supercell carries 8x the energy (Ewald is extensive)
    z, x, cell = periodic_cell(pot.elements, rng)
    pbc = [True] * 3
    ref = evaluate(pot, z, x, cell, pbc, stress=True)
    Q = random_rotation(rng)
    rot = evaluate(pot, z, x @ Q.T, cell @ Q.T, pbc, stress=True)
    assert rot["energy"] == pytest.approx(ref["energy"], abs=ATOL)
    np.testing.assert_allclose(rot["stress"], Q @ ref["stress"] @ Q.T, atol=ATOL)
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    big = evaluate(
        pot, np.tile(z, 8), (x[None] + (shifts @ cell)[:, None]).reshape(-1, 3), 2 * cell, pbc, stress=True
    )
    assert big["energy"] / 8 == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(big["stress"], ref["stress"], atol=1e-9)


def test_physics_energy_is_not_scaled_and_batches_agree(pot, rng):
    z1, x1 = random_molecule(pot.elements, 4, rng)
    z2, x2, cell = periodic_cell(pot.elements, rng)
    graphs = [
        atomic_graph(z1, x1, pot.cutoff, dtype=DT),
        atomic_graph(z2, x2, pot.cutoff, cell, [True] * 3, dtype=DT),
    ]
    out = pot(batch_graphs(graphs), forces=True)
    sep = [evaluate(pot, z1, x1), evaluate(pot, z2, x2, cell, [True] * 3)]
    np.testing.assert_allclose(out["energy"].detach().numpy(), [s["energy"] for s in sep], atol=ATOL)
    # the dipole is defined for the molecule only
    assert torch.isfinite(out["dipole"][0]).all() and torch.isnan(out["dipole"][1]).all()
    bare = Potential(pot.model, scale=0.0, shift=0.0).to(DT).eval()
    o = bare(batch_graphs(graphs), forces=False)
    assert float(o["electrostatic_energy"].detach().abs().min()) > 1e-3
    torch.testing.assert_close(o["energy"], o["electrostatic_energy"], rtol=0, atol=1e-12)


def test_charges_follow_the_total_charge_of_atoms_info(pot):
    from ase import Atoms

    from scifm.mlip.calculator import SciFMCalculator

    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = SciFMCalculator(pot, dtype="float64")
    atoms.get_potential_energy()
    q0 = atoms.calc.results["charges"]
    assert q0.sum() == pytest.approx(0.0, abs=1e-12)
    dip = atoms.calc.results["dipole"]
    np.testing.assert_allclose(dip, (q0[:, None] * atoms.positions).sum(0), atol=1e-12)
    atoms.info["charge"] = 1.0  # an info change triggers a new calculation
    atoms.get_potential_energy()
    assert atoms.calc.results["charges"].sum() == pytest.approx(1.0, abs=1e-12)


def test_qeq_force_is_the_charge_response_part_of_the_force(rng):
    """F_qeq = -Σ_j ∂E_el/∂q_j ∂q_j/∂x, checked against finite differences of the predicted charges."""
    pot = full_physics_potential(seed=2)
    pot.model.qeq_forces = True
    z, x = random_molecule(pot.elements, 4, rng)

    def run(positions, grad=True):
        g = batch_graphs([atomic_graph(z, positions, pot.cutoff, dtype=DT)])
        return pot(g, forces=grad)

    out = run(x)
    fq = out["qeq_forces"].detach().numpy()
    q = out["charges"].detach().clone().requires_grad_(True)
    from scifm.mlip.physics.coulomb import coulomb_node_energy

    g = batch_graphs([atomic_graph(z, x, pot.cutoff, dtype=DT)])
    species = pot.model.species(g.z)
    e_el = (
        coulomb_node_energy(q, g).sum()
        + (pot.model.chi[species] ** 2 * q + pot.model.eta[species] ** 2 * q * q).sum()
    )
    (dedq,) = torch.autograd.grad(e_el, q)
    h, fd = 1e-5, np.zeros_like(x)
    for a in range(len(z)):
        for k in range(3):
            xp, xm = x.copy(), x.copy()
            xp[a, k] += h
            xm[a, k] -= h
            dq = (run(xp, False)["charges"] - run(xm, False)["charges"]).detach() / (2 * h)
            fd[a, k] = -float((dedq * dq).sum())
    assert np.abs(fq).max() > 1e-3
    np.testing.assert_allclose(fq, fd, atol=1e-7)


def test_d3_dispersion_is_added_at_md_time_and_switchable():
    from ase.build import molecule
    from dftd3.ase import DFTD3

    from scifm.mlip.calculator import SciFMCalculator

    pot = full_physics_potential(dispersion="b3lyp")
    atoms = molecule("CH3OH")
    atoms.calc = SciFMCalculator(pot, dtype="float64")  # "auto": the model's config names b3lyp
    e_with, f_with = atoms.get_potential_energy(), atoms.get_forces()
    d3_e = atoms.calc.results["dispersion_energy"]
    atoms.calc = SciFMCalculator(pot, dtype="float64", dispersion=None)
    e_without, f_without = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = DFTD3(method="b3lyp", damping="d3bj")
    assert d3_e < 0 and e_with - e_without == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(f_with - f_without, atoms.get_forces(), atol=1e-10)


# -- training through the CLI ---------------------------------------------------------------------------


def _subset(tmp_path, strip_charges: bool, n_traj: int = 6, per_traj: int = 3):
    """A few frames of the bundled dataset (several trajectories, so the split by trajectory works), written
    as text; ``strip_charges`` removes the charges column and the dipole key."""
    from scifm.mlip.data import default_dataset_path

    lines = default_dataset_path().read_text().splitlines()
    out, k, taken = [], 0, {}
    while k < len(lines):
        n = int(lines[k])
        header, atoms = lines[k + 1], lines[k + 2 : k + 2 + n]
        k += 2 + n
        traj = int(header.split("traj_id=")[1].split()[0])
        if traj >= n_traj or taken.get(traj, 0) >= per_traj:
            continue
        taken[traj] = taken.get(traj, 0) + 1
        if strip_charges:
            assert "pos:R:3:charge:R:1:" in header
            header = header.replace("pos:R:3:charge:R:1:", "pos:R:3:")
            header = header.split(" dipole=")[0] + " charge=" + header.split(" charge=", 1)[1]
            atoms = [" ".join(a.split()[:4] + a.split()[5:]) for a in atoms]
        out += [str(n), header, *atoms]
    path = tmp_path / ("plain.extxyz" if strip_charges else "labelled.extxyz")
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize("strip_charges", [False, True])
def test_train_bamboo_cli(tmp_path, strip_charges):
    from scifm.cli.main import main
    from scifm.mlip.train import bamboo_loss_weights

    data = _subset(tmp_path, strip_charges)
    out = tmp_path / "run"
    argv = [
        "train",
        "mlip",
        "--model",
        "bamboo",
        "--train",
        str(data),
        "--max-epochs",
        "1",
        "--batch-size",
        "8",
        "--split",
        "0.5,0.25,0.25",
        "--out",
        str(out),
        "--no-progress",
        "--cutoff",
        "4.0",
        "--model-config",
        '{"n_features": 8, "n_heads": 2, "n_layers": 2, "n_rbf": 6, "readout_hidden": [8]}',
    ]
    if not strip_charges:
        argv += ["--qeq-weight", "100"]  # the QEq-force regulariser (second-order autograd) trains too
        argv += ["--virial-weight", "1"]  # and the cluster virial loss
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    w = metrics["loss_weights"]
    messages = " ".join(str(c.message) for c in caught)
    if strip_charges:
        assert w["charges"] == 0 and w["dipole"] == 0
        assert "no 'charges' labels" in messages and "no 'dipole' labels" in messages
    else:
        ref = bamboo_loss_weights(10.0)
        assert w["charges"] == pytest.approx(ref["charges"]) and w["dipole"] == pytest.approx(ref["dipole"])
        assert 0.5 < w["charges"] < 1 and 10 < w["dipole"] < 20
        header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
        assert "val/charges_mae" in header and "val/dipole_mae" in header and "train/qeq_force_rms" in header
        assert "train/virial_mae" in header and "val/virial_mae" in header
        assert w["qeq"] == 100 and w["virial"] == 1
    assert metrics["model"] == "bamboo"
    # the exported model runs in the calculator and predicts charges that sum to the molecule's charge
    from ase.build import molecule

    from scifm.mlip.calculator import SciFMCalculator

    atoms = molecule("CH3OH")
    atoms.calc = SciFMCalculator(out / "model")
    assert np.isfinite(atoms.get_potential_energy())
    assert abs(atoms.calc.results["charges"].sum()) < 1e-5
