"""The ASE calculator: agrees with the Potential, tracks atoms.info, runs MD and relaxations, and an
exported model predicts exactly what the in-memory one did."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from physics_suite import evaluate, make_potential, periodic_cell, random_molecule

from scifm.core.errors import DataError
from scifm.mlip.calculator import SciFMCalculator
from scifm.mlip.export import export_potential, load_potential


@pytest.fixture(scope="module")
def pot():
    return make_potential("painn", seed=3)


def _crystal(pot, seed=0):
    z, x, cell = periodic_cell(pot.elements, np.random.default_rng(seed))
    return Atoms(numbers=z, positions=x, cell=cell, pbc=True)


def _molecule(pot, seed=0, n=6):
    z, x = random_molecule(pot.elements, n, np.random.default_rng(seed))
    return Atoms(numbers=z, positions=x)


def test_calculator_matches_potential(pot):
    atoms = _crystal(pot)
    atoms.calc = SciFMCalculator(pot, dtype="float64")
    ref = evaluate(pot, atoms.numbers, atoms.positions, atoms.cell.array, [True] * 3, stress=True)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], abs=1e-12)
    assert atoms.get_potential_energy() == atoms.calc.get_property("free_energy", atoms)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), ref["node_energy"], atol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(ref["energy"], abs=1e-10)
    s = ref["stress"]
    np.testing.assert_allclose(
        atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], atol=1e-12
    )
    # the caller's module is untouched (the calculator works on a copy)
    assert pot.atom_ref.dtype == torch.float64 and not pot.training


def test_stress_sign_matches_ase_finite_difference(pot):
    # ASE's own numerical stress (energy vs. cell deformation) fixes the sign convention independently
    atoms = _crystal(pot, seed=1)
    atoms.calc = SciFMCalculator(pot, dtype="float64")
    np.testing.assert_allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7)


def test_float32_close_to_float64(pot):
    atoms = _molecule(pot)
    e = {}
    for dt in ("float32", "float64"):
        atoms.calc = SciFMCalculator(pot, dtype=dt)
        e[dt] = (atoms.get_potential_energy(), atoms.get_forces())
    assert e["float32"][0] == pytest.approx(e["float64"][0], abs=1e-4)
    np.testing.assert_allclose(e["float32"][1], e["float64"][1], atol=1e-4)


def test_molecule_has_no_stress_and_info_change_recomputes(pot):
    atoms = _molecule(pot)
    calc = SciFMCalculator(pot, dtype="float64")
    atoms.calc = calc
    atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    assert calc.check_state(atoms) == []
    atoms.info["charge"] = 1
    assert "info" in calc.check_state(atoms)
    atoms.get_potential_energy()
    assert calc.atoms.info["charge"] == 1 and calc.check_state(atoms) == []


def test_skin_gives_identical_results(pot):
    rng = np.random.default_rng(5)
    a0 = _crystal(pot, seed=2).repeat((2, 1, 1))
    plain, skinned = SciFMCalculator(pot, dtype="float64"), SciFMCalculator(pot, dtype="float64", skin=0.6)
    for step in range(4):
        a = a0.copy()
        a.positions += 0.08 * step * rng.normal(size=a.positions.shape)
        r = []
        for calc in (plain, skinned):
            calc.calculate(a, ["energy", "forces", "stress"])
            r.append(dict(calc.results))
        assert r[1]["energy"] == pytest.approx(r[0]["energy"], abs=1e-12)
        np.testing.assert_allclose(r[1]["forces"], r[0]["forces"], atol=1e-12)
        np.testing.assert_allclose(r[1]["stress"], r[0]["stress"], atol=1e-12)


def test_velocity_verlet_conserves_energy(pot):
    atoms = _molecule(pot, seed=3)
    atoms.calc = SciFMCalculator(pot, dtype="float64")
    atoms.set_velocities(np.random.default_rng(0).normal(size=(len(atoms), 3)) * 0.02)  # Å/(ASE time)
    e_tot, e_pot = [], []

    def record():
        e_tot.append(atoms.get_total_energy())
        e_pot.append(atoms.get_potential_energy())

    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(20)
    assert np.ptp(e_pot) > 1e-3  # the atoms do move on a non-flat surface
    assert np.ptp(e_tot) < 1e-2 * np.ptp(e_pot)


def test_bfgs_lowers_energy_and_forces(pot):
    atoms = _molecule(pot, seed=3)
    atoms.calc = SciFMCalculator(pot, dtype="float64")
    e0, f0 = atoms.get_potential_energy(), np.abs(atoms.get_forces()).max()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=25)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < f0


def test_export_load_round_trip(pot, tmp_path):
    path = export_potential(pot, tmp_path / "model", meta={"note": "test"})
    record = json.loads(path.read_text())
    assert record["config"]["model"] == "painn" and record["config"]["elements"] == pot.elements
    assert record["config"]["cutoff"] == pot.cutoff and record["config"]["units"]["energy"] == "eV"
    loaded = load_potential(tmp_path / "model")
    assert not loaded.training and loaded.atom_ref.dtype == torch.float64
    for key, value in pot.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    atoms = _crystal(pot)
    ref = evaluate(pot, atoms.numbers, atoms.positions, atoms.cell.array, [True] * 3, stress=True)
    atoms.calc = SciFMCalculator(tmp_path / "model", dtype="float64")
    assert atoms.get_potential_energy() == ref["energy"]  # bit-identical
    np.testing.assert_array_equal(atoms.get_forces(), ref["forces"])
    assert load_potential(tmp_path / "model", dtype="float32").atom_ref.dtype == torch.float32


def test_load_rejects_foreign_model(tmp_path):
    from scifm.core.export import save_model

    save_model(tmp_path / "m", name="something-else", config={}, state_dict={"w": torch.zeros(2)}, meta={})
    with pytest.raises(DataError, match="not an MLIP potential"):
        load_potential(tmp_path / "m")
