"""MD runner: ensembles (ASE EMT), guards that stop and keep the output, NVE energy conservation of a tiny
model in float64, committee spread, and the `sci-fm md` / `sci-fm analyze` CLI path."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from test_md_common import export_tiny, tiny_potential, water_box

from scifm.cli.main import main
from scifm.md.committee import CommitteeCalculator
from scifm.md.md import MDSettings, run_md
from scifm.md.thermo import read_thermo
from scifm.md.trajectory import read_trajectory
from scifm.mlip.calculator import SciFMCalculator


def _cu():
    return bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms


@pytest.mark.parametrize(
    "ensemble,extra",
    [
        ("nve", {}),
        ("nvt", {}),
        ("nvt", {"thermostat": "nose-hoover"}),
        ("npt", {}),
        ("npt", {"barostat": "berendsen"}),
    ],
)
def test_ensembles_run_and_summarize(tmp_path, ensemble, extra):
    atoms = _cu().repeat((2, 1, 1))
    s = run_md(
        atoms,
        EMT(),
        MDSettings(
            ensemble=ensemble,
            steps=60,
            timestep=2.0,
            thermo_every=2,
            save_every=20,
            temperature=300,
            pdamp=200.0,
            progress=False,
            **extra,
        ),
        tmp_path,
    )
    assert not s["stopped"] and s["steps"] == 60
    for key in ("steps_per_second", "ns_per_day", "temperature_K_mean"):
        assert np.isfinite(s[key]) and s[key] > 0
    if ensemble == "nve":
        assert abs(s["energy_drift_eV_per_atom_per_ps"]) < 1e-2
    if ensemble == "npt":
        assert s["density_g_cm3_mean"] > 0 and s["density_g_cm3_sem"] >= 0
        th = read_thermo(tmp_path / "thermo.csv")
        assert np.ptp(th["volume_A3"]) > 0  # the box breathes
    frames = read_trajectory(tmp_path / "traj.extxyz")
    assert [f.info["step"] for f in frames] == [0, 20, 40, 60]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 60


def test_equilibration_is_left_out_of_the_averages(tmp_path):
    """A Cu box started 20 % expanded relaxes its volume in NPT: with --equilibration the averages are those
    of the thermo rows after it (density, temperature, pressure, κ_T), the transient is in the log only."""
    from ase.build import bulk

    from scifm.core.errors import ConfigError

    atoms = bulk("Cu", "fcc", a=3.6 * 1.2 ** (1 / 3), cubic=True).repeat((2, 2, 2))
    settings = dict(ensemble="npt", steps=200, timestep=2.0, thermo_every=2, save_every=100)
    kw = dict(temperature=300, pdamp=100.0, barostat="berendsen", progress=False)
    s = run_md(atoms, EMT(), MDSettings(**settings, equilibration_ps=0.2, **kw), tmp_path)
    th = read_thermo(tmp_path / "thermo.csv")
    prod = th["time_fs"] >= 200.0
    assert s["equilibration_ps"] == 0.2 and s["n_thermo_rows_averaged"] == int(prod.sum()) < len(prod)
    assert s["density_g_cm3_mean"] == pytest.approx(float(np.mean(th["density_g_cm3"][prod])))
    assert s["temperature_K_mean"] == pytest.approx(float(np.mean(th["temperature_K"][prod])))
    # the dilute start is in the log but not in the average
    assert th["density_g_cm3"][0] < 0.9 * s["density_g_cm3_mean"]
    assert s["density_g_cm3_mean"] != pytest.approx(float(np.mean(th["density_g_cm3"])), rel=1e-4)
    with pytest.raises(ConfigError, match="--equilibration 0.4: must be >= 0 ps and shorter than the run"):
        MDSettings(**settings, equilibration_ps=0.4, **kw).check()
    with pytest.raises(ConfigError, match="--equilibration -1"):
        MDSettings(**settings, equilibration_ps=-1, **kw).check()


def test_h5_trajectory_reads_back(tmp_path):
    s = run_md(
        _cu(),
        EMT(),
        MDSettings(ensemble="nvt", steps=10, save_every=5, progress=False, trajectory_format="h5"),
        tmp_path,
    )
    frames = read_trajectory(tmp_path / "traj.h5")
    assert len(frames) == 3 == s["n_frames"] and frames[-1].info["step"] == 10
    assert frames[0].get_potential_energy() == pytest.approx(
        read_thermo(tmp_path / "thermo.csv")["epot_eV"][0]
    )


def test_distance_guard_stops_and_keeps_output(tmp_path):
    atoms = _cu().repeat((2, 1, 1))
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    s = run_md(atoms, EMT(), MDSettings(ensemble="nvt", steps=50, progress=False), tmp_path)
    assert s["stopped"] and s["stop_step"] == 0 and "closer than the 0.5 Å guard" in s["stop_reason"]
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "last_frame.extxyz").is_file()


def _rattled_cold_nve(tmp_path, **settings):
    """A rattled Cu crystal started at 10 K in NVE with a 100 K guard: its potential energy turns into
    kinetic energy, so it trips the guard unless it is relaxed first. Returns (starting energy, summary)."""
    atoms = _cu().repeat((2, 1, 1))
    atoms.rattle(0.25, seed=1)
    e_start = float(EMT().get_potential_energy(atoms.copy()))
    settings = dict(
        ensemble="nve", temperature=10, steps=200, max_temperature=100, progress=False, **settings
    )
    return e_start, run_md(atoms, EMT(), MDSettings(**settings), tmp_path)


def test_temperature_guard_keeps_what_was_written(tmp_path):
    _, s = _rattled_cold_nve(tmp_path, save_every=1, thermo_every=1)
    assert s["stopped"] and "exceeds the 100 K guard" in s["stop_reason"] and s["stop_step"] > 0
    # every step before the offending one is in the trajectory and the thermo log, nothing after it
    assert len(read_trajectory(tmp_path / "traj.extxyz")) == s["stop_step"] == s["steps"] + 1
    th = read_thermo(tmp_path / "thermo.csv")
    assert len(th["step"]) == s["stop_step"] and th["temperature_K"].max() <= 100


def test_minimize_before_md_relaxes_a_strained_start(tmp_path):
    # the same start runs cleanly after FIRE to 0.05 eV/Å
    e_start, s = _rattled_cold_nve(tmp_path, minimize_fmax=0.05)
    m = s["minimized"]
    assert not s["stopped"] and s["steps"] == 200
    assert m["converged"] and m["fmax_end_eV_A"] < 0.05 < m["fmax_start_eV_A"]
    assert m["epot_end_eV"] < m["epot_start_eV"] == pytest.approx(e_start)
    relaxed = ase.io.read(tmp_path / "minimized.extxyz")
    assert np.linalg.norm(EMT().get_forces(relaxed), axis=1).max() < 0.05
    with pytest.raises(Exception, match="--minimize"):
        MDSettings(minimize_fmax=-1.0).check()


def test_nve_energy_conservation_tiny_model_float64(tmp_path):
    atoms = water_box()
    calc = SciFMCalculator(tiny_potential(seed=1), dtype="float64")
    s = run_md(
        atoms,
        calc,
        MDSettings(
            ensemble="nve",
            steps=300,
            timestep=0.25,
            thermo_every=5,
            save_every=100,
            temperature=300,
            min_distance=0.3,
            progress=False,
        ),
        tmp_path,
    )
    assert s["steps"] >= 200, s["stop_reason"]
    th = read_thermo(tmp_path / "thermo.csv")
    n = len(atoms)
    # total energy constant to 1e-5 eV/atom while the potential energy moves by orders of magnitude more
    assert np.ptp(th["etot_eV"]) / n < 1e-5 < np.ptp(th["epot_eV"]) / n
    assert abs(s["energy_drift_eV_per_atom_per_ps"]) < 1e-4


def test_committee_spread_zero_for_identical_models_positive_otherwise():
    atoms = water_box()
    same = CommitteeCalculator([tiny_potential(0), tiny_potential(0)], dtype="float64")
    a = atoms.copy()
    a.calc = same
    e = a.get_potential_energy()
    single = atoms.copy()
    single.calc = SciFMCalculator(tiny_potential(0), dtype="float64")
    assert e == pytest.approx(single.get_potential_energy(), abs=1e-12)
    assert same.results["energy_std"] == 0.0 and np.all(same.results["forces_std"] == 0.0)
    diff = CommitteeCalculator([tiny_potential(0), tiny_potential(1), tiny_potential(2)], dtype="float64")
    b = atoms.copy()
    b.calc = diff
    f = b.get_forces()
    assert diff.results["energy_std"] > 0 and np.all(diff.results["forces_std"] > 0)
    assert diff.results["forces_std"].shape == (len(atoms),) and b.get_stress().shape == (6,)
    members = np.stack(
        [SciFMCalculator(tiny_potential(k), dtype="float64").get_forces(atoms) for k in range(3)]
    )
    np.testing.assert_allclose(f, members.mean(0), atol=1e-12)


def test_cli_md_committee_flags_and_analyze(tmp_path):
    models = [export_tiny(tmp_path / f"m{k}", seed=k) for k in range(2)]
    box = tmp_path / "box.extxyz"
    ase.io.write(box, water_box(), format="extxyz")
    out = tmp_path / "run"
    rc = main(
        [
            "md",
            "--model",
            *map(str, models),
            "--structure",
            str(box),
            "--ensemble",
            "npt",
            "--steps",
            "40",
            "--timestep",
            "0.5",
            "--save-every",
            "2",
            "--thermo-every",
            "1",
            "--pdamp",
            "100",
            "--uncertainty-threshold",
            "0",
            "--out",
            str(out),
            "--no-progress",
            "--dtype",
            "float64",
        ]
    )
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in (
        "steps",
        "steps_per_second",
        "ns_per_day",
        "temperature_K_mean",
        "density_g_cm3_mean",
        "density_g_cm3_sem",
    ):
        assert s[key] is not None, key
    assert s["n_flagged"] == 41 and len(ase.io.read(out / "flagged.extxyz", ":")) == 41
    frames = read_trajectory(out / "traj.extxyz")
    assert "mol_id" in frames[0].arrays  # per-atom arrays of the structure travel with the trajectory
    rc = main(
        [
            "analyze",
            "--run",
            str(out),
            "--gk-tmax",
            "5",
            "--rdf-rmax",
            "3",
            "--skip",
            "0",
            "--properties",
            "density,rdf,msd,viscosity",
        ]
    )
    assert rc == 0
    m = json.loads((out / "analysis" / "metrics.json").read_text())
    assert m["density_g_cm3"] == pytest.approx(s["density_g_cm3_mean"], rel=1e-6)
    assert set(m["diffusion"]) == {"H2O"} and np.isfinite(m["viscosity_mPa_s"])
    for png in ("density.png", "rdf.png", "msd.png", "viscosity.png"):
        assert (out / "analysis" / png).is_file()


def test_cli_md_rejects_unknown_elements(tmp_path, capsys):
    model = export_tiny(tmp_path / "m", seed=0)
    box = tmp_path / "cu.extxyz"
    ase.io.write(box, _cu(), format="extxyz")
    assert main(["md", "--model", str(model), "--structure", str(box), "--out", str(tmp_path / "o")]) == 2
    assert "Cu" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cli_md_dispersion_tail_lowers_the_pressure_and_needs_a_box(tmp_path, capsys):
    model = export_tiny(tmp_path / "m", seed=0)
    box = tmp_path / "box.extxyz"
    ase.io.write(box, water_box(), format="extxyz")
    common = ["md", "--model", str(model), "--structure", str(box), "--steps", "0", "--no-progress"]
    common += ["--dtype", "float64", "--thermo-every", "1"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--dispersion-tail", "--out", str(tmp_path / "tail")]) == 0
    assert json.loads((tmp_path / "tail" / "summary.json").read_text())["dispersion_tail"] is True
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["dispersion_tail"] is False
    from ase.units import bar

    from scifm.mlip.export import load_potential
    from scifm.mlip.physics.dispersion import DispersionTail

    plain, tail = (json.loads((tmp_path / k / "summary.json").read_text()) for k in ("plain", "tail"))
    t = DispersionTail(load_potential(model).cutoff).compute(water_box())
    assert tail["epot_eV_mean"] - plain["epot_eV_mean"] == pytest.approx(t["energy"], rel=1e-6)
    assert tail["pressure_bar_mean"] - plain["pressure_bar_mean"] == pytest.approx(
        t["pressure"] / bar, rel=1e-6
    )
    assert t["pressure"] < 0
    mol = tmp_path / "mol.extxyz"
    ase.io.write(mol, water_box()[:3], format="extxyz", write_info=False)
    a = ase.io.read(mol)
    a.pbc = False
    ase.io.write(mol, a, format="extxyz")
    assert main([*common[:4], str(mol), "--dispersion-tail", "--out", str(tmp_path / "m_out")]) == 2
    assert "periodic" in capsys.readouterr().err and not (tmp_path / "m_out").exists()
