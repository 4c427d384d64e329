"""Dispersion beyond a model's cutoff: D3 C6 of molecule pairs, the homogeneous-fluid tail (energy and
stress consistent), molecule detection across periodic boundaries, and the calculator option."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.fd import calculate_numerical_stress
from ase.units import Bohr, Hartree
from physics_suite import make_potential

from scifm.mlip.calculator import SciFMCalculator
from scifm.mlip.physics.dispersion import DispersionTail, molecules, pair_c6


def test_argon_c6_is_the_d3_reference_and_molecular_c6_combine():
    c6 = pair_c6([18], [[0, 0, 0]], [18], [[0, 0, 0]])
    assert c6 / (Hartree * Bohr**6) == pytest.approx(64.6, rel=0.01)  # D3 free-atom Ar-Ar, a.u.
    w = molecule("H2O")
    m = molecule("CH4")
    ab = pair_c6(w.numbers, w.positions, m.numbers, m.positions)
    assert ab == pytest.approx(pair_c6(m.numbers, m.positions, w.numbers, w.positions), rel=1e-6)
    # C6 grows with polarisability (water < methane) and mixed pairs follow the geometric-mean rule
    ww = pair_c6(w.numbers, w.positions, w.numbers, w.positions)
    mm = pair_c6(m.numbers, m.positions, m.numbers, m.positions)
    assert ww < ab < mm and ab == pytest.approx(math.sqrt(ww * mm), rel=0.05)  # combination rule


def _water_box(n_side=3, spacing=3.1, split=False):
    w = molecule("H2O")
    atoms = Atoms(cell=[n_side * spacing] * 3, pbc=True)
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                m = w.copy()
                m.positions += np.array([i, j, k]) * spacing + 0.5
                atoms += m
    if split:  # move the whole box so that molecules straddle the boundary, then wrap
        atoms.positions += 0.5 * spacing - 0.4
        atoms.wrap()
    return atoms


def test_tail_energy_and_stress_of_a_water_box():
    atoms = _water_box()
    tail = DispersionTail(cutoff=5.0)
    c6 = pair_c6(*(2 * (molecule("H2O").numbers, molecule("H2O").positions)))
    n, v = 27, atoms.cell.volume
    out = tail.compute(atoms)
    assert out["energy"] == pytest.approx(-2 * math.pi / 3 * n * n * c6 / (v * 5.0**3), rel=1e-6)
    assert out["pressure"] == pytest.approx(out["energy"] / v, rel=1e-12) and out["pressure"] < 0

    class Tail:  # the tail alone as an ASE calculator, to check the stress by ASE's own finite differences
        implemented_properties = ["energy", "stress"]

        def get_property(self, name, atoms, allow_calculation=True):
            return tail.compute(atoms)[name]

        def get_potential_energy(self, atoms, force_consistent=False):
            return tail.compute(atoms)["energy"]

    a = atoms.copy()
    a.calc = Tail()
    np.testing.assert_allclose(calculate_numerical_stress(a, eps=1e-6), out["stress"], rtol=1e-5, atol=1e-12)
    # molecules cut by the boundary are found whole (same composition, same coefficient)
    split = _water_box(split=True)
    assert len(np.unique(molecules(split))) == 27
    assert DispersionTail(5.0).compute(split)["energy"] == pytest.approx(out["energy"], rel=1e-6)
    # a larger cutoff leaves less outside it
    assert DispersionTail(8.0).compute(atoms)["energy"] == pytest.approx(
        out["energy"] * (5 / 8) ** 3, rel=1e-9
    )


def test_calculator_adds_the_tail_only_to_periodic_energy_and_stress():
    pot = make_potential("painn", seed=3)  # elements H, C, O; cutoff 4 Å
    atoms = _water_box()
    plain = SciFMCalculator(pot, dtype="float64")
    tailed = SciFMCalculator(pot, dtype="float64", dispersion_tail=True)
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = plain, tailed
    t = DispersionTail(pot.cutoff).compute(atoms)
    assert b.get_potential_energy() - a.get_potential_energy() == pytest.approx(t["energy"], abs=1e-9)
    assert b.calc.results["dispersion_tail_energy"] == pytest.approx(t["energy"])
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-12)
    np.testing.assert_allclose(b.get_stress() - a.get_stress(), t["stress"], atol=1e-12)
    assert b.get_potential_energies().sum() == pytest.approx(b.get_potential_energy(), abs=1e-8)
    mol = molecule("H2O")
    mol.calc = tailed
    e = mol.get_potential_energy()
    mol.calc = plain
    assert e == pytest.approx(mol.get_potential_energy(), abs=1e-12)
