"""The GFN2-xTB data generator: labels agree with tblite, forces are -dE/dx, runs are reproducible."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

from ase.units import Debye  # noqa: E402

from scifm.core.errors import ConfigError, DataError  # noqa: E402
from scifm.mlip.data import default_dataset_path  # noqa: E402
from scifm.mlip.data.generate import configure, generate, read, run, write  # noqa: E402
from scifm.mlip.data.molecules import MOLECULES  # noqa: E402

TINY = dict(md_warmup=4, md_interval=3, progress=False)


def _tblite(atoms, charge=0):
    from tblite.ase import TBLite

    a = atoms.copy()
    a.calc = TBLite(method="GFN2-xTB", charge=charge, verbosity=0)
    return a


@pytest.fixture(scope="module")
def water():
    return generate([("water", "O")], n_perturbed=1, n_md=1, seed=3, **TINY)


def test_frames_carry_labels_and_metadata(water):
    assert [a.info["source"] for a in water] == ["perturbed", "md"]
    assert [a.info["traj_id"] for a in water] == [0, 1]
    assert water[1].info["step"] == TINY["md_warmup"] + TINY["md_interval"]
    for a in water:
        assert a.get_chemical_formula() == "H2O"
        assert np.isfinite(a.get_potential_energy())
        assert a.get_forces().shape == (3, 3) and np.isfinite(a.get_forces()).all()
        assert a.info["level_of_theory"] == "GFN2-xTB" and a.info["charge"] == 0
        assert a.info["molecule"] == "water" and a.info["smiles"] == "O"
        # Mulliken charges partition the total charge.
        assert a.arrays["charges"].sum() == pytest.approx(a.info["charge"], abs=1e-6)
    # The two sources are different geometries (MD moved, perturbation displaced).
    assert not np.allclose(water[0].positions, water[1].positions)


def test_labels_match_a_direct_tblite_call(water):
    # The generator restarts each SCF from the previous frame's density, a fresh call from scratch: they
    # agree to the SCF tolerance (~1e-5 eV/Å), far below any model error.
    for a in water:
        ref = _tblite(a)
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=2e-4)
        np.testing.assert_allclose(a.info["dipole"], ref.calc.get_property("dipole"), atol=2e-4)


def test_forces_are_minus_energy_gradient(water):
    """Central difference of the tblite energy on the coordinate with the largest stored force."""
    a = water[0]
    f = a.get_forces()
    i, k = np.unravel_index(np.argmax(np.abs(f)), f.shape)
    assert abs(f[i, k]) > 0.05  # a displaced geometry: the check below would be vacuous at a minimum
    h = 2e-3  # Å
    energies = []
    for sign in (1, -1):
        b = _tblite(a)
        b.positions[i, k] += sign * h
        energies.append(b.get_potential_energy())
    fd = -(energies[0] - energies[1]) / (2 * h)
    assert f[i, k] == pytest.approx(fd, abs=5e-3 + 1e-3 * abs(fd))


def test_dipole_is_in_e_angstrom(water):
    # GFN2-xTB water dipole is ~2.3 D (experiment 1.85 D); e·Bohr or Debye storage would fall outside.
    md = water[1]
    mu_debye = np.linalg.norm(md.info["dipole"]) / Debye
    assert 1.5 < mu_debye < 3.2


def test_same_seed_same_frames_and_different_seed_differs(water):
    again = generate([("water", "O")], n_perturbed=1, n_md=1, seed=3, **TINY)
    for a, b in zip(water, again, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
    other = generate([("water", "O")], n_perturbed=1, n_md=0, seed=4, **TINY)
    assert not np.allclose(other[0].positions, water[0].positions)


def test_charged_molecule_gets_its_formal_charge():
    (a,) = generate([("ammonium", "[NH4+]")], n_perturbed=1, n_md=0, optimize=False, seed=0, **TINY)
    assert a.info["charge"] == 1
    assert a.arrays["charges"].sum() == pytest.approx(1.0, abs=1e-6)
    assert a.get_potential_energy() == pytest.approx(_tblite(a, charge=1).get_potential_energy(), abs=1e-6)


def test_invalid_smiles_is_a_one_line_error_naming_it():
    with pytest.raises(DataError) as err:
        generate([("bad", "C1CC(")], n_perturbed=1, n_md=0, progress=False)
    msg = str(err.value)
    assert "C1CC(" in msg and "bad" in msg and "\n" not in msg


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="method"):
        generate([("m", "C")], n_perturbed=1, n_md=0, method="GFN9-xTB", progress=False)
    with pytest.raises(ConfigError, match="nothing to generate"):
        generate([("m", "C")], n_perturbed=0, n_md=0, progress=False)


def test_scf_failure_skips_frames_with_a_counted_warning():
    with pytest.warns(RuntimeWarning, match=r"skipped 2 of 2 frame"):
        frames = generate(
            [("m", "C")], n_perturbed=1, n_md=1, optimize=False, max_scf_iterations=1, seed=0, **TINY
        )
    assert frames == []


def test_extxyz_round_trip(water, tmp_path):
    path = write(tmp_path / "w.extxyz", water)
    back = read(path)
    assert len(back) == len(water)
    for a, b in zip(water, back, strict=True):
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-7)
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(b.arrays["charges"], a.arrays["charges"], atol=1e-7)
        np.testing.assert_allclose(b.info["dipole"], a.info["dipole"], atol=1e-7)
        for key in ("traj_id", "step", "source", "molecule", "charge"):
            assert b.info[key] == a.info[key]


def test_h5_output(water, tmp_path):
    atomistic = pytest.importorskip("scifm.core.data.atomistic")
    path = write(tmp_path / "w.h5", water, attrs={"level_of_theory": "GFN2-xTB"})
    ds = atomistic.AtomisticH5(path)
    assert len(ds) == 2
    b = ds.to_atoms(1)
    np.testing.assert_allclose(b.get_forces(), water[1].get_forces())
    np.testing.assert_allclose(b.arrays["charges"], water[1].arrays["charges"])
    assert b.info["traj_id"] == 1


def _cli(argv):
    p = argparse.ArgumentParser()
    configure(p)
    return p.parse_args(argv)


def test_cli_writes_file_and_rejects_conflicting_sources(tmp_path):
    out = tmp_path / "d.extxyz"
    run(
        _cli(
            [
                "--smiles",
                "C",
                "--n-perturbed",
                "2",
                "--n-md",
                "0",
                "--no-optimize",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
    )
    frames = read(out)
    assert len(frames) == 2 and frames[0].info["smiles"] == "C"
    with pytest.raises(ConfigError, match="only one"):
        run(_cli(["--smiles", "C", "--molecules", "ethanol", "--out", str(out)]))
    with pytest.raises(ConfigError, match="unknown molecule"):
        run(_cli(["--molecules", "unobtainium", "--out", str(out)]))
    mfile = tmp_path / "mols.txt"
    mfile.write_text("# comment\nCO methanol\nC1CC( broken\n")
    with pytest.raises(DataError, match=r"mols.txt \[broken\]"):
        run(_cli(["--molecule-file", str(mfile), "--out", str(out)]))


def test_bundled_molecules_are_valid_and_varied():
    from rdkit import Chem

    names = [n for n, _ in MOLECULES]
    assert len(names) == len(set(names)) >= 8
    for _, smi in MOLECULES:
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        assert 6 <= mol.GetNumAtoms() <= 21
        assert Chem.GetFormalCharge(mol) == 0
        assert {a.GetSymbol() for a in mol.GetAtoms()} <= {"C", "H", "N", "O", "F", "S"}


def test_default_dataset_ships_and_is_labelled():
    try:
        path = default_dataset_path()
    except DataError:
        pytest.skip("default data set not generated yet")
    assert path.stat().st_size < 5_000_000
    frames = read(path)
    assert len(frames) >= 500
    assert {a.info["molecule"] for a in frames} == {n for n, _ in MOLECULES}
    assert {a.info["source"] for a in frames} == {"perturbed", "md"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = np.concatenate([a.get_forces() for a in frames])
    assert np.isfinite(f).all() and np.abs(f).max() < 50.0


@pytest.mark.slow  # spawns two interpreters that import numpy, ASE, RDKit and tblite
def test_worker_pool_gives_the_same_frames_as_one_process():
    mols = [("methane", "C"), ("water", "O")]
    kw = dict(n_perturbed=1, n_md=1, seed=7, optimize=False, **TINY)
    serial = generate(mols, workers=1, **kw)
    pooled = generate(mols, workers=2, **kw)
    assert [a.info["traj_id"] for a in pooled] == [0, 1, 2, 3]
    for a, b in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
