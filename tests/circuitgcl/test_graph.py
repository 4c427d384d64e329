"""Graphs: digtime statistics as in the anchor's table, netlist graphs, labels, k-hop sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scifm.circuitgcl.datasets import load_arrays, load_circuitgcl
from scifm.circuitgcl.graph import (
    ANCHOR,
    CC_N2N,
    CC_P2N,
    NET,
    PIN,
    LabelSpec,
    build_graph,
    log_label,
    to_class,
)
from scifm.circuitgcl.sampling import Adjacency, sample_khop
from scifm.circuitgcl.spice import read_flat
from scifm.core.errors import DataError

# anchor section 4 / RCG README row "digtime" (after removing nets 0/1 and 1e-21 < Cc < 1e-15 F)
DIGTIME = {
    "net": 1046,
    "device": 4133,
    "pin": 12399,
    "device_pin": 12399,
    "pin_net": 5772,
    "cc_p2n": 10427,
    "cc_p2p": 22241,
    "cc_n2n": 938,
    "nodes": 17578,
    "edges": 36342,
}


@pytest.mark.parametrize("fname", ["digtime.npz", "digtime.pt"])
def test_digtime_statistics_match_anchor(circuits, fname):
    g = load_circuitgcl(circuits / fname)
    assert g.counts() == DIGTIME
    assert to_class(g.node_label()[g.cg_mask]).bincount(minlength=5).tolist() == [371, 272, 387, 13, 3]


def test_digtime_edge_classes_before_power_removal(circuits):
    a = load_arrays(circuits / "digtime.npz")
    y = torch.from_numpy(
        np.concatenate(
            [
                a[f"edge__{k}__y"].astype(np.float64)
                for k in ("pin__cc_p2n__net", "pin__cc_p2p__pin", "net__cc_n2n__net")
            ]
        )
    )
    y = y[(y > 1e-21) & (y < 1e-15)]
    assert to_class(log_label(y, ANCHOR.edge_offset)).bincount().tolist() == [1081, 5408, 21772, 15993, 60]


def test_bad_graph_file(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(DataError, match="missing arrays"):
        load_circuitgcl(p)


def test_label_window_and_bins():
    c = torch.tensor([1e-21, 1e-18, 1e-15, 0.0, 2e-21, 1e-16], dtype=torch.float64)
    y = log_label(c, 21.0)
    assert y.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, np.log10(2) / 6, 5 / 6], abs=1e-6)
    # right-closed bins: 0.2 -> class 0, just above -> class 1
    assert to_class(torch.tensor([0.2, 0.2001, 0.8, 0.81, 0.0, 1.0])).tolist() == [0, 1, 3, 4, 0, 4]


def test_netlist_graph_labels_by_hand(tmp_path, rc_netlist):
    p = tmp_path / "rc.spice"
    p.write_text(rc_netlist)
    g = build_graph(read_flat(p), labels=ANCHOR)
    names = g.meta["net_names"]
    assert sorted(names) == ["a", "m", "y"] and g.meta["rails"] == ["vdd", "vss"]
    c = g.counts()
    assert (c["net"], c["device"], c["pin"]) == (3, 3, 9)  # bulk terminals give no pin
    assert c["pin_net"] == 7  # the sources of X0 (vss) and X1 (vdd) sit on rails: a flag, not an edge
    assert int(g.rail.sum()) == 2  # X0 source (vss.t0) and X1 source (vdd)
    iy = names.index("y")
    assert float(g.cg_value[iy]) == pytest.approx(2e-15 + 1e-15 + 1e-15)  # C0 + C1 + C6, C7 is a self-loop
    pairs = {(int(i), int(j)): float(v) for i, j, v in zip(*g.cc_index, g.cc_value, strict=True)}
    ia = names.index("a")
    assert pairs[(min(ia, iy), max(ia, iy))] == pytest.approx(0.5e-15)  # net-net
    assert g.meta["self_loop_caps"] == 1
    # C3 (a.t1 is X1's gate pin) -> pin-to-net; C4 (-0.1 fF) is dropped by the positive Cc window
    p2n = g.cc_type == CC_P2N
    assert int(p2n.sum()) == 1 and float(g.cc_value[p2n]) == pytest.approx(0.25e-15)
    assert g.node_type[g.cc_index[0, p2n]].item() == PIN and g.node_type[g.cc_index[1, p2n]].item() == NET
    assert int((g.cc_type == CC_N2N).sum()) == 2  # a-y and m-a
    # net features: y has 3 diffusion pins and no gate; a has 3 gates
    assert g.x[iy, 1] == 0 and g.x[iy, 2] == 3 and g.x[ia, 1] == 3


def test_parasitic_caps_are_never_features(tmp_path, rc_netlist):
    p = tmp_path / "rc.spice"
    p.write_text(rc_netlist)
    no_c = tmp_path / "noc.spice"
    no_c.write_text("\n".join(ln for ln in rc_netlist.splitlines() if not ln.startswith("C")) + "\n")
    g1, g2 = build_graph(read_flat(p)), build_graph(read_flat(no_c))
    assert torch.equal(g1.x, g2.x) and torch.equal(g1.edge_index, g2.edge_index)
    assert torch.equal(g1.pin_type, g2.pin_type) and torch.equal(g1.rail, g2.rail)
    assert g2.cc_index.shape[1] == 0 and not g2.cg_mask.any()  # no C at all: no labels


def test_real_netlist_graphs_are_consistent(circuits):
    spec = LabelSpec(19.0, 18.0)
    for f in sorted((circuits / "sky130").glob("*comparator*.spice")):
        g = build_graph(read_flat(f), labels=spec)
        assert g.edge_index.max() < g.num_nodes and (g.edge_label() > 0).all() and (g.edge_label() < 1).all()
        assert g.counts()["pin"] == 3 * 39 + 2  # d/g/s per transistor + 2 resistor terminals


def test_khop_sampling_matches_pyg_and_respects_fanout():
    from torch_geometric.utils import k_hop_subgraph, to_undirected

    g = torch.Generator().manual_seed(0)
    ei = to_undirected(torch.randint(0, 200, (2, 800), generator=g), num_nodes=200)
    adj = Adjacency(ei, 200)
    seeds = torch.tensor([3, 17, 99])
    sub = sample_khop(adj, seeds, 2, fanout=None)
    ref, _, _, _ = k_hop_subgraph(seeds, 2, ei, num_nodes=200)
    assert set(sub.nodes.tolist()) == set(ref.tolist())
    assert sub.nodes[:3].tolist() == [3, 17, 99]
    # induced sub-graph edges map back to parent edges
    assert torch.equal(sub.nodes[sub.edge_index], ei[:, sub.edge_ids])
    small = sample_khop(adj, torch.tensor([5]), 1, fanout=2, gen=g)
    assert len(small.nodes) <= 3
    nbrs = set(ei[0, ei[1] == 5].tolist())
    assert set(small.nodes[1:].tolist()) <= nbrs
