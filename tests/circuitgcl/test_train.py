"""End to end on tiny data: SGRL pre-training, both downstream tasks, the CLI train -> eval round trip."""

from __future__ import annotations

import json

import pytest

from scifm.circuitgcl.datasets import load_netlist_graph
from scifm.circuitgcl.sgrl import SGRLConfig, train_sgrl
from scifm.circuitgcl.tasks import TrainConfig, evaluate, fit_circuitgcl


@pytest.fixture
def designs(chain_files):
    return chain_files((12, 9, 7))


def test_sgrl_reduces_scattering_loss(designs):
    g = [load_netlist_graph(p) for p in designs]
    cfg = SGRLConfig(
        dim=16, layers=2, hops=2, fanout=8, batch_size=32, epochs=8, lr_target=1e-2, lr_online=1e-2
    )
    model, hist = train_sgrl(g, cfg, seed=0)
    assert hist[-1]["loss_rs"] < hist[0]["loss_rs"]
    assert model.embed(g[0].node_type, g[0].edge_index).shape == (g[0].num_nodes, 16)


def test_fit_and_evaluate(designs):
    g = [load_netlist_graph(p) for p in designs]
    cfg = TrainConfig(
        pretrain="sgrl",
        edge_loss="bmc",
        node_loss="bsce",
        hidden=24,
        layers=2,
        epochs=30,
        sgrl=SGRLConfig(dim=8, layers=1, hops=1, fanout=4, epochs=2),
    )
    tm = fit_circuitgcl(g[:2], cfg)
    r = evaluate(tm.edge_model, tm.node_model, tm.batches(g[2:]))
    assert r["n_test_designs"] == 1 and r["edge_n"] == 7 and 0 <= r["node_accuracy"] <= 1
    hist = tm.info["edge"]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_cli_train_then_eval(designs, tmp_path):
    from scifm.cli.main import main

    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "circuit",
            "--train",
            str(designs[0]),
            str(designs[1]),
            "--test",
            str(designs[2]),
            "--pretrain",
            "sgrl",
            "--loss",
            "gai",
            "--epochs",
            "3",
            "--sgrl-epochs",
            "1",
            "--hidden",
            "12",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("edge_r2", "edge_mae", "node_macro_f1", "node_accuracy", "n_test_designs"):
        assert key in m
    assert (out / "edge" / "model.safetensors").is_file() and (out / "per_design.png").is_file()
    out2 = tmp_path / "ev"
    assert main(["eval", "circuit", "--model", str(out), "--test", str(designs[2]), "--out", str(out2)]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["edge_r2"] == pytest.approx(m["edge_r2"], abs=1e-6)
    assert m2["node_accuracy"] == pytest.approx(m["node_accuracy"])


def test_cli_missing_file_is_one_line_error(tmp_path, capsys):
    from scifm.cli.main import main

    rc = main(
        [
            "train",
            "circuit",
            "--train",
            str(tmp_path / "nope.sp"),
            "--test",
            str(tmp_path / "x.sp"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "nope.sp: file not found" in capsys.readouterr().err
