"""Peptide builder, force fields, encodings/orderings, OpenMM target energy and forces, chirality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scifm.core.errors import ConfigError
from scifm.prose.encoding import ATOM_TYPES, BLOCK_ORDERINGS, atom_ordering, block_orderings, encode_topology
from scifm.prose.energy import OpenMMEnergy, TargetEnergy
from scifm.prose.metrics import chirality_signs, fix_chirality, ramachandran_pairs, stereocentres
from scifm.prose.peptides import (
    AA1_TO_3,
    FORCE_FIELDS,
    build_peptide,
    create_system,
    default_force_field,
    minimise,
    parse_system_name,
    topology_from_pdb,
)


@pytest.fixture(scope="module")
def ala2():
    pep = build_peptide("A", capped=True, seed=0)
    system = create_system(pep.topology, default_force_field(True))
    return pep, system


def test_alanine_dipeptide_matches_the_anchor(ala2):
    pep, system = ala2
    assert pep.name == "Ace-A-Nme" and pep.n_atoms == 22
    names = [(a.residue.name, a.name) for a in pep.topology.atoms()]
    assert ("ACE", "CH3") in names and ("ACE", "HH31") in names and ("NME", "CH3") in names
    # anchor §5: minimised energy -53.6 kT with amber99sbildn + OBC at 300 K
    _, e = minimise(system, pep.positions, 300.0)
    assert e == pytest.approx(-53.6, abs=0.5)


def test_zwitterion_termini_and_amber_names():
    pep = build_peptide("KHD", seed=0)
    res = list(pep.topology.residues())
    first = {a.name for a in res[0].atoms()}
    last = {a.name for a in res[-1].atoms()}
    assert {"H1", "H2", "H3"} <= first and "H" not in first  # NH3+
    assert {"O", "OXT"} <= last and "HXT" not in last  # COO-
    assert res[1].name == "HIE" and "HE2" in {a.name for a in res[1].atoms()}
    assert "HZ3" in first  # Lys+ at pH 7
    system = create_system(pep.topology, "amber14-obc1")
    charge = sum(
        f.getParticleParameters(i)[0]._value
        for f in [system.getForce(k) for k in range(system.getNumForces())]
        if type(f).__name__ == "NonbondedForce"
        for i in range(system.getNumParticles())
    )
    assert charge == pytest.approx(0.0, abs=1e-4)  # +1 (N) +1 (Lys) -1 (Asp) -1 (C-term)


def test_twenty_random_sequences_minimise_to_finite_energies():
    rng = np.random.default_rng(0)
    letters = sorted(AA1_TO_3)
    seqs = ["".join(rng.choice(letters, int(rng.integers(2, 9)))) for _ in range(20)]
    for s in seqs:
        pep = build_peptide(s, seed=1)
        system = create_system(pep.topology, "amber14-obc1")
        _, e = minimise(system, pep.positions, 310.0, max_iterations=200)
        assert np.isfinite(e) and e < 0, (s, e)
        enc = encode_topology(pep.topology)
        assert (enc["atom_type"] >= 1).all() and enc["atom_type"].max() <= len(ATOM_TYPES)
        assert (enc["seq_len"] == len(s)).all()
        perms = block_orderings(pep.topology)
        assert perms.shape == (len(BLOCK_ORDERINGS), pep.n_atoms)
        assert all(sorted(p) == list(range(pep.n_atoms)) for p in perms.tolist())


def test_one_seed_gives_one_structure():
    """ETKDG and OpenMM's hydrogen placement (Python's global random) are both seeded by build_peptide,
    without touching the caller's random state; a plain-MD baseline from the built structure repeats."""
    import random

    random.seed(123)
    before = random.random()
    random.seed(123)
    a = build_peptide("WT", False, seed=0).positions
    assert random.random() == before  # the caller's stream is untouched
    random.seed(999)  # another global state changes nothing either
    b = build_peptide("WT", False, seed=0).positions
    assert np.array_equal(a, b)
    assert not np.allclose(build_peptide("WT", False, seed=1).positions, a)


def test_orderings_are_chemical():
    pep = build_peptide("FA", seed=0)
    top = pep.topology
    names = [a.name for a in top.atoms()]
    rbr = [names[i] for i in atom_ordering(top, "n2c_residue-by-residue_standard")]
    assert rbr[:6] == ["N", "H1", "H2", "H3", "CA", "HA"] and rbr[-3:] == ["C", "O", "OXT"]
    var = [names[i] for i in atom_ordering(top, "n2c_residue-by-residue_variant")]
    # PHE ring walked the other way round in the variant
    assert rbr.index("CD1") < rbr.index("CD2") and var.index("CD2") < var.index("CD1")
    bbf = [names[i] for i in atom_ordering(top, "n2c_backbone-first_standard")]
    assert bbf[:8] == ["N", "CA", "C", "O", "N", "CA", "C", "O"]
    flip = atom_ordering(top, "n2c_backbone-first_standard_flip")
    assert flip.tolist() == atom_ordering(top, "n2c_backbone-first_standard")[::-1].tolist()


def test_pdb_round_trip_keeps_names_and_system(ala2):
    pep, system = ala2
    top, pos = topology_from_pdb(pep.to_pdb())
    assert [a.name for a in top.atoms()] == [a.name for a in pep.topology.atoms()]
    assert np.allclose(pos, pep.positions, atol=1e-4)
    assert create_system(top, "amber99sbildn-obc").getNumParticles() == 22


def test_bad_sequences_are_config_errors():
    for bad in ("AXZ", "A", "AAAAAAAAA", ""):
        with pytest.raises(ConfigError):
            parse_system_name(bad)
    assert parse_system_name("ace-a-nme") == ("A", True)
    with pytest.raises(ConfigError):
        create_system(build_peptide("AA").topology, "charmm36")


def test_target_energy_in_kT_and_forces_are_minus_gradient(ala2):
    pep, system = ala2
    # Reference platform: double precision throughout (the CPU platform rounds positions to float32,
    # which makes a 1e-5 nm central difference noisy at the 1e-3 level)
    omm = OpenMMEnergy(system, FORCE_FIELDS["amber99sbildn-obc"]["temperature_K"], platform="Reference")
    x = pep.positions[None] + 0.01 * np.random.default_rng(0).normal(size=(3, 22, 3))
    e, f = omm(x, forces=True)
    assert e.shape == (3,) and f.shape == (3, 22, 3) and omm.n_evaluations == 3
    # central finite difference of U/kT along a random direction
    d = np.random.default_rng(1).normal(size=(22, 3))
    d /= np.linalg.norm(d)
    eps = 1e-5
    ep, _ = omm((x[0] + eps * d)[None])
    em, _ = omm((x[0] - eps * d)[None])
    assert (ep[0] - em[0]) / (2 * eps) == pytest.approx(-(f[0] * d).sum(), rel=1e-5, abs=1e-3)
    # torch wrapper: standardised coordinates and autograd gradient = -std * F
    std = 0.2
    tgt = TargetEnergy(omm, std)
    xs = torch.tensor(x / std, requires_grad=True)
    et = tgt(xs)
    et.sum().backward()
    assert torch.allclose(et, torch.tensor(e), atol=1e-6)
    assert torch.allclose(xs.grad, torch.tensor(-f * std), rtol=1e-6, atol=1e-6)
    # a clash gives +inf, not an exception
    clash = pep.positions.copy()
    clash[1] = clash[0]
    assert np.isinf(omm(clash[None])[0][0]) or omm(clash[None])[0][0] > 1e6


def test_chirality_detection_and_mirroring():
    pep = build_peptide("AIT", seed=0)
    centres = stereocentres(pep.topology)
    assert len(centres) == 5  # 3 CA + Ile CB + Thr CB
    x = np.stack([pep.positions, -pep.positions, pep.positions])
    x[2, centres[0, 3]] = 2 * x[2, centres[0, 0]] - x[2, centres[0, 3]]  # invert one CB through CA
    fixed, info = fix_chirality(pep.topology, x, pep.positions)
    assert info["wrong_chirality_fraction"] == pytest.approx(2 / 3)
    assert info["mirrored_fraction"] == pytest.approx(1 / 3)
    assert info["uncorrectable_fraction"] == pytest.approx(1 / 3)
    assert (chirality_signs(fixed[:2], centres) == chirality_signs(pep.positions[None], centres)).all()


def test_hydrogen_mass_repartitioning_keeps_total_mass_and_moves_it_to_hydrogens():
    import openmm.unit as u

    from scifm.prose.md import settings_for

    pep = build_peptide("WY", seed=0)

    def masses(system):
        return np.array(
            [system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())]
        )

    before = masses(create_system(pep.topology, "amber99sbildn-obc"))
    after = masses(create_system(pep.topology, "amber99sbildn-obc", hydrogen_mass_amu=3.0))
    is_h = np.array([a.element.symbol == "H" for a in pep.topology.atoms()])
    assert after.sum() == pytest.approx(before.sum(), rel=1e-12)
    assert np.allclose(after[is_h], 3.0)
    assert (after[~is_h] < before[~is_h] + 1e-12).all() and after[~is_h].min() > 1.0
    # the Trp CB carries two hydrogens, so it gives up 2 x (3 - m_H) amu
    cb = next(a.index for a in pep.topology.atoms() if a.name == "CB" and a.residue.name == "TRP")
    assert before[cb] - after[cb] == pytest.approx(2 * (3.0 - before[is_h][0]), rel=1e-9)
    with pytest.raises(ConfigError, match="hydrogen mass"):
        settings_for(False, hydrogen_mass_amu=9.0)


def test_ramachandran_pairs_of_capped_and_zwitterionic_dipeptides(ala2):
    """The capped dipeptide pairs phi and psi of its one residue; a zwitterionic dipeptide has no residue
    with both, so it pairs psi of residue 1 with phi of residue 2 (its Ramachandran plots were empty)."""
    import mdtraj as md

    pep, _ = ala2
    (label, phi, psi), *rest = ramachandran_pairs(pep.topology, pep.positions[None])
    assert not rest and label == "ALA2" and np.isfinite([phi[0], psi[0]]).all()
    zw = build_peptide("WT", seed=0)
    pairs = ramachandran_pairs(zw.topology, zw.positions[None])
    assert [p[0] for p in pairs] == ["psi1/phi2"]
    t = md.Trajectory(np.asarray(zw.positions, dtype=np.float32)[None], md.Topology.from_openmm(zw.topology))
    assert pairs[0][1][0] == pytest.approx(md.compute_phi(t)[1][0, 0], abs=1e-6)
    assert pairs[0][2][0] == pytest.approx(md.compute_psi(t)[1][0, 0], abs=1e-6)
