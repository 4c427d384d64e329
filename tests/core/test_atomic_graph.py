import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_nl

from scifm.core.graph import atomic_graph, batch_graphs, edge_vectors, graph_from_atoms, strained
from scifm.core.neighbors import neighbor_list


def _triclinic_si():
    a = bulk("Si", "diamond", a=5.43)
    a.set_cell(a.cell.array @ np.array([[1, 0.1, 0], [0, 1, 0.05], [0, 0, 1]]), scale_atoms=True)
    a.rattle(0.05, seed=1)
    return a


@pytest.mark.parametrize("cutoff", [2.5, 5.0, 9.0])
def test_neighbor_list_matches_ase_on_tiny_triclinic_cell(cutoff):
    a = _triclinic_si()  # cell edges ~3.8 Å < 2 * cutoff: atoms see their own images
    i, j, S = neighbor_list(a.positions, cutoff, a.cell.array, a.pbc)
    ai, aj, aS = ase_nl("ijS", a, cutoff)
    assert sorted(zip(i, j, map(tuple, S), strict=True)) == sorted(zip(ai, aj, map(tuple, aS), strict=True))
    if cutoff > 4:
        assert np.any(i == j), "self-images expected for a cell smaller than the cutoff"


def test_neighbor_list_mixed_pbc_and_molecule():
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.pbc = [True, True, False]
    i, j, S = neighbor_list(a.positions, 4.0, a.cell.array, a.pbc)
    assert (S[:, 2] == 0).all()
    ai, aj, aS = ase_nl("ijS", a, 4.0)
    assert len(i) == len(ai)
    m = molecule("CH4")
    i, j, S = neighbor_list(m.positions, 1.2, None, None)
    assert len(i) == 8 and (S == 0).all()  # 4 C-H bonds, both directions


def test_edge_vectors_and_distances():
    a = _triclinic_si()
    g = graph_from_atoms(a, 5.0, dtype=torch.float64)
    vec = edge_vectors(g.pos, g.cell, g.shifts, g.edge_index, torch.zeros(len(g.pos), dtype=torch.long))
    d = np.sort(vec.norm(dim=1).numpy())
    ref = np.sort(ase_nl("d", a, 5.0))
    np.testing.assert_allclose(d, ref, atol=1e-10)


def test_batching_offsets_edges_and_keeps_cells():
    a, b = _triclinic_si(), molecule("H2O")
    ga, gb = graph_from_atoms(a, 4.0), graph_from_atoms(b, 4.0)
    batch = batch_graphs([ga, gb])
    assert batch.num_graphs == 2 and batch.cell.shape == (2, 3, 3)
    assert batch.edge_index[:, ga.num_edges :].min() >= len(a)
    vec = edge_vectors(batch.pos, batch.cell, batch.shifts, batch.edge_index, batch.batch)
    va = edge_vectors(ga.pos, ga.cell, ga.shifts, ga.edge_index, torch.zeros(len(a), dtype=torch.long))
    torch.testing.assert_close(vec[: ga.num_edges], va)


def test_strain_scales_edge_vectors_linearly():
    a = _triclinic_si()
    g = graph_from_atoms(a, 4.0, dtype=torch.float64)
    batch = torch.zeros(len(g.pos), dtype=torch.long)
    eps = torch.tensor(
        [[[0.01, 0.002, 0.0], [0.002, -0.005, 0.001], [0.0, 0.001, 0.003]]], dtype=torch.float64
    )
    pos2, cell2 = strained(g.pos, g.cell, batch, eps)
    v0 = edge_vectors(g.pos, g.cell, g.shifts, g.edge_index, batch)
    v1 = edge_vectors(pos2, cell2, g.shifts, g.edge_index, batch)
    torch.testing.assert_close(v1, v0 @ (torch.eye(3, dtype=torch.float64) + eps[0]))


def test_labels_from_ref_keys():
    m = molecule("H2O")
    m.info["REF_energy"] = -3.5
    m.arrays["REF_forces"] = np.ones((3, 3))
    g = graph_from_atoms(m, 3.0)
    assert float(g.energy) == -3.5 and g.forces.shape == (3, 3)
    g2 = atomic_graph([8, 1, 1], m.positions, 3.0, energy=1.0, stress=np.arange(6.0))
    assert g2.stress.shape == (1, 3, 3) and float(g2.stress[0, 0, 1]) == 5.0
