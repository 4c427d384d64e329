"""``sci-fm relax``: MLIP relaxations of PubChemQCR molecules and their metrics (tiny random PaiNN)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("lmdb")
pytest.importorskip("tblite")

from scifm.mlip.pubchemqcr.generate import CID_BASE, write_shards  # noqa: E402


def _step(symbols, pos, e=-10.0):
    return {
        "coordinates": [
            {"atom": s, "charge": 0.0, "x": p[0], "y": p[1], "z": p[2]}
            for s, p in zip(symbols, pos, strict=True)
        ],
        "energy": e,
        "gradient": [{"atom": s, "dx": 0.0, "dy": 0.0, "dz": 0.0} for s in symbols],
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two synthetic 'trajectories' (water, methanol): start geometry -> 'relaxed' geometry."""
    out = tmp_path_factory.mktemp("relaxdata")
    water = (["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    methanol = (
        ["C", "O", "H", "H", "H", "H"],
        [
            [0, 0, 0],
            [1.42, 0, 0],
            [-0.36, 1.03, 0],
            [-0.36, -0.51, 0.89],
            [-0.36, -0.51, -0.89],
            [1.74, 0.9, 0],
        ],
    )
    recs = []
    for k, (sym, pos) in enumerate((water, methanol)):
        pos = np.array(pos, dtype=float)
        start = pos + np.random.default_rng(k).normal(scale=0.05, size=pos.shape)
        steps = [_step(sym, start.tolist(), -10.0), _step(sym, pos.tolist(), -10.01)]
        recs.append((CID_BASE + k, {"pm3": steps, "hf": steps, "DFT_1st": steps, "DFT_2nd": steps}))
    write_shards(recs, out)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    try:
        from scifm.mlip.export import export_potential
        from scifm.mlip.models.registry import build_model, model_class
        from scifm.mlip.potential import Potential
    except ImportError as exc:
        pytest.skip(f"MLIP export not available yet: {exc}")
    torch.manual_seed(0)
    cfg = model_class("painn").tiny_config()
    cfg["elements"] = [1, 6, 8]
    pot = Potential(build_model("painn", **cfg))
    d = tmp_path_factory.mktemp("run") / "model"
    export_potential(pot, d)
    return d.parent


def _args(model, data, out, **kw):
    from scifm.mlip.relax import configure

    p = argparse.ArgumentParser()
    configure(p)
    argv = ["--model", str(model), "--data", str(data), "--out", str(out), "--no-progress"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return p.parse_args(argv)


def test_relax_command_writes_metrics(model_dir, data, tmp_path):
    from scifm.mlip.relax import run

    assert run(_args(model_dir, data, tmp_path, max_steps=15, fmax=0.05, dtype="float64")) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "n_molecules",
        "success_rate",
        "energy_error_meV_per_atom_mae",
        "rmsd_A_median",
        "rmsd_A_mean",
        "frac_rmsd_below_0.1A",
        "steps_mean",
        "seconds_per_relaxation",
    ):
        assert key in m, key
    assert m["n_molecules"] == 2 and m["n_failed"] == 0
    per = json.loads((tmp_path / "relaxations.json").read_text())
    assert [r["cid"] for r in per] == [CID_BASE, CID_BASE + 1]
    assert per[0]["rmsd_atoms"] == "all" and per[1]["rmsd_atoms"] == "all"  # <3 heavy atoms each
    assert all(0 < r["steps"] <= 15 for r in per)
    assert (tmp_path / "relax.png").is_file() and (tmp_path / "relaxed.extxyz").is_file()


def test_relaxing_from_the_models_own_minimum_is_a_no_op(model_dir, data):
    """Reference = the model's own minimum: zero steps, RMSD and energy error (fails on any slip)."""
    from scifm.mlip.relax import build_tasks, init_worker, relax_one, resolve_model_dir

    init_worker(str(resolve_model_dir(model_dir)), "float64", "bfgs", 1e-2, 200, "none")
    task = build_tasks(f"pubchemqcr:{data}", max_molecules=1)[0]
    first = relax_one(task)
    assert first["converged"] and first["steps"] > 0
    again = dict(
        task,
        start=np.asarray(first["positions"]),
        ref_positions=np.asarray(first["positions"]),
        ref_energy=first["energy"],
    )
    r = relax_one(again)
    assert r["converged"] and r["steps"] == 0
    assert r["rmsd_A"] == pytest.approx(0, abs=1e-9) and r["energy_error_meV_per_atom"] == pytest.approx(
        0, abs=1e-6
    )
    # a rotated+translated copy of the minimum is the same minimum
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    rot = dict(again, start=np.asarray(first["positions"]) @ q.T + 2.0)
    r2 = relax_one(rot)
    assert r2["rmsd_A"] < 1e-3 and abs(r2["energy_error_meV_per_atom"]) < 1e-3


def test_reference_method_gap_and_bad_model(data, model_dir, tmp_path):
    from scifm.core.errors import DataError
    from scifm.mlip.relax import build_tasks, init_worker, relax_one, resolve_model_dir

    with pytest.raises(DataError, match="no exported model"):
        resolve_model_dir(tmp_path)
    init_worker(str(resolve_model_dir(model_dir)), "float64", "fire", 0.05, 5, "gfn2-xtb")
    r = relax_one(build_tasks(f"pubchemqcr:{data}", max_molecules=1)[0])
    assert (
        r["steps"] == 5
        and "ref_energy_gap_meV_per_atom" in r
        and np.isfinite(r["ref_energy_gap_meV_per_atom"])
    )
