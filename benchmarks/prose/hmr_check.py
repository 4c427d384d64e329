"""Hydrogen mass repartitioning (HMR) check for the dipeptide reference MD.

Masses do not enter the configurational Boltzmann distribution, so `sci-fm data peptides --timestep-fs 2
--hydrogen-mass 3` must sample the same ensemble as 1 fs at natural masses (up to the integrator's time-step
error, which is what this measures). For one dipeptide (default WY, amber99sbildn-obc, Reference platform) it
runs both settings with several seeds and compares the mean potential energy, the X-H bond lengths (the
stiffest degrees of freedom, the first to show a too-large step) and the wall time.

    uv run python benchmarks/prose/hmr_check.py --ps 400 --seeds 2 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"1 fs, natural masses": (1.0, 0.0), "2 fs, H mass 3 amu": (2.0, 3.0)}
COLUMNS = {
    "energy_kJ_mol_mean": {"better": None, "unit": "kJ/mol", "label": "<U>"},
    "energy_kJ_mol_sem": {"better": None, "unit": "kJ/mol", "label": "SEM of <U>"},
    "xh_bond_nm_mean": {"better": None, "unit": "nm", "label": "<r(X-H)>"},
    "xh_bond_nm_std": {"better": None, "unit": "nm", "label": "std r(X-H)"},
    "md_wall_s": {"better": "lower", "unit": "s", "label": "MD wall time"},
}


def one_run(sequence: str, ps: float, dt: float, hmass: float, seed: int) -> dict:
    from scifm.prose.energy import OpenMMEnergy
    from scifm.prose.md import run_md, settings_for
    from scifm.prose.peptides import create_system, topology_from_pdb

    every_fs = 200.0  # a frame every 0.2 ps
    s = settings_for(
        False,
        force_field="amber99sbildn-obc",
        timestep_fs=dt,
        hydrogen_mass_amu=hmass,
        warmup_steps=round(20_000 / dt),
        frame_interval_steps=round(every_fs / dt),
    )
    r = run_md(sequence, round(ps * 1000 / every_fs), s, seed=seed, platform="Reference")
    top, _ = topology_from_pdb(r["pdb"])
    target = OpenMMEnergy(create_system(top, s.force_field), s.temperature_K, platform="Reference")
    x = r["coordinates"].astype(np.float64)
    energy = target(x)[0] * target.kT  # kJ/mol
    pairs = [
        (a.index, b.index) for a, b in top.bonds() if (a.element.symbol == "H") != (b.element.symbol == "H")
    ]
    d = np.stack([np.linalg.norm(x[:, i] - x[:, j], axis=-1) for i, j in pairs], axis=1)
    return dict(energy=np.asarray(energy), xh=d, wall_s=r["wall_s"])


def block_sem(values: np.ndarray, blocks: int = 20) -> float:
    means = np.array([b.mean() for b in np.array_split(values, blocks)])
    return float(means.std(ddof=1) / np.sqrt(blocks))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequence", default="WY")
    p.add_argument("--ps", type=float, default=400.0, help="production length of each run")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "prose" / "hmr-check.json"))
    a = p.parse_args()
    t0 = time.perf_counter()
    jobs = [(label, seed) for label in SETTINGS for seed in range(a.seeds)]
    with ProcessPoolExecutor(a.workers) as pool:
        futs = {job: pool.submit(one_run, a.sequence, a.ps, *SETTINGS[job[0]], 1 + job[1]) for job in jobs}
        runs = {job: f.result() for job, f in futs.items()}
    rows, per_seed = [], {}
    for label in SETTINGS:
        mine = [runs[(label, s)] for s in range(a.seeds)]
        energy = np.concatenate([m["energy"] for m in mine])
        xh = np.concatenate([m["xh"] for m in mine])
        run_means = [float(m["energy"].mean()) for m in mine]
        within = float(np.sqrt(np.sum(np.square([block_sem(m["energy"]) for m in mine]))) / a.seeds)
        between = float(np.std(run_means, ddof=1) / np.sqrt(a.seeds)) if a.seeds > 1 else 0.0
        per_seed[label] = run_means
        rows.append(
            dict(
                task=f"{a.sequence}, {a.seeds} x {a.ps:g} ps",
                model=label,
                energy_kJ_mol_mean=float(energy.mean()),
                energy_kJ_mol_sem=max(within, between),
                xh_bond_nm_mean=float(xh.mean()),
                xh_bond_nm_std=float(xh.std(axis=0).mean()),
                md_wall_s=float(np.mean([m["wall_s"] for m in mine])),
            )
        )
        print(rows[-1], flush=True)
    ref, hmr = rows
    diff = hmr["energy_kJ_mol_mean"] - ref["energy_kJ_mol_mean"]
    sigma = float(np.hypot(ref["energy_kJ_mol_sem"], hmr["energy_kJ_mol_sem"]))
    speedup = ref["md_wall_s"] / hmr["md_wall_s"]
    from scifm.core.provenance import write_record

    write_record(
        a.out,
        suite="prose",
        name="hmr-check",
        title="Dipeptide reference MD: 2 fs with hydrogen mass repartitioning against 1 fs (same ensemble?)",
        rows=rows,
        columns=COLUMNS,
        config=dict(
            sequence=a.sequence,
            ps_per_run=a.ps,
            seeds=a.seeds,
            force_field="amber99sbildn-obc",
            platform="Reference",
            frame_every_ps=0.2,
            energy_kJ_mol_per_seed=per_seed,
            energy_sem_rule="the larger of the spread of the per-seed means and the 20-block SEM within runs",
            energy_difference_kJ_mol=diff,
            energy_difference_sigma=sigma,
            speedup=speedup,
        ),
        wall_time_s=time.perf_counter() - t0,
        command="python benchmarks/prose/hmr_check.py " + " ".join(sys.argv[1:]),
    )
    print(f"<U> difference {diff:+.2f} +- {sigma:.2f} kJ/mol; speed-up {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
