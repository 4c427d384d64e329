"""Symmetrised proposals: flips of symmetric groups are symmetries of the force field, and the averaged
density is exact, invariant and what the sampler returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scifm.core.errors import ConfigError
from scifm.prose.energy import OpenMMEnergy
from scifm.prose.ictransfer import ICTransferConfig, ICTransferFlow
from scifm.prose.peptides import build_peptide, create_system
from scifm.prose.symmetry import SymmetrisedFlow, flip_group

FF = "amber14-obc1"


@pytest.fixture(scope="module")
def fy():
    pep = build_peptide("FY", False, seed=0)
    return pep, create_system(pep.topology, FF)


def test_flips_leave_the_energy_unchanged(fy):
    pep, system = fy
    names = [a.name for a in pep.topology.atoms()]
    rings = flip_group(pep.topology, "rings")
    assert rings.shape == (4, len(names))  # two rings -> 2^2 relabellings
    assert {names[i] for i in range(len(names)) if int(rings[3, i]) != i} == {
        "CD1",
        "CD2",
        "CE1",
        "CE2",
        "HD1",
        "HD2",
        "HE1",
        "HE2",
    }
    group = flip_group(pep.topology, "flips")  # + the C-terminal carboxylate
    assert group.shape == (8, len(names))
    assert {names[i] for i in range(len(names)) if int(group[1, i]) != i} == {"O", "OXT"}
    assert flip_group(build_peptide("AK", False, seed=0).topology).shape[0] == 2  # C-terminus only
    assert flip_group(build_peptide("A", True, seed=0).topology).shape[0] == 1  # Ace-A-Nme: none
    assert flip_group(build_peptide("DER", False, seed=0).topology).shape[0] == 16
    with pytest.raises(ConfigError, match="kind"):
        flip_group(pep.topology, "methyls")
    rng = np.random.default_rng(0)
    x = np.asarray(pep.positions)[None] + 0.003 * rng.standard_normal((3, len(names), 3))
    omm = OpenMMEnergy(system, 310.0, platform="Reference")
    try:
        e0, _ = omm(x)
        for g in group[1:].numpy():
            e, _ = omm(x[:, g])
            # equal up to Amber's improper-torsion atom ordering (the outer atoms of an improper are sorted
            # by index, so relabelling changes that term by ~1e-2 kT)
            assert np.abs(np.asarray(e) - np.asarray(e0)).max() < 0.05
        # a relabelling that is not a symmetry (CD1 <-> CE1) changes it
        p = np.arange(len(names))
        i, j = names.index("CD1"), names.index("CE1")
        p[i], p[j] = j, i
        e_bad, _ = omm(x[:, p])
        assert np.all(np.abs(np.asarray(e_bad) - np.asarray(e0)) > 1.0)
    finally:
        omm.close()


def _bound(fy):
    pep, system = fy
    torch.manual_seed(1)
    cfg = ICTransferConfig(d_model=16, n_heads=2, n_couplings=4, layers_per_coupling=1, n_bins=4, std_nm=0.1)
    flow = ICTransferFlow(cfg)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow.double().bind(pep.topology, system, 310.0, pep.positions).double()


def test_symmetrised_density_is_exact_invariant_and_returned_by_the_sampler(fy):
    pep, _ = fy
    base = _bound(fy)
    group = flip_group(pep.topology, "rings")
    sym = SymmetrisedFlow(base, group)
    n = 24
    xb, _ = base.sample(n, generator=torch.Generator().manual_seed(5))
    x, lq = sym.sample(n, generator=torch.Generator().manual_seed(5))
    # each draw is the base flow's draw relabelled by one group element, and both kinds occur
    used = []
    for i in range(n):
        hits = [k for k, g in enumerate(group) if torch.allclose(x[i], xb[i][g])]
        assert len(hits) >= 1
        used.append(hits[0])
    assert len(set(used)) > 1
    with torch.no_grad():
        assert torch.allclose(sym.log_prob(x), lq, atol=1e-9)
        per = torch.stack([base.log_prob(x[:, g]) for g in group])
        assert torch.allclose(lq, torch.logsumexp(per, 0) - math.log(4), atol=1e-9)
        for g in group:
            assert torch.allclose(sym.log_prob(x[:, g]), lq, atol=1e-9)
        # the base flow is not invariant (otherwise the test above would prove nothing)
        assert (base.log_prob(x[:, group[1]]) - base.log_prob(x)).abs().max() > 1e-3


def test_symmetry_group_is_checked(fy):
    base = _bound(fy)
    n = fy[0].topology.getNumAtoms()
    ident = torch.arange(n)
    swap = ident.clone()
    swap[0], swap[1] = 1, 0
    swap2 = ident.clone()
    swap2[1], swap2[2] = 2, 1
    with pytest.raises(ConfigError, match="identity"):
        SymmetrisedFlow(base, torch.stack([swap, ident]))
    with pytest.raises(ConfigError, match="closed"):
        SymmetrisedFlow(base, torch.stack([ident, swap, swap2]))
    # a ring missing one of its atoms is named
    from openmm.app import Modeller

    pep = build_peptide("FA", False, seed=0)
    m = Modeller(pep.topology, pep.positions)
    m.delete([a for a in m.topology.atoms() if a.name == "CE1"])
    with pytest.raises(ConfigError, match=r"flip of PHE1: atoms \['CE1'\]"):
        flip_group(m.topology)
