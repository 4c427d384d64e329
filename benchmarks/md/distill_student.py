"""Which teacher to distil: the student fine-tuned from each chosen teacher against the committee.

BAMBOO fine-tunes one of its own teachers (the anchor: `ensemble_model` must be in the list); which one is
the user's choice. This script takes the outputs of `electrolyte_ff.py` (OUT: teachers, committee NPT
frames, labelled and held-out clusters, the teachers' 3 ps float64 NVE runs of the electrolyte box) and,
for each `--student K` (default: the most stable teacher, no guard stop then the smallest |drift|, the rule
`electrolyte_ff.py` uses from now on), runs

    sci-fm distill --student K      (the preset's epochs, on the committee NPT frames and the clusters)
    sci-fm eval mlip                (force error on the held-out clusters)
    sci-fm md --ensemble nve        (3 ps float64 of the electrolyte box, as for the teachers)

    sci-fm md --ensemble nvt        (hot stress test: `--stress-temperature` K, Langevin, float64, the
                                     same box; the time to the first guard trigger)

and writes one `scifm-bench/1` record: every teacher and every student with held-out force/energy MAE,
NVE drift with its standard error (block analysis of the residuals, `slope_sem`), guard stops of both
runs, plus the teachers' mean force MAE. The acceptance line (a student no worse than that mean and at
least as stable as the most stable teacher) is checked per student: force MAE <= the teachers' mean; no
guard trigger earlier than any teacher's in either run; |drift| not above the most stable teacher's by
more than twice their combined standard error (3 ps drifts of 1e-6 eV/atom/ps are within their noise of
each other, so the hot run is the discriminating one). Finished steps are not re-run.

    uv run python benchmarks/md/distill_student.py --out runs/ef_small --scale small [--student 0 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from electrolyte_ff import (  # noqa: E402  (the benchmark's own helpers, next to this file)
    PRESETS,
    SYSTEMS,
    compare_members,
    distill_cmd,
    md_cmd,
    most_stable,
    sh,
    sh_many,
    summary,
)

from scifm.md.analysis.blocks import slope_sem  # noqa: E402
from scifm.md.thermo import read_thermo  # noqa: E402


def drift_sem(run: Path, n_atoms: int) -> float | None:
    """Standard error of the NVE drift from the run's thermo log (summaries older than the field)."""
    f = run / "thermo.csv"
    if not f.is_file():
        return None
    th = read_thermo(f)
    return slope_sem(th["time_fs"] * 1e-3, th["etot_eV"] / n_atoms)[1]


def stress_runs(out: Path, members: dict, box, P: dict, temperature: float, steps: int, tail, jobs) -> None:
    """NVT at ``temperature`` (float64, Langevin, 1 fs) of the electrolyte box for every model not run yet."""
    cmds = []
    for label, run in members.items():
        d = out / "stress" / label
        if not (d / "summary.json").exists():
            args = ("nvt", temperature, 1.0, steps, d, "cpu", "--save-every", P["long_save_every"])
            cmds.append(md_cmd(run, box, *args, "--dtype", "float64", "--thermo-every", 10, tail=tail))
    sh_many(cmds, jobs, out / "logs")


def guard_ps(sm: dict) -> float:
    """Simulated time before the first guard trigger (the whole run when none fired)."""
    return float(sm.get("simulated_ps") or 0.0)


def teacher_dirs(out: Path) -> list[Path]:
    """The committee of the last active-learning round: OUT/teacher{k}_r{R} with R the largest present."""
    runs = sorted(out.glob("teacher*_r*"))
    if not runs:
        raise SystemExit(f"{out}: no teacher*_r* directories (run electrolyte_ff.py first)")
    last = max(int(p.name.rsplit("_r", 1)[1]) for p in runs)
    found = sorted(p for p in runs if p.name.endswith(f"_r{last}"))
    if len(found) < 3:
        raise SystemExit(f"{out}: round {last} has {len(found)} teachers; distillation needs at least 3")
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/electrolyte_ff", help="the OUT of electrolyte_ff.py")
    p.add_argument("--scale", choices=sorted(PRESETS), default="small")
    p.add_argument(
        "--student", type=int, nargs="*", default=None, help="teacher indices (default: most stable)"
    )
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--stress-temperature", type=float, default=600.0, help="K, hot NVT stress test")
    p.add_argument("--stress-steps", type=int, default=5000, help="1 fs steps of the hot NVT (0: skip)")
    p.add_argument("--no-dispersion-tail", dest="dispersion_tail", action="store_false")
    p.add_argument("--results", default="benchmarks/results/md", help="where the record goes ('' for none)")
    a = p.parse_args()
    P, out = PRESETS[a.scale], Path(a.out)
    teachers = teacher_dirs(out)
    frames = [out / "npt_committee" / name / "traj.extxyz" for name, *_ in SYSTEMS]
    clusters, heldout = out / "clusters" / "all.extxyz", out / "clusters" / "heldout.extxyz"
    box = out / "boxes" / "EC_DMC_LiPF6_1M_0.extxyz"
    for f in [*frames, clusters, heldout, box]:
        if not f.is_file():
            raise SystemExit(f"{f}: missing (run electrolyte_ff.py --scale {a.scale} --out {out} first)")
    extra = ("--save-every", P["long_save_every"])
    members = {f"teacher{k}": r for k, r in enumerate(teachers)}
    compare_members(out, members, box, heldout, P, "cpu", extra, a.dispersion_tail, a.jobs, out / "logs")
    choice = most_stable({k: summary(out / "compare" / f"teacher{k}") for k in range(len(teachers))})
    students = a.student if a.student else [choice]
    for k in students:
        d = out / f"distilled_student{k}"
        if not (d / "model" / "model.json").exists():
            sh(*distill_cmd(teachers, k, frames, clusters, P["distill_epochs"], d))
        members[f"student{k}"] = d
    compare_members(out, members, box, heldout, P, "cpu", extra, a.dispersion_tail, a.jobs, out / "logs")
    if a.stress_steps > 0:
        stress_runs(out, members, box, P, a.stress_temperature, a.stress_steps, a.dispersion_tail, a.jobs)

    rows = []
    for label in members:
        ev = json.loads((out / "eval" / f"{label}.json").read_text())
        sm = summary(out / "compare" / label)
        drift = sm.get("energy_drift_eV_per_atom_per_ps")
        row = {
            "model": label,
            "heldout_forces_mae_meV_per_A": ev["forces_mae_meV_per_A"],
            "heldout_energy_mae_meV": ev["energy_mae_meV"],
            "nve_simulated_ps": sm.get("simulated_ps"),
            "stop_reason": sm.get("stop_reason") or "none",
            "abs_drift_eV_per_atom_per_ps": None if drift is None else abs(drift),
            "drift_sem_eV_per_atom_per_ps": sm.get("energy_drift_sem_eV_per_atom_per_ps")
            or drift_sem(out / "compare" / label, int(sm.get("n_atoms") or 1)),
        }
        if a.stress_steps > 0:
            st = summary(out / "stress" / label)
            row["stress_simulated_ps"] = guard_ps(st)
            row["stress_stop_reason"] = st.get("stop_reason") or "none"
        rows.append(row)
    t_rows = [r for r in rows if r["model"].startswith("teacher")]
    mean_f = sum(r["heldout_forces_mae_meV_per_A"] for r in t_rows) / len(t_rows)
    best = next(r for r in t_rows if r["model"] == f"teacher{choice}")
    for r in rows:
        r["forces_mae_over_teacher_mean"] = r["heldout_forces_mae_meV_per_A"] / mean_f
        if r in t_rows:
            continue
        dd = r["abs_drift_eV_per_atom_per_ps"] - best["abs_drift_eV_per_atom_per_ps"]
        se = (r["drift_sem_eV_per_atom_per_ps"] ** 2 + best["drift_sem_eV_per_atom_per_ps"] ** 2) ** 0.5
        checks = {
            "forces_mae_at_most_teacher_mean": r["forces_mae_over_teacher_mean"] <= 1.0,
            "no_earlier_guard_nve": all(r["nve_simulated_ps"] >= t["nve_simulated_ps"] for t in t_rows),
            "drift_within_2se_of_most_stable": dd <= 2.0 * se,
        }
        if a.stress_steps > 0:
            checks["no_earlier_guard_hot_nvt"] = all(
                r["stress_simulated_ps"] >= t["stress_simulated_ps"] for t in t_rows
            )
        r["drift_minus_most_stable_in_se"] = dd / se if se > 0 else None
        r["meets_distillation_line"] = all(checks.values())
        r.update({f"check_{k}": v for k, v in checks.items()})  # record values are flat
    print(
        json.dumps({"most_stable_teacher": choice, "teacher_mean_forces_mae": mean_f, "rows": rows}, indent=1)
    )
    if not a.results:
        return
    from scifm.core.provenance import utc_timestamp, write_record

    stamp = utc_timestamp().replace(":", "").replace("-", "")
    write_record(
        Path(a.results) / f"electrolyte-distill-student-{a.scale}-{stamp}.json",
        suite="md",
        name=f"electrolyte-distill-student-{a.scale}",
        title="Distillation: students fine-tuned from chosen teachers vs the committee (held-out, NVE)",
        rows=rows,
        columns={
            "heldout_forces_mae_meV_per_A": {"better": "lower", "unit": "meV/Å", "label": "F MAE held-out"},
            "forces_mae_over_teacher_mean": {
                "better": "lower",
                "unit": None,
                "label": "F MAE / teachers' mean",
            },
            "heldout_energy_mae_meV": {"better": "lower", "unit": "meV", "label": "E MAE held-out"},
            "abs_drift_eV_per_atom_per_ps": {"better": "lower", "unit": "eV/atom/ps", "label": "|NVE drift|"},
            "drift_sem_eV_per_atom_per_ps": {"better": None, "unit": "eV/atom/ps", "label": "drift SE"},
            "nve_simulated_ps": {"better": "higher", "unit": "ps", "label": "NVE ps"},
            **(
                {
                    "stress_simulated_ps": {
                        "better": "higher",
                        "unit": "ps",
                        "label": f"{a.stress_temperature:.0f} K NVT ps before a guard",
                    }
                }
                if a.stress_steps > 0
                else {}
            ),
        },
        config={
            "scale": a.scale,
            "distill_epochs": P["distill_epochs"],
            "most_stable_teacher": choice,
            "teacher_mean_forces_mae_meV_per_A": mean_f,
            "stress_temperature_K": a.stress_temperature,
            "stress_steps": a.stress_steps,
            "teachers": [t.name for t in teachers],
        },
        seed=0,
        command=" ".join(["python", *sys.argv]),
    )


if __name__ == "__main__":
    main()
