"""Regression tests for the transfer set-up: common coupling floor, pair features, the endpoint-order
invariant edge head, validation on held-out designs and early stopping."""

from __future__ import annotations

import math

import pytest
import torch

from scifm.circuitgcl.graph import ANCHOR, CC_P2N, PAIR_FEATURES, build_graph, pair_features
from scifm.circuitgcl.models import CircuitGNN
from scifm.circuitgcl.spice import read_flat
from scifm.circuitgcl.tasks import TrainConfig, fit_circuitgcl


@pytest.fixture
def rc_graph(tmp_path, rc_netlist):
    p = tmp_path / "rc.spice"
    p.write_text(rc_netlist)
    return build_graph(read_flat(p), labels=ANCHOR)


def test_restrict_cc_applies_one_floor(rc_graph):
    g = rc_graph
    vals = sorted(float(v) for v in g.cc_value)
    assert vals == pytest.approx([0.25e-15, 0.3e-15, 0.5e-15])
    h = g.restrict_cc(0.3e-15)
    assert sorted(float(v) for v in h.cc_value) == pytest.approx([0.3e-15, 0.5e-15])
    assert h.cc_index.shape == (2, 2) and h.cc_type.shape == (2,)
    assert h.meta["pairs_below_cc_floor"] == 1 and CC_P2N not in h.cc_type.tolist()
    # the original is untouched and node labels / topology are shared
    assert g.cc_index.shape[1] == 3 and h.cg_value is g.cg_value and h.edge_index is g.edge_index


def test_pair_features_count_shared_devices_by_hand(rc_graph):
    g = rc_graph
    names = g.meta["net_names"]
    a, y, m = (names.index(n) for n in ("a", "y", "m"))
    pin = int(g.cc_index[0, g.cc_type == CC_P2N])  # a.t1: the gate pin of X1, paired with net y
    pairs = torch.tensor([[a, m, m, pin, y], [y, a, y, y, a]])
    f = pair_features(g, pairs)
    assert f.shape == (5, len(PAIR_FEATURES))
    shared = [3, 1, 1, 1, 3]  # a-y: X0, X1, X2; m-a and m-y: X2; pin a.t1 - y: X1; symmetric
    assert f[:, 0].tolist() == pytest.approx([math.log1p(s) for s in shared])
    assert f[:, 1].tolist() == [1.0] * 5


def test_sym_edge_head_ignores_endpoint_order(rc_graph):
    g = rc_graph
    torch.manual_seed(0)
    x = torch.rand(g.num_nodes, 17)
    pairs = g.cc_index
    px = pair_features(g, pairs)
    args = (x, g.node_type, g.pin_type, g.rail, g.edge_index)
    sym = CircuitGNN("edge", hidden=16, layers=2, edge_head="sym", pair_dim=px.shape[1]).eval()
    assert torch.allclose(sym(*args, pairs=pairs, pair_x=px), sym(*args, pairs=pairs.flip(0), pair_x=px))
    cat = CircuitGNN("edge", hidden=16, layers=2, edge_head="concat").eval()  # the anchor's head is not
    assert not torch.allclose(cat(*args, pairs=pairs), cat(*args, pairs=pairs.flip(0)))


def _designs(chain_files):
    from scifm.circuitgcl.datasets import load_netlist_graph

    return [load_netlist_graph(p) for p in chain_files((10, 8, 6))]


def test_validation_design_is_never_trained_on(chain_files):
    g = _designs(chain_files)
    cfg = TrainConfig(
        hidden=12, layers=1, epochs=60, patience=3, val_designs=[g[1].name], lr=1e-2, node_loss="bsce"
    )
    tm = fit_circuitgcl(g[:2], cfg)
    # the class statistics of the loss come from trained targets only: chain0's nets, none of chain1's
    counts = tm.info["node"]["criterion_state"]["counts"]
    assert sum(counts) == int(g[0].cg_mask.sum()) != int(g[0].cg_mask.sum() + g[1].cg_mask.sum())
    for task in ("edge", "node"):
        assert len(tm.info[task]["history"]) < 60  # early stopping on the validation design
    with pytest.raises(ValueError, match="nothing left to train"):
        fit_circuitgcl(g[:1], TrainConfig(epochs=1, val_designs=[g[0].name]))
    with pytest.raises(ValueError, match="not among"):
        fit_circuitgcl(g[:2], TrainConfig(epochs=1, val_designs=["nope"]))


def test_cc_floor_applies_to_training_and_test(chain_files):
    g = _designs(chain_files)
    floor = float(torch.quantile(torch.cat([x.cc_value for x in g]), 0.5))
    tm = fit_circuitgcl(g[:2], TrainConfig(hidden=8, layers=1, epochs=2, cc_floor=floor, edge_loss="gai"))
    (b,) = tm.batches(g[2:])
    assert b.pairs.shape[1] == int((g[2].cc_value >= floor).sum()) < g[2].cc_index.shape[1]
    assert (b.edge_y >= g[2].restrict_cc(floor).edge_label().min()).all()
