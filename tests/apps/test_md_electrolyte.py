"""Electrolyte box builder (counts, charges, density; packmol) and cluster extraction (whole molecules,
charge tracking)."""

from __future__ import annotations

import numpy as np
import pytest
from test_md_common import water_box

from scifm.core.errors import ConfigError
from scifm.md.clusters import extract_cluster, molecule_ids, whole_molecules
from scifm.md.electrolyte import build_box, make_species, molecule_counts, parse_composition


def test_counts_reproduce_the_bamboo_benchmark_box():
    # anchor: 182 EC + 182 DMC + 14 LiPF6 in a 35.9208 Å cube = 1.238 g/cm³, 0.5 M
    comp = parse_composition("EC:DMC 1:1 + LiPF6 0.5 M")
    species = {n: make_species(n, s) for n, s in comp.smiles.items()}
    counts, volume = molecule_counts(comp, species, 1.238, n_solvent=364)
    assert counts == {"EC": 182, "DMC": 182, "Li": 14, "PF6": 14}
    assert volume ** (1 / 3) == pytest.approx(35.9208, abs=0.01)


def test_composition_forms_and_errors():
    c = parse_composition("C1COC(=O)O1 x 5 + [Li+] x 1 + F[P-](F)(F)(F)(F)F x 1")
    assert c.counts == {"C1COC(=O)O1": 5, "[Li+]": 1, "F[P-](F)(F)(F)(F)F": 1}
    assert parse_composition("EC x 4 + LiPF6 x 2").counts == {"EC": 4, "Li": 2, "PF6": 2}
    assert parse_composition("EC:DMC 3:7 wt + LiPF6 1.0 M").ratio_basis == "mass"
    for bad in ("EC:DMC 1:1:1", "EC:DMC 1:1 + NaCl 1 M", "EC:DMC 1:1 + LiPF6 lots"):
        with pytest.raises(ConfigError):
            parse_composition(bad)


def test_packmol_box_has_counts_charges_density():
    atoms, rep = build_box("EC:DMC 1:1 + LiPF6 1.0 M", 1.2, n_solvent=6, tolerance=1.8)
    assert rep["counts"] == {"EC": 3, "DMC": 3, "Li": 1, "PF6": 1}
    assert rep["total_charge"] == 0.0 and atoms.info["charge"] == 0.0
    assert rep["density_g_cm3"] == pytest.approx(1.2, rel=1e-4)  # RDKit vs ASE mass tables
    mol = molecule_ids(atoms)
    q = np.bincount(mol, weights=atoms.arrays["formal_charge"])
    assert sorted(q) == [-1, 0, 0, 0, 0, 0, 0, 1]
    # molecules are intact: connectivity from geometry finds the same 8 molecules as the builder's mol_id
    plain = atoms.copy()
    del plain.arrays["mol_id"]
    assert int(molecule_ids(plain).max()) + 1 == 8


def _split_box():
    atoms = water_box(n_side=2, spacing=3.1)
    atoms.positions += [1.2, 0, 0]  # push molecules across the x boundary...
    atoms.wrap()  # ...and wrap: some water molecules are now split over the periodic boundary
    atoms.arrays["formal_charge"][0] = 1.0  # pretend molecule 0 is a cation (charge bookkeeping only)
    atoms.arrays["formal_charge"][3] = -1.0  # and molecule 1 an anion
    return atoms


def test_cluster_keeps_whole_molecules_and_tracks_charge():
    atoms = _split_box()
    mol = molecule_ids(atoms)
    ref = water_box(n_side=2, spacing=3.1)
    d_ref = np.linalg.norm(ref.positions[1] - ref.positions[0])
    cl = extract_cluster(atoms, centre=0, radius=3.5, mol=mol)
    n_mol = cl.info["n_molecules"]
    assert len(cl) == 3 * n_mol and not cl.pbc.any()
    for m in range(n_mol):  # every molecule whole: O–H bonds keep their length
        o, h1, h2 = cl.positions[cl.arrays["mol_id"] == m]
        assert np.linalg.norm(h1 - o) == pytest.approx(d_ref, abs=1e-9)
        assert np.linalg.norm(h2 - o) == pytest.approx(d_ref, abs=1e-9)
    q = cl.arrays["formal_charge"].sum()
    assert cl.info["charge"] == pytest.approx(q)
    big = extract_cluster(atoms, centre=0, radius=20.0, mol=mol)
    assert len(big) == len(atoms) and big.info["charge"] == 0.0
    small = extract_cluster(atoms, centre=1, radius=0.1, mol=mol)
    assert len(small) == 3 and small.info["charge"] == -1.0


def test_whole_molecules_undo_wrapping():
    atoms = _split_box()
    pos = whole_molecules(atoms, molecule_ids(atoms))
    for m in range(8):
        p = pos[3 * m : 3 * m + 3]
        assert np.linalg.norm(p[1] - p[0]) < 1.0 and np.linalg.norm(p[2] - p[0]) < 1.0


def test_gfn2_labels_of_a_charged_cluster():
    from scifm.md.clusters import label_clusters

    atoms = _split_box()
    atoms.arrays["formal_charge"][:] = 0.0
    cl = extract_cluster(atoms, centre=0, radius=0.1)  # one water
    cl.info["charge"] = 0.0
    two = cl.copy()
    two.info["charge"] = 1.0  # a radical cation: odd electron count -> doublet
    labelled, failed = label_clusters([cl, two], progress=False)
    assert failed == 0 and len(labelled) == 2
    for a, q in zip(labelled, (0.0, 1.0), strict=True):
        assert a.get_forces().shape == (3, 3) and np.isfinite(a.get_potential_energy())
        assert a.arrays["charges"].sum() == pytest.approx(q, abs=1e-6) and a.info["dipole"].shape == (3,)


def test_cli_clusters_rattle_distorts_geometries(tmp_path, capsys):
    import ase.io

    from scifm.cli.main import main

    box = tmp_path / "box.extxyz"
    ase.io.write(box, water_box(n_side=2), format="extxyz")
    common = ["data", "clusters", "--trajectory", str(box), "--centres", "all", "--radius", "2.5"]
    common += ["--label", "none", "--seed", "3", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "plain.extxyz")]) == 0
    assert main([*common, "--rattle", "0.1", "--out", str(tmp_path / "rattled.extxyz")]) == 0
    plain = ase.io.read(tmp_path / "plain.extxyz", ":")
    rattled = ase.io.read(tmp_path / "rattled.extxyz", ":")
    assert len(plain) == len(rattled) == 8
    shifts = []
    for p, r in zip(plain, rattled, strict=True):
        assert p.get_chemical_symbols() == r.get_chemical_symbols() and "rattle_A" not in p.info
        assert 0.0 <= r.info["rattle_A"] <= 0.1
        d = r.positions - p.positions
        shifts.append(np.abs(d).max())
        # rms displacement per coordinate is the cluster's σ (to sampling noise)
        assert np.sqrt((d**2).mean()) == pytest.approx(r.info["rattle_A"], rel=0.6, abs=0.01)
    assert max(shifts) > 0.02
    assert main([*common, "--rattle", "1.0", "--out", str(tmp_path / "bad.extxyz")]) == 2
    assert "--rattle 1.0" in capsys.readouterr().err
    assert not (tmp_path / "bad.extxyz").exists()


def test_templates_are_xtb_minima_so_pf6_is_octahedral():
    """ETKDG alone leaves PF6- distorted (F-P-F from 35° to 154°), tens of eV above its GFN2-xTB minimum;
    every molecule of a packed box, and so every training cluster, inherits its template."""
    from ase import Atoms
    from tblite.ase import TBLite

    def pf6_angles(sp):
        v = sp.positions[sp.numbers == 9] - sp.positions[sp.numbers == 15][0]
        v /= np.linalg.norm(v, axis=1)[:, None]
        return np.degrees(np.arccos(np.clip(v @ v.T, -1, 1)))[np.triu_indices(6, 1)]

    raw = make_species("PF6", "F[P-](F)(F)(F)(F)F", relax="none")
    relaxed = make_species("PF6", "F[P-](F)(F)(F)(F)F")
    ang = pf6_angles(relaxed)
    assert np.sort(ang)[:12] == pytest.approx(90.0, abs=2.0) and np.sort(ang)[12:] == pytest.approx(
        180, abs=2.0
    )
    assert np.abs(np.sort(pf6_angles(raw))[:12] - 90).max() > 20  # the problem this guards against

    def energy(sp):
        a = Atoms(numbers=sp.numbers, positions=sp.positions)
        a.calc = TBLite(method="GFN2-xTB", charge=sp.charge, verbosity=0)
        return a.get_potential_energy(), np.abs(a.get_forces()).max()

    (e_raw, _), (e_min, f_min) = energy(raw), energy(relaxed)
    assert e_raw - e_min > 1.0 and f_min < 0.05  # eV, eV/Å
    ec = make_species("EC", "C1COC(=O)O1")
    assert energy(ec)[1] < 0.05
    with pytest.raises(ConfigError, match="relaxation"):
        make_species("EC", "C1COC(=O)O1", relax="uff")


def test_template_whose_xtb_scf_fails_is_re_embedded_and_then_refused(monkeypatch):
    """Some ETKDG embeddings of PF6- (seed 4 of the electrolyte benchmark) leave GFN2-xTB's SCF unconverged:
    the next embedding is tried; a species no embedding can relax is refused with every attempt named."""
    from ase.calculators.calculator import CalculationFailed

    from scifm.md import electrolyte

    calls = []

    def flaky(numbers, positions, charge, fmax=0.02):
        calls.append(positions.copy())
        if len(calls) == 1:
            raise CalculationFailed("SCF not converged in 250 cycles")
        return positions

    monkeypatch.setattr(electrolyte, "relax_template", flaky)
    sp = make_species("PF6", "F[P-](F)(F)(F)(F)F", seed=4)
    assert len(calls) == 2 and not np.allclose(calls[0], calls[1])  # a different embedding the second time
    assert sp.charge == -1 and sorted(sp.numbers.tolist()) == [9] * 6 + [15]

    def broken(numbers, positions, charge, fmax=0.02):
        raise CalculationFailed("SCF not converged in 250 cycles")

    monkeypatch.setattr(electrolyte, "relax_template", broken)
    with pytest.raises(ConfigError, match=r"no usable template for 'PF6'.*embedding 4: GFN2-xTB SCF not"):
        make_species("PF6", "F[P-](F)(F)(F)(F)F")
