"""Which teacher to distil: the student fine-tuned from each chosen teacher against the committee.

BAMBOO fine-tunes one of its own teachers (the anchor: `ensemble_model` must be in the list); which one is
the user's choice. This script takes the outputs of `electrolyte_ff.py` (OUT: teachers, committee NPT
frames, labelled and held-out clusters, the teachers' 3 ps float64 NVE runs of the electrolyte box) and,
for each `--student K` (default: the most stable teacher, no guard stop then the smallest |drift|, the rule
`electrolyte_ff.py` uses from now on), runs

    sci-fm distill --student K      (the preset's epochs, on the committee NPT frames and the clusters)
    sci-fm eval mlip                (force error on the held-out clusters)
    sci-fm md --ensemble nve        (3 ps float64 of the electrolyte box, as for the teachers)

and writes one `scifm-bench/1` record: every teacher and every student with held-out force/energy MAE,
NVE drift and guard stop, plus the teachers' mean force MAE (the acceptance line: a student no worse than
that mean and at least as stable as the most stable teacher). Finished steps are not re-run.

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
    most_stable,
    sh,
    summary,
)


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

    rows = []
    for label in members:
        ev = json.loads((out / "eval" / f"{label}.json").read_text())
        sm = summary(out / "compare" / label)
        drift = sm.get("energy_drift_eV_per_atom_per_ps")
        rows.append(
            {
                "model": label,
                "heldout_forces_mae_meV_per_A": ev["forces_mae_meV_per_A"],
                "heldout_energy_mae_meV": ev["energy_mae_meV"],
                "nve_simulated_ps": sm.get("simulated_ps"),
                "stop_reason": sm.get("stop_reason") or "none",
                "abs_drift_eV_per_atom_per_ps": None if drift is None else abs(drift),
            }
        )
    t_rows = [r for r in rows if r["model"].startswith("teacher")]
    mean_f = sum(r["heldout_forces_mae_meV_per_A"] for r in t_rows) / len(t_rows)
    for r in rows:
        r["forces_mae_over_teacher_mean"] = r["heldout_forces_mae_meV_per_A"] / mean_f
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
            "nve_simulated_ps": {"better": "higher", "unit": "ps", "label": "NVE ps"},
        },
        config={
            "scale": a.scale,
            "distill_epochs": P["distill_epochs"],
            "most_stable_teacher": choice,
            "teacher_mean_forces_mae_meV_per_A": mean_f,
            "teachers": [t.name for t in teachers],
        },
        seed=0,
        command=" ".join(["python", *sys.argv]),
    )


if __name__ == "__main__":
    main()
