"""Distillation and density alignment: one epoch on tiny data changes only the energy readout; the edge
pressure agrees with the stress; ΔP formula; the CLI paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml
from ase import units
from test_md_common import export_tiny, tiny_potential, water_box

from scifm.cli.main import main
from scifm.md.align import delta_p_bar, next_delta_p, scale_to_density
from scifm.md.clusters import molecule_ids, whole_molecules
from scifm.md.finetune import changed_keys, frame_graph, intermolecular_edges, nn_edge_pressure_bar, predict
from scifm.md.md import MDSettings, run_md
from scifm.md.thermo import density_g_cm3
from scifm.mlip.calculator import SciFMCalculator
from scifm.mlip.export import load_potential


@pytest.fixture(scope="module")
def npt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    models = [export_tiny(root / f"t{k}", seed=k) for k in range(3)]
    out = root / "npt"
    run_md(
        water_box(),
        SciFMCalculator(load_potential(models[0]), dtype="float64", dispersion_tail=True),
        MDSettings(
            ensemble="npt", steps=30, timestep=0.5, save_every=5, thermo_every=1, pdamp=100.0, progress=False
        ),
        out,
        meta={"dispersion_tail": True},  # as `sci-fm md --dispersion-tail` records it
    )
    return root, models, out


def test_edge_pressure_equals_nn_stress_pressure():
    pot = tiny_potential(3)
    g = frame_graph(water_box(), pot.cutoff, torch.float64)
    p_edges = float(nn_edge_pressure_bar(pot, g, create_graph=False))
    stress = predict(pot, g, periodic=True)["virial"][0] / -torch.linalg.det(g.cell[0]).abs()
    assert p_edges == pytest.approx(float(-torch.trace(stress) / 3 / units.bar), rel=1e-9)
    inter = intermolecular_edges(g, water_box().arrays["mol_id"])
    assert 0 < int(inter.sum()) < len(inter)


def test_delta_p_sign_and_size():
    # too dense by 1 % with κ_T = 1e-4 /bar -> +100 bar (pushes the box out)
    assert delta_p_bar(1.01, 1.0, 1e-4) == pytest.approx(0.01 / 1.01 / 1e-4)
    assert delta_p_bar(0.99, 1.0, 1e-4) < 0


def test_next_round_delta_p_secant_with_fallbacks():
    # first round: linear response with κ_T
    assert next_delta_p(1.0, 0.99, 1e-4) == (pytest.approx(delta_p_bar(0.99, 1.0, 1e-4)), "kappa_T")
    # -500 bar moved 1.00 -> 1.05 (dρ/dΔP = -1e-4 /bar): another -500 bar reaches 1.10
    prev = {"density": 1.00, "delta_p_bar": -500.0}
    assert next_delta_p(1.10, 1.05, 1e-4, prev, sem=0.005) == (pytest.approx(-500.0), "secant")
    # the secant step is capped at 3x the last shift
    assert next_delta_p(2.0, 1.05, 1e-4, prev, sem=0.005) == (pytest.approx(-1500.0), "secant")
    # a move within twice the SEM, or in the wrong direction, falls back to κ_T
    assert next_delta_p(1.10, 1.005, 1e-4, prev, sem=0.005)[1] == "kappa_T"
    assert next_delta_p(1.10, 0.98, 1e-4, prev, sem=0.005)[1] == "kappa_T"


def test_next_round_delta_p_hermite_uses_both_compressibilities():
    # ln ρ linear in the shift (κ_T = 1e-4 at both ends): the Hermite curve is that line, exactly
    k, rho1 = 1e-4, float(np.exp(0.1))  # -1000 bar moved 1.0 -> e^0.1
    prev = {"density": 1.0, "delta_p_bar": -1000.0, "kappa_T_per_bar": k}
    dp, rule = next_delta_p(float(np.exp(0.04)), rho1, k, prev, sem=0.0, kappa_now=k)
    assert rule == "hermite" and dp == pytest.approx(600.0, abs=1e-6)  # back to the shift -400 bar
    # a stretched liquid (soft, κ 5.8e-4) pulled far past its target (stiff, κ 4.7e-5): the crossing lies
    # nearer the soft end than the straight secant puts it, and short of where the stiff end's κ_T points
    prev = {"density": 0.869, "delta_p_bar": -3942.0, "kappa_T_per_bar": 5.8e-4}
    secant = (1.32 - 1.713) / ((1.713 - 0.869) / -3942.0)
    newton = float(np.log(1.713 / 1.32) / 4.7e-5)
    dp, rule = next_delta_p(1.32, 1.713, 7e-5, prev, sem=0.016, kappa_now=4.7e-5)
    assert rule == "hermite" and secant < dp < min(newton, 3 * 3942.0)
    # not bracketed, or a κ_T missing: the secant
    assert next_delta_p(1.9, 1.713, 7e-5, prev, sem=0.016, kappa_now=4.7e-5)[1] == "secant"
    assert next_delta_p(1.32, 1.713, 7e-5, prev, sem=0.016)[1] == "secant"


def _readout_only(changed):
    assert changed and all(k.startswith("model.energy_mlp.") for k in changed), changed


def test_distill_one_epoch_changes_only_the_readout(npt_run, tmp_path):
    root, models, run = npt_run
    clusters = tmp_path / "clusters.extxyz"
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    cl = []
    for k in range(2):  # "labelled" clusters: the box molecules without PBC, labelled by teacher 1
        a = water_box(seed=k)
        a.pbc = False
        a.cell = np.zeros((3, 3))
        calc = SciFMCalculator(load_potential(models[1]), dtype="float64")
        a.calc = SinglePointCalculator(a, energy=calc.get_potential_energy(a), forces=calc.get_forces(a))
        cl.append(a)
    ase.io.write(clusters, cl, format="extxyz")
    out = tmp_path / "distill"
    rc = main(
        [
            "distill",
            "--teachers",
            *map(str, models),
            "--frames",
            str(run / "traj.extxyz"),
            "--clusters",
            str(clusters),
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    _readout_only(m["changed_parameters"])
    before = load_potential(models[0]).state_dict()
    after = load_potential(out / "model").state_dict()
    assert changed_keys(before, after) == m["changed_parameters"]  # everything else bit-identical
    assert m["teacher_forces_std_max_eV_A_mean"] > 0
    assert (out / "learning_curve.png").is_file()


def test_distill_needs_three_teachers(npt_run, tmp_path, capsys):
    _, models, run = npt_run
    assert (
        main(
            [
                "distill",
                "--teachers",
                *map(str, models[:2]),
                "--frames",
                str(run / "traj.extxyz"),
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "at least 3 teachers" in capsys.readouterr().err


def test_align_one_epoch_moves_pressure_towards_target(npt_run, tmp_path):
    root, models, run = npt_run
    systems = tmp_path / "systems.yaml"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["isothermal_compressibility_per_bar"] > 0
    two = [{"name": n, "md": str(run), "delta_p_bar": 500.0} for n in ("water", "water2")]
    systems.write_text(yaml.safe_dump({"systems": two}))
    out = tmp_path / "align"
    rc = main(
        [
            "align",
            "--model",
            str(models[0]),
            "--systems",
            str(systems),
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--out",
            str(out),
            "--no-progress",
            "--npt-steps",
            "10",
            "--jobs",
            "2",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    _readout_only(m["changed_parameters"])
    after = load_potential(out / "model").state_dict()
    assert changed_keys(load_potential(models[0]).state_dict(), after) == m["changed_parameters"]
    w = m["systems"]["water"]
    assert w["residual_before_bar"] == pytest.approx(-500.0)
    assert abs(w["residual_after_bar"]) < abs(w["residual_before_bar"])
    assert m["npt"]["water"]["density_after_g_cm3"] > 0
    # the two identical systems re-ran in two processes (--jobs 2) and agree
    assert m["npt"]["water2"]["density_after_g_cm3"] == pytest.approx(
        m["npt"]["water"]["density_after_g_cm3"], rel=1e-9
    )
    # the re-run uses the energy model of the run that set the target (dispersion tail or not)
    rerun = json.loads((out / "npt" / "water" / "summary.json").read_text())
    assert rerun["dispersion_tail"] is summary["dispersion_tail"] is True
    assert (out / "alignment.png").stat().st_size > 0


def test_align_rounds_take_the_next_target_from_the_new_density(npt_run, tmp_path, capsys):
    root, models, run = npt_run
    systems = tmp_path / "systems.yaml"
    entry = {"name": "water", "md": str(run), "density_exp": 1.2, "kappa_T_per_bar": 1e-4}
    systems.write_text(yaml.safe_dump({"systems": [entry]}))
    out = tmp_path / "align"
    args = ["align", "--model", str(models[0]), "--systems", str(systems), "--epochs", "1", "--lr", "1e-3"]
    args += ["--npt-steps", "10", "--npt-equilibration", "0.002", "--tolerance", "0", "--no-progress"]
    assert main([*args, "--rounds", "2", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_rounds"] == 2 and not m["converged"]
    r1, r2 = (r["systems"]["water"] for r in m["rounds"])
    assert r1["rule"] == "kappa_T" and r2["rule"] in ("secant", "kappa_T")
    # round 2 starts from round 1's NPT re-run: its density and frames
    assert r2["density_md_g_cm3"] == pytest.approx(r1["density_after_g_cm3"])
    achieved = r1["delta_p_target_bar"] + r1["residual_after_bar"]  # the shift round 1 reached
    kappa0 = json.loads((run / "summary.json").read_text())["isothermal_compressibility_per_bar"]
    prev = {"density": r1["density_md_g_cm3"], "delta_p_bar": achieved, "kappa_T_per_bar": kappa0}
    expect = next_delta_p(
        1.2,
        r1["density_after_g_cm3"],
        1e-4,
        prev,
        r1["density_after_sem_g_cm3"],
        kappa_now=r1["kappa_T_after_per_bar"],
    )
    assert (r2["delta_p_target_bar"], r2["rule"]) == (pytest.approx(expect[0]), expect[1])
    rerun = json.loads((out / "round2" / "npt" / "water" / "summary.json").read_text())
    assert rerun["equilibration_ps"] == 0.002
    assert m["npt"]["water"]["density_after_g_cm3"] == pytest.approx(rerun["density_g_cm3_mean"])
    # OUT/model is the last round's model; only the readout moved from the original over both rounds
    final = load_potential(out / "model").state_dict()
    assert changed_keys(load_potential(out / "round2" / "model").state_dict(), final) == []
    _readout_only(m["changed_parameters"])
    assert "round 2 water: ΔP target" in capsys.readouterr().out
    # --resume after an interruption in round 2's NPT: round 1 is read back, round 2's model is reused and
    # only its NPT re-run repeated; the outcome is the same
    r1_npt = out / "round1" / "npt" / "water" / "summary.json"
    stamp = r1_npt.stat().st_mtime_ns
    (out / "metrics.json").unlink()
    # a summary older than its round's model (left by a stray run of an earlier call) is not reused
    r2_npt = out / "round2" / "npt" / "water" / "summary.json"
    os.utime(r2_npt, (0, 0))
    m2 = json.loads((out / "round2" / "metrics.json").read_text())
    m2.pop("npt")
    (out / "round2" / "metrics.json").write_text(json.dumps(m2))
    assert main([*args, "--rounds", "2", "--resume", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "round 1: reusing" in printed and "round 2: reusing" in printed
    assert r1_npt.stat().st_mtime_ns == stamp
    again = json.loads((out / "metrics.json").read_text())
    assert again["resumed_rounds"] == [1, 2]
    assert again["rounds"][1]["systems"]["water"]["delta_p_target_bar"] == pytest.approx(
        r2["delta_p_target_bar"]
    )
    assert r2_npt.stat().st_mtime > 0  # re-run
    # refusals before any work: rounds without NPT re-runs, rounds without an experimental density
    assert main([*args[:9], "--rounds", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--rounds > 1 re-runs NPT" in capsys.readouterr().err
    systems.write_text(yaml.safe_dump({"systems": [{"name": "water", "md": str(run), "delta_p_bar": 100.0}]}))
    assert main([*args, "--rounds", "2", "--out", str(tmp_path / "y")]) == 2
    assert "needs density_exp for every system; missing: ['water']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_scale_to_density_moves_molecules_rigidly():
    a = water_box()
    mol = molecule_ids(a)
    b = scale_to_density(a, 0.9 * density_g_cm3(a), mol)
    assert density_g_cm3(b) == pytest.approx(0.9 * density_g_cm3(a), rel=1e-12)
    assert np.allclose(np.asarray(b.cell), np.asarray(a.cell) * (1 / 0.9) ** (1 / 3))
    pa, pb = whole_molecules(a, mol), whole_molecules(b, mol)
    for k in np.unique(mol):  # every intramolecular distance kept
        i = np.flatnonzero(mol == k)
        da = np.linalg.norm(pa[i, None] - pa[None, i], axis=-1)
        db = np.linalg.norm(pb[i, None] - pb[None, i], axis=-1)
        assert np.allclose(da, db, atol=1e-10)
    assert (molecule_ids(b) == mol).all()


def test_align_at_density_rule_fits_the_pressure_at_the_experimental_density(npt_run, tmp_path, capsys):
    root, models, run = npt_run
    rho0 = json.loads((run / "summary.json").read_text())["density_g_cm3_mean"]
    systems = tmp_path / "systems.yaml"
    entry = {"name": "water", "md": str(run), "density_exp": round(0.95 * rho0, 4), "kappa_T_per_bar": 1e-4}
    systems.write_text(yaml.safe_dump({"systems": [entry]}))
    out = tmp_path / "align"
    args = ["align", "--model", str(models[0]), "--systems", str(systems), "--epochs", "1", "--lr", "1e-3"]
    args += ["--npt-steps", "10", "--npt-equilibration", "0.002", "--tolerance", "0", "--no-progress"]
    args += ["--at-density-from", "2", "--at-density-steps", "12", "--rounds", "2", "--out", str(out)]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    r1, r2 = (r["systems"]["water"] for r in m["rounds"])
    assert r1["rule"] == "kappa_T" and r2["rule"] == "nvt_at_exp"
    nvt = json.loads((out / "round2" / "nvt" / "water" / "summary.json").read_text())
    assert nvt["ensemble"] == "nvt" and nvt["steps"] == 12
    assert nvt["settings"]["thermostat"] == "nose-hoover"  # as the MTK NPT runs, not Langevin
    # the NVT ran at the experimental density with round 1's model; ΔP = P_ext - <P> there
    assert nvt["density_g_cm3_mean"] == pytest.approx(entry["density_exp"], rel=1e-9)
    p_ext = nvt["settings"]["pressure"]
    assert r2["delta_p_target_bar"] == pytest.approx(p_ext - nvt["pressure_bar_mean"])
    assert r2["pressure_at_exp_bar"] == pytest.approx(nvt["pressure_bar_mean"])
    # round 2's NPT starts from round 1's last NPT frame, not from the scaled one
    rows = np.genfromtxt(out / "round2" / "npt" / "water" / "thermo.csv", delimiter=",", names=True)
    assert rows["density_g_cm3"][0] == pytest.approx(r1_last_density(out), rel=1e-9)
    assert "round 2 water: <P> at ρ_exp" in capsys.readouterr().out
    # refused before any work: the rule without a density to run at
    systems.write_text(yaml.safe_dump({"systems": [{"name": "water", "md": str(run), "delta_p_bar": 100.0}]}))
    bad = [*args[:-1], str(tmp_path / "z")]
    bad[bad.index("--rounds") + 1] = "1"
    assert main(bad) == 2
    assert "--at-density-from needs density_exp for every system" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def r1_last_density(out):
    from scifm.md.trajectory import read_trajectory

    return density_g_cm3(read_trajectory(out / "round1" / "npt" / "water" / "traj.extxyz")[-1])


def test_align_rejects_unknown_keys(tmp_path, capsys):
    model = export_tiny(tmp_path / "m")
    systems = tmp_path / "s.yaml"
    systems.write_text(yaml.safe_dump({"systems": [{"name": "x", "density": 1.0}]}))
    assert (
        main(["align", "--model", str(model), "--systems", str(systems), "--out", str(tmp_path / "o")]) == 2
    )
    assert "unknown key" in capsys.readouterr().err
