"""A small electrolyte force field, end to end (issue 5 §4–7). HEAVY: run by hand.

Stages (each skipped when its output exists, so the script resumes):
  1. boxes     `sci-fm build electrolyte` for each system (EC, DMC, PC, EC:DMC 1:1 + LiPF6 1.0 M).
  2. seed      clusters cut out of packmol boxes of several seeds (no force field yet), GFN2-xTB labelled.
  3. train     BAMBOO teacher 0 on the clusters (`sci-fm train mlip --model bamboo`, with the cluster
               virial loss `--virial-weight`: the collective part of the forces that sets a liquid's
               pressure, which a per-atom force loss weighs little).
  3b. al       `al_rounds` rounds of active learning: NPT of every box with teacher 0, clusters cut from
               the thermal frames it visits (packed boxes hold rigid templates only), GFN2-xTB labels,
               teacher 0 retrained; then the other teachers on the final cluster set.
  4. stability (started in the background right after the last teacher 0) NVE in float64 and NVT of the
               electrolyte box with teacher 0: energy drift and guards (issue 5, first acceptance line);
               the NVT run (Nosé–Hoover) is also the trajectory of the transport analysis.
  5. md        NPT of every box with the committee; frames whose force spread passes a threshold are
               flagged; these frames are the distillation data.
  6. distill   teachers compared first (held-out cluster errors, 3 ps float64 NVE of the electrolyte box);
               `sci-fm distill --student K` with K the most stable teacher (no guard stop, then the
               smallest |drift|) on the bulk NPT frames, alternating with clusters; the student compared.
  7. align     NPT with the student ("before", from the end of the committee run, first
               `npt_equilibration` ps left out), `sci-fm align --rounds` on every system but the held-out
               solvent (PC): ΔP from ρ_MD, ρ_exp and κ_T, NPT re-run, the next ΔP from the last two densities
               (Hermite curve with their κ_T when they bracket ρ_exp, else the secant), until every density
               is within `align_tolerance` (`--resume` keeps finished rounds); then NPT of the held-out
               solvent with the aligned model ("after").
  8. analyze   `sci-fm analyze`: densities of every NPT run, diffusion / conductivity (Nernst–Einstein and
               Einstein) / viscosity of the electrolyte from the NVT run; results -> OUT/results.json and
               densities.png.

Presets (`--scale`): `tiny` runs every stage in minutes (a smoke test, not a result); `small` is sized for
a few hours on 2 CPU cores (`--jobs 2`): 32-solvent boxes (320–420 atoms), 320 seed clusters of ≤ 60 atoms
(radius 3.5 Å, every molecule a candidate centre, ions included, atoms rattled by up to σ = 0.05 Å) plus
2 × 60 active-learning clusters per system, 3 teachers of 32 features (60 epochs), 30 distillation
epochs, 3 ps NVE runs comparing student and teachers, 12 ps NPT runs at 1 fs (4 ps equilibration), up to
4 alignment rounds (tolerance 0.02 g/cm³), 10 ps NVE (float64) and 50 ps NVT at 1 fs; `full` is the
issue's scale (64-molecule boxes, 64-feature teachers, 100 epochs, 40 ps NPT runs), many CPU-hours,
20–50× faster on a GPU (`--accelerator gpu --device cuda`).
Periodic Coulomb in MD uses an Ewald accuracy of 1e-4 in `small` (2× faster MD than 1e-6; the error is far
below the model's) and the model default 1e-6 otherwise.

Every MD run that starts from a packmol box first relaxes it with the model (`--minimize 0.5`: FIRE to
0.5 eV/Å, cell fixed): the PF6⁻ template starts with GFN2-xTB forces of ~40 eV/Å on F, which blow up any
dynamics within a few femtoseconds. The teachers carry the ZBL repulsion prior (`--zbl`): without it a
model trained on clusters has holes at short H–H distances that the minimiser finds (two H 0.006 Å apart).

Thread settings: OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE for every sub-process (xTB and torch).

Experimental densities (g/cm³, ~298 K; BAMBOO anchor table): EC 1.32 (liquid above 36 °C; we run 313 K),
DMC 1.06, PC 1.20, EC:DMC 1:1 + LiPF6 1.0 M ≈ 1.28 (our approximate reference; the anchor lists 50_50
LiPF6 0.5 M at 1.235).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
SYSTEMS = [
    # name, composition, build density, temperature K, experimental density
    ("EC", "EC x 1", 1.32, 313.0, 1.32),
    ("DMC", "DMC x 1", 1.06, 298.0, 1.06),
    ("PC", "PC x 1", 1.20, 298.0, 1.20),
    ("EC_DMC_LiPF6_1M", "EC:DMC 1:1 + LiPF6 1.0 M", 1.28, 298.0, 1.28),
]
HELD_OUT = "PC"  # not aligned on; its density error before/after alignment tests transfer
ELECTROLYTE = "EC_DMC_LiPF6_1M"

PRESETS = {
    "tiny": dict(
        n_mol=8,
        seeds=2,
        max_clusters=6,
        radius=3.0,
        max_atoms=40,
        ion_centres_only=True,
        rattle=0.0,
        epochs=2,
        batch_size=16,
        max_time=5,
        model_cfg="{n_features: 16, n_heads: 4, n_layers: 2, n_rbf: 8}",
        committee_steps=40,
        npt_steps=40,
        npt_timestep=0.5,
        npt_equilibration=0.005,
        save_every=10,
        thermo_every=1,
        al_rounds=1,
        al_steps=40,
        al_clusters=6,
        virial_weight=10.0,
        align_rounds=2,
        align_tolerance=0.0,
        align_at_density_from=2,
        align_at_density_steps=40,
        distill_epochs=1,
        align_epochs=1,
        align_lr=1e-4,
        compare_steps=40,
        long_timestep=0.5,
        nve_steps=40,
        nvt_steps=60,
        long_save_every=5,
        gk_tmax=4,
    ),
    "small": dict(
        n_mol=32,
        seeds=4,
        max_clusters=80,
        radius=3.5,
        max_atoms=60,
        ion_centres_only=False,
        rattle=0.05,
        epochs=60,
        batch_size=4,
        max_time=600,
        model_cfg="{n_features: 32, n_heads: 8, n_layers: 2, n_rbf: 16, ewald_accuracy: 1.0e-4}",
        committee_steps=3000,
        npt_steps=12000,
        npt_timestep=1.0,
        npt_equilibration=4.0,
        save_every=100,
        thermo_every=5,
        al_rounds=2,
        al_steps=4000,
        al_clusters=60,
        virial_weight=10.0,
        # rounds 1-4 of the recorded run extrapolated ΔP from the model's own density (κ_T, secant,
        # Hermite) and stalled with EC and the electrolyte too dense (+0.040, +0.076 g/cm³); rounds 5-6
        # fit the pressure of an NVT run at the experimental density (`sci-fm align --at-density-from`)
        # and ended with every aligned system within 0.03 (not 0.02). A fresh run: at_density_from=1
        align_rounds=6,
        align_tolerance=0.02,
        align_at_density_from=5,
        align_at_density_steps=8000,
        distill_epochs=30,
        align_epochs=6,
        align_lr=1e-4,
        compare_steps=3000,
        long_timestep=1.0,
        nve_steps=10000,
        nvt_steps=50000,
        long_save_every=50,
        gk_tmax=1000,
    ),
    "full": dict(
        n_mol=64,
        seeds=10,
        max_clusters=200,
        radius=4.0,
        max_atoms=60,
        ion_centres_only=True,
        rattle=0.0,
        epochs=100,
        batch_size=8,
        max_time=600,
        model_cfg="{n_features: 64, n_heads: 16, n_layers: 2, n_rbf: 16}",
        committee_steps=20000,
        npt_steps=40000,
        npt_timestep=1.0,
        npt_equilibration=10.0,
        save_every=200,
        thermo_every=10,
        al_rounds=2,
        al_steps=20000,
        al_clusters=200,
        virial_weight=10.0,
        align_rounds=4,
        align_tolerance=0.01,
        align_at_density_from=1,
        align_at_density_steps=20000,
        distill_epochs=50,
        align_epochs=30,
        align_lr=1e-4,
        compare_steps=10000,
        long_timestep=0.5,
        nve_steps=20000,
        nvt_steps=100000,
        long_save_every=100,
        gk_tmax=2000,
    ),
}


def _argv(args) -> list[str]:
    return [sys.executable, "-m", "scifm.cli.main", *map(str, args)]


def _check(args, rc: int, t0: float) -> None:
    """An MD run stopped by a stability guard (exit 3) is not fatal: its frames up to the stop are exactly
    the ones worth labelling next, and the guard is reported."""
    if rc not in (0, 3):
        raise SystemExit(f"sci-fm {args[0]} failed with exit code {rc}")
    print(
        f"  ({time.time() - t0:.0f} s{', stopped by a guard' if rc == 3 else ''}) sci-fm {args[0]}",
        flush=True,
    )


def cut_cmd(P: dict, trajectory, ions: bool, n_clusters, out, seed=None, rattle=None) -> list:
    """`sci-fm data clusters` arguments: every molecule a centre, or only the ions in an electrolyte."""
    extra = [
        *(["--rattle", rattle] if rattle is not None else []),
        *(["--seed", seed] if seed is not None else []),
    ]
    return [
        "data",
        "clusters",
        "--trajectory",
        trajectory,
        "--centres",
        "Li,F6P" if ions and P["ion_centres_only"] else "all",
        "--radius",
        P["radius"],
        "--max-clusters",
        n_clusters,
        "--max-atoms",
        P["max_atoms"],
        *extra,
        "--out",
        out,
        "--no-progress",
    ]


def md_cmd(
    models, structure, ensemble: str, temperature, timestep, steps, out, device, *extra, tail: bool = True
) -> list:
    """`sci-fm md` arguments shared by every run of the benchmark (FIRE to 0.5 eV/A first); `extra` adds
    ensemble-specific options; `tail`: the dispersion beyond the teachers' cutoff (GFN2-xTB's D4 is in the
    cluster labels, so the models know dispersion within their cutoff only)."""
    models = models if isinstance(models, (list, tuple)) else [models]
    return [
        "md",
        "--model",
        *models,
        "--structure",
        structure,
        "--ensemble",
        ensemble,
        "--temperature",
        temperature,
        "--timestep",
        timestep,
        "--steps",
        steps,
        *extra,
        *(["--dispersion-tail"] if tail else []),
        "--minimize",
        0.5,
        "--device",
        device,
        "--out",
        out,
        "--no-progress",
    ]


def sh(*args) -> None:
    """Run one sci-fm command in the foreground."""
    print("+ sci-fm", " ".join(map(str, args)), flush=True)
    t0 = time.time()
    _check(args, subprocess.run(_argv(args), env=ENV).returncode, t0)


def sh_many(commands: list[list], jobs: int, logs: Path) -> None:
    """Run independent sci-fm commands, at most ``jobs`` at a time; each one's output goes to its own log."""
    if jobs <= 1 or len(commands) <= 1:
        for c in commands:
            sh(*c)
        return
    logs.mkdir(parents=True, exist_ok=True)
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < jobs:
            c = pending.pop(0)
            log = logs / f"{int(time.time() * 1000)}_{len(pending)}_{c[0]}.log"
            print("+ sci-fm", " ".join(map(str, c)), f"> {log}", flush=True)
            fh = open(log, "w")
            running.append(
                (c, subprocess.Popen(_argv(c), env=ENV, stdout=fh, stderr=subprocess.STDOUT), fh, time.time())
            )
        time.sleep(2)
        for item in list(running):
            c, proc, fh, t0 = item
            if proc.poll() is not None:
                fh.close()
                running.remove(item)
                _check(c, proc.returncode, t0)


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _pid_alive(pid_file: Path) -> bool:
    """Whether the process whose pid the file holds still runs (a restarted script must not start the
    long background run twice)."""
    try:
        return _pid_running(int(pid_file.read_text()))
    except (OSError, ValueError):
        return False


class Background:
    """A long run in the background: our own child (``proc``) or one a previous run of this script started."""

    def __init__(self, proc: subprocess.Popen | None, pid: int):
        self.proc, self.pid = proc, pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _pid_running(self.pid)

    def wait(self) -> None:
        while self.alive():
            time.sleep(10)


def kappa_or_default(summary: dict, default: float = 7e-5) -> float:
    """κ_T (1/bar) of an NPT run's volume fluctuations if within 1e-5..1e-3, else ``default``. A model far
    below its experimental density is a stretched, soft liquid (κ_T 5e-4 was measured); replacing that by
    a textbook 7e-5 made the first alignment round's ΔP ten times too large (a 30 % density overshoot)."""
    k = summary.get("isothermal_compressibility_per_bar")
    return float(k) if k is not None and 1e-5 <= k <= 1e-3 else default


def distill_cmd(teachers, student: int, frames, clusters, epochs: int, out) -> list:
    """`sci-fm distill` arguments: the student (a teacher index) fine-tuned on the bulk ``frames``,
    alternating with labelled ``clusters``."""
    return ["distill", "--teachers", *teachers, "--student", student, "--frames", *frames] + [
        "--clusters",
        clusters,
        "--epochs",
        epochs,
        "--out",
        out,
        "--no-progress",
    ]


def compare_members(out: Path, members: dict, box, heldout, P: dict, device, extra, tail, jobs, logs) -> None:
    """Held-out cluster errors (``sci-fm eval mlip``) and a float64 NVE run of the electrolyte box for each
    model of ``members`` (label -> run) not done yet; OUT/eval/LABEL.json, OUT/compare/LABEL/."""
    cmds = []
    for label, run in members.items():
        if not (out / "eval" / f"{label}.json").exists():
            cmds.append(
                ["eval", "mlip", "--model", run, "--data", heldout, "--out", out / "eval" / f"{label}.json"]
            )
    for label, run in members.items():
        d = out / "compare" / label
        if not (d / "summary.json").exists():
            nve = ("nve", 298.0, P["long_timestep"], P["compare_steps"], d, device)
            cmds.append(md_cmd(run, box, *nve, *extra, "--dtype", "float64", "--thermo-every", 10, tail=tail))
    (out / "eval").mkdir(exist_ok=True)
    sh_many(cmds, jobs, logs)


def most_stable(summaries: dict[int, dict]) -> int:
    """The index of the most stable model: no guard stop, then the smallest |NVE energy drift|; when every
    run stopped, the one that lasted longest."""

    def key(k):
        sm = summaries[k]
        if sm.get("stop_reason"):
            return (1, -float(sm.get("stop_step") or 0))
        return (0, abs(float(sm.get("energy_drift_eV_per_atom_per_ps") or float("inf"))))

    return min(summaries, key=key)


def composition(comp: str, n: int) -> str:
    """Scale a pure-solvent 'X x 1' to n molecules; ratio forms take n through --n-solvent."""
    return comp.replace("x 1", f"x {n}") if comp.endswith("x 1") else comp


def summary(run: Path) -> dict:
    f = run / "summary.json"
    return json.loads(f.read_text()) if f.exists() else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/electrolyte_ff")
    p.add_argument("--scale", choices=sorted(PRESETS), default="full")
    p.add_argument("--tiny", action="store_true", help="same as --scale tiny")
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1, help="sci-fm processes at a time (one CPU thread each)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument(
        "--no-dispersion-tail",
        dest="dispersion_tail",
        action="store_false",
        help="MD without the dispersion beyond the teachers' cutoff (sci-fm md --dispersion-tail)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default="benchmarks/results/md", help="where the records go ('' for none)")
    p.add_argument(
        "--records-only", action="store_true", help="rewrite the records from OUT/results.json and stop"
    )
    a = p.parse_args()
    if a.records_only:
        results = json.loads((Path(a.out) / "results.json").read_text())
        write_records(results, Path(a.out), Path(a.results), " ".join(sys.argv))
        return
    scale = "tiny" if a.tiny else a.scale
    P = PRESETS[scale]
    t = scale == "tiny"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    results: dict = {"scale": scale, "preset": P, "teachers": a.teachers, "systems": {}}
    t_start = time.time()
    background: list[Background] = []

    def fg_jobs() -> int:
        return max(1, a.jobs - sum(b.alive() for b in background))

    # 1-2. boxes and seed clusters
    builds, cuts, cluster_files, heldout_files = [], [], [], []
    for name, comp, rho, _temp, _exp in SYSTEMS:
        for s in range(P["seeds"] + 1):  # the last seed's box gives the held-out test clusters
            held = s == P["seeds"]
            box = out / "boxes" / f"{name}_{s}.extxyz"
            if not box.exists():
                builds.append(
                    [
                        "build",
                        "electrolyte",
                        "--composition",
                        composition(comp, P["n_mol"]),
                        "--density",
                        rho,
                        "--n-solvent",
                        P["n_mol"],
                        "--seed",
                        s,
                        "--out",
                        box,
                    ]
                )
            cl = out / "clusters" / (f"heldout_{name}.extxyz" if held else f"seed_{name}_{s}.extxyz")
            n_cut = (
                max(2, P["max_clusters"] // (2 * P["seeds"]))
                if held
                else max(1, P["max_clusters"] // P["seeds"])
            )
            if not cl.exists():
                cuts.append(cut_cmd(P, box, "LiPF6" in comp, n_cut, cl, seed=s, rattle=P["rattle"]))
            (heldout_files if held else cluster_files).append(cl)
    sh_many(builds, fg_jobs(), logs)
    sh_many(cuts, fg_jobs(), logs)
    train_file = out / "clusters" / "all.extxyz"

    def merge(files, target=train_file):
        import ase.io

        frames = []
        for k, f in enumerate(files):
            for j, atoms in enumerate(ase.io.read(f, ":")):
                atoms.info["traj_id"] = 1000 * k + j
                frames.append(atoms)
        ase.io.write(target, frames, format="extxyz")
        return len(frames)

    results["n_seed_clusters"] = merge(cluster_files)
    heldout_file = out / "clusters" / "heldout.extxyz"
    results["n_heldout_clusters"] = merge(heldout_files, heldout_file)

    # 3. teachers
    def train(round_: int, members=None) -> list[Path]:
        runs, cmds = [], []
        for k in range(a.teachers) if members is None else members:
            run = out / f"teacher{k}_r{round_}"
            if not (run / "model" / "model.json").exists():
                cmds.append(
                    [
                        "train",
                        "mlip",
                        "--model",
                        "bamboo",
                        "--model-config",
                        P["model_cfg"],
                        "--train",
                        train_file,
                        "--max-epochs",
                        P["epochs"],
                        "--seed",
                        k,
                        "--out",
                        run,
                        "--accelerator",
                        a.accelerator,
                        "--max-time",
                        P["max_time"],
                        "--batch-size",
                        P["batch_size"],
                        "--zbl",
                        "--virial-weight",
                        P["virial_weight"],
                        "--no-progress",
                    ]
                )
            runs.append(run)
        sh_many(cmds, fg_jobs(), logs)
        return runs

    def npt(models, tag, names, steps, first=(), start=None, barostat="mtk"):
        """NPT (1 atm) of each named system; ``start`` maps names to starting structures (default: the
        packed box of seed 0); the first ``npt_equilibration`` ps are left out of the averages.
        ``barostat="berendsen"`` for runs that start from a packed box: after FIRE such a box still sits at
        +15 kbar, and an MTK barostat (a box with momentum) overshoots into a gas within a picosecond; the
        densities are measured with MTK from the end of a Berendsen run."""
        dirs, cmds = {}, list(first)
        for name, _c, _r, temp, _e in SYSTEMS:
            if name not in names:
                continue
            d = out / f"npt_{tag}" / name
            if not (d / "summary.json").exists():
                structure = (start or {}).get(name, out / "boxes" / f"{name}_0.extxyz")
                cmds.append(
                    md_cmd(
                        list(models),
                        structure,
                        "npt",
                        temp,
                        P["npt_timestep"],
                        steps,
                        d,
                        a.device,
                        *("--pressure", 1.01325, "--barostat", barostat),
                        *("--pdamp", 250 if barostat == "mtk" else 500),
                        *("--save-every", P["save_every"], "--thermo-every", P["thermo_every"]),
                        *("--equilibration", min(P["npt_equilibration"], 0.5e-3 * steps * P["npt_timestep"])),
                        *(["--uncertainty-threshold", 0.5] if len(models) > 1 else []),
                        tail=a.dispersion_tail,
                    )
                )
            dirs[name] = d
        sh_many(cmds, fg_jobs(), logs)
        return dirs

    all_names = [s[0] for s in SYSTEMS]
    # 3b. active learning: NPT of every box with teacher 0, clusters cut from the frames it visits
    # (thermal liquid configurations at the model's own density, which packed boxes never show), GFN2-xTB
    # labels, teacher 0 retrained; the committee is trained once, on the last round's clusters.
    al_files, results["active_learning"] = [], []
    for r in range(P["al_rounds"]):
        t0 = train(r, [0])[0]
        runs = npt([t0], f"al_r{r}", all_names, P["al_steps"], barostat="berendsen")
        for name, d in runs.items():
            cl = out / "clusters" / f"al_r{r}_{name}.extxyz"
            if not cl.exists():
                sh(*cut_cmd(P, d / "traj.extxyz", "LiPF6" in name, P["al_clusters"], cl, seed=100 + r))
            al_files.append(cl)
        results["active_learning"].append(
            {
                "round": r,
                "densities": {n: summary(d).get("density_g_cm3_mean") for n, d in runs.items()},
                "stop_reasons": {n: summary(d).get("stop_reason") for n, d in runs.items()},
            }
        )
        results["n_clusters"] = merge(cluster_files + al_files)
    final_round = P["al_rounds"]
    teacher0 = train(final_round, [0])[0]  # the long runs below need teacher 0 only

    # 4. stability runs of the electrolyte box with teacher 0: NVT in the background, NVE in the queue below
    elyte_box = out / "boxes" / f"{ELECTROLYTE}_0.extxyz"
    long_extra = ("--save-every", P["long_save_every"])
    nvt_dir, nve_dir = out / "stability" / "nvt", out / "stability" / "nve"
    pid_file = out / "stability" / "nvt.pid"
    if not (nvt_dir / "summary.json").exists() and _pid_alive(pid_file):
        print(f"NVT run already going (pid {pid_file.read_text().strip()}); not started again", flush=True)
        background.append(Background(None, int(pid_file.read_text())))
    elif not (nvt_dir / "summary.json").exists():
        cmd = md_cmd(
            teacher0,
            elyte_box,
            "nvt",
            298.0,
            P["long_timestep"],
            P["nvt_steps"],
            nvt_dir,
            a.device,
            *long_extra,
            *("--thermostat", "nose-hoover", "--tdamp", 100, "--thermo-every", 2),
            tail=a.dispersion_tail,
        )
        nvt_dir.mkdir(parents=True, exist_ok=True)
        print("+ sci-fm", " ".join(map(str, cmd)), "(background)", flush=True)
        log = open(out / "stability" / "nvt.log", "w")
        proc = subprocess.Popen(_argv(cmd), env=ENV, stdout=log, stderr=subprocess.STDOUT)
        pid_file.write_text(str(proc.pid))
        background.append(Background(proc, proc.pid))
    teachers = train(final_round)  # the rest of the committee, next to the NVT run
    results["teacher_metrics"] = [json.loads((r / "metrics.json").read_text()) for r in teachers]
    stability = []
    if not (nve_dir / "summary.json").exists():
        stability.append(
            md_cmd(
                teacher0,
                elyte_box,
                "nve",
                298.0,
                P["long_timestep"],
                P["nve_steps"],
                nve_dir,
                a.device,
                *long_extra,
                *("--dtype", "float64", "--thermo-every", 10),
                tail=a.dispersion_tail,
            )
        )

    # 5. committee NPT (frames for distillation, flagged candidates)
    runs = npt(teachers, "committee", all_names, P["committee_steps"], first=stability, barostat="berendsen")
    results["committee_npt"] = {
        n: {k: summary(d).get(k) for k in ("steps", "stop_reason", "n_flagged", "forces_std_max_eV_A_max")}
        for n, d in runs.items()
    }

    # 6. teachers, then the student, against each other: force errors on held-out clusters (seed boxes no
    # model trained on) and stability in float64 NVE of the electrolyte box (guards, energy drift). The
    # student is the most stable teacher (BAMBOO fine-tunes one of its teachers; stability is what
    # distillation is for), fine-tuned on the bulk frames of the committee NPT runs.
    members = {f"teacher{k}": r for k, r in enumerate(teachers)}
    compare_members(
        out, members, elyte_box, heldout_file, P, a.device, long_extra, a.dispersion_tail, fg_jobs(), logs
    )
    distilled = out / "distilled"
    choice = most_stable({k: summary(out / "compare" / f"teacher{k}") for k in range(len(teachers))})
    if not (distilled / "model" / "model.json").exists():
        frames = [d / "traj.extxyz" for d in runs.values()]
        sh(*distill_cmd(teachers, choice, frames, train_file, P["distill_epochs"], distilled))
    results["distill"] = json.loads((distilled / "metrics.json").read_text())
    # the student the run used (a run started before the choice rule existed used teacher 0)
    results["student_choice"] = {
        "student": results["distill"]["student"],
        "most_stable_teacher": choice,
        "rule": "no guard stop in the NVE comparison, then the smallest |energy drift|",
    }
    members["student"] = distilled
    compare_members(
        out,
        {"student": distilled},
        elyte_box,
        heldout_file,
        P,
        a.device,
        long_extra,
        a.dispersion_tail,
        fg_jobs(),
        logs,
    )
    results["heldout_clusters"] = {
        label: {
            k: v
            for k, v in json.loads((out / "eval" / f"{label}.json").read_text()).items()
            if k in ("n_frames", "energy_mae_meV", "forces_mae_meV_per_A", "forces_rmse_meV_per_A")
        }
        for label in members
    }
    results["compare_nve"] = {
        label: {
            k: summary(out / "compare" / label).get(k)
            for k in ("steps", "simulated_ps", "stop_reason", "stop_step", "energy_drift_eV_per_atom_per_ps")
        }
        for label in members
    }

    # 7. NPT with the student (before), alignment without the held-out solvent, NPT after
    committee_end = {n: d / "traj.extxyz" for n, d in runs.items()}  # near the models' own density
    before = npt([distilled / "model"], "student", all_names, P["npt_steps"], start=committee_end)
    import yaml

    systems_yaml = out / "systems.yaml"
    systems_yaml.write_text(
        yaml.safe_dump(
            {
                "systems": [
                    # κ_T from the volume fluctuations of the "before" run when plausible for a liquid,
                    # else a typical carbonate value (1/bar); only the first round uses it
                    {
                        "name": name,
                        "md": str(before[name].resolve()),
                        "density_exp": exp,
                        "kappa_T_per_bar": kappa_or_default(summary(before[name])),
                    }
                    for name, *_x, exp in SYSTEMS
                    if name != HELD_OUT
                ]
            }
        )
    )
    aligned = out / "aligned"
    if not (aligned / "model" / "model.json").exists():
        sh(
            "align",
            "--model",
            distilled,
            "--systems",
            systems_yaml,
            "--clusters",
            train_file,
            "--epochs",
            P["align_epochs"],
            "--lr",
            P["align_lr"],
            "--npt-steps",
            P["npt_steps"],
            "--npt-equilibration",
            P["npt_equilibration"],
            "--rounds",
            P["align_rounds"],
            "--tolerance",
            P["align_tolerance"],
            "--at-density-from",
            P["align_at_density_from"],
            "--at-density-steps",
            P["align_at_density_steps"],
            "--jobs",
            max(1, a.jobs),
            "--resume",  # an interrupted benchmark keeps its finished rounds
            "--out",
            aligned,
            "--no-progress",
        )
    results["alignment"] = json.loads((aligned / "metrics.json").read_text())
    after = {n: Path(v["md_dir"]) for n, v in results["alignment"]["npt"].items()}
    heldout_start = {HELD_OUT: before[HELD_OUT] / "traj.extxyz"}
    after.update(npt([aligned / "model"], "aligned", [HELD_OUT], P["npt_steps"], start=heldout_start))

    # 8. densities, stability, transport
    for name, *_x, exp in SYSTEMS:
        b, f = summary(before[name]), summary(after[name])
        results["systems"][name] = {
            "aligned_on": name != HELD_OUT,
            "density_exp": exp,
            "density_before": b.get("density_g_cm3_mean"),
            "density_before_sem": b.get("density_g_cm3_sem"),
            "density_after": f.get("density_g_cm3_mean"),
            "density_after_sem": f.get("density_g_cm3_sem"),
            "error_before": None if b.get("density_g_cm3_mean") is None else b["density_g_cm3_mean"] - exp,
            "error_after": None if f.get("density_g_cm3_mean") is None else f["density_g_cm3_mean"] - exp,
            "stop_before": b.get("stop_reason"),
            "stop_after": f.get("stop_reason"),
        }
    for b in background:
        b.wait()
    keys = (
        "steps",
        "steps_requested",
        "simulated_ps",
        "n_atoms",
        "dtype",
        "stop_reason",
        "stop_step",
        "steps_per_second",
        "ns_per_day",
        "temperature_K_mean",
        "energy_drift_eV_per_atom_per_ps",
    )
    results["nve"] = {k: summary(nve_dir).get(k) for k in keys}
    results["nvt"] = {k: summary(nvt_dir).get(k) for k in keys}
    props = "density,rdf,viscosity" if t else "rdf,msd,conductivity,viscosity"
    sh("analyze", "--run", nvt_dir, "--properties", props, "--gk-tmax", P["gk_tmax"], "--skip", 0.1)
    results["transport"] = json.loads((nvt_dir / "analysis" / "metrics.json").read_text())
    results["wall_time_s"] = time.time() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plot_densities(results, out / "densities.png")
    print(json.dumps(results, indent=1, default=str))
    if a.results and not t:
        write_records(results, out, Path(a.results), " ".join(sys.argv))


def write_records(results: dict, out: Path, dest: Path, command: str) -> None:
    """Three ``scifm-bench/1`` records (densities, stability, transport) and their plots under ``dest``."""
    import shutil

    from scifm.core.provenance import utc_timestamp, write_record

    scale = results["scale"]
    stamp = utc_timestamp().replace(":", "").replace("-", "")
    plots_dir = dest / f"electrolyte-{scale}-{stamp}"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_nve(out / "stability" / "nve" / "thermo.csv", out / "nve_energy.png")
    plots = []
    for src in [
        out / "densities.png",
        out / "nve_energy.png",
        *sorted((out / "stability" / "nvt" / "analysis").glob("*.png")),
    ]:
        shutil.copy(src, plots_dir / src.name)
        plots.append(f"{plots_dir.name}/{src.name}")
    common = dict(
        config={"scale": scale, "preset": results["preset"], "sources": [f"{plots_dir.name}/results.json"]},
        seed=0,
        wall_time_s=results["wall_time_s"],
        command=command,
    )
    rows = []
    for name, r in results["systems"].items():
        eb, ea = r["error_before"], r["error_after"]
        rows.append(
            {
                "system": name,
                "aligned_on": r["aligned_on"],
                "density_exp": r["density_exp"],
                "density_before": r["density_before"],
                "density_before_sem": r["density_before_sem"],
                "density_after": r["density_after"],
                "density_after_sem": r["density_after_sem"],
                "abs_error_before": None if eb is None else abs(eb),
                "abs_error_after": None if ea is None else abs(ea),
            }
        )
    g = {"unit": "g/cm³"}
    alignment = results.get("alignment") or {}
    density_common = dict(common)
    density_common["config"] = {
        **common["config"],
        # per round and aligned system: ΔP asked (bar), how it was chosen, residual, NPT density after
        "alignment_rounds": [
            {
                name: {
                    k: v.get(k)
                    for k in (
                        "delta_p_target_bar",
                        "rule",
                        "residual_after_bar",
                        "density_md_g_cm3",
                        "density_after_g_cm3",
                        "density_after_sem_g_cm3",
                    )
                }
                for name, v in r["systems"].items()
            }
            for r in alignment.get("rounds", [])
        ],
        "active_learning": results.get("active_learning"),
    }
    write_record(
        dest / f"electrolyte-density-{scale}-{stamp}.json",
        suite="md",
        name=f"electrolyte-density-{scale}",
        title="NPT densities of the student (before) and the aligned model (after) against experiment",
        rows=rows,
        plots=plots[:1],
        columns={
            "density_exp": {"better": None, "label": "ρ exp", **g},
            "density_before": {"better": None, "label": "ρ before", **g},
            "density_after": {"better": None, "label": "ρ after", **g},
            "abs_error_before": {"better": "lower", "label": "|Δρ| before", **g},
            "abs_error_after": {"better": "lower", "label": "|Δρ| after", **g},
        },
        **density_common,
    )
    rows = []
    nvt = dict(results["nvt"])
    thermo = out / "stability" / "nvt" / "thermo.csv"
    if nvt.get("steps") is None and thermo.exists():  # a run stopped by hand at the time budget
        import numpy as np

        from scifm.md.thermo import read_thermo

        th = read_thermo(thermo)
        nvt.update(
            steps=int(th["step"][-1]),
            simulated_ps=float(th["time_fs"][-1]) * 1e-3,
            temperature_K_mean=float(np.mean(th["temperature_K"])),
            n_atoms=results["nve"].get("n_atoms"),
            dtype="float32",
            stop_reason="interrupted by hand at the time budget (no guard triggered)",
        )
        results["nvt"] = nvt
    runs = {"nve (teacher0)": results["nve"], "nvt (teacher0)": nvt}
    runs.update({f"nve compare ({k})": v for k, v in results["compare_nve"].items()})
    for label, r in runs.items():
        drift = r.get("energy_drift_eV_per_atom_per_ps")
        member = label.split("(")[-1].rstrip(")") if label.startswith("nve compare") else None
        h = results["heldout_clusters"].get(member, {}) if member else {}
        rows.append(
            {
                "run": label,
                "simulated_ps": r.get("simulated_ps"),
                "n_atoms": r.get("n_atoms"),
                "dtype": r.get("dtype"),
                "stop_reason": r.get("stop_reason") or "none",
                "energy_drift_eV_per_atom_per_ps": drift,
                "abs_drift_eV_per_atom_per_ps": None if drift is None else abs(drift),
                "steps_per_second": r.get("steps_per_second"),
                "temperature_K_mean": r.get("temperature_K_mean"),
                "heldout_forces_mae_meV_per_A": h.get("forces_mae_meV_per_A"),
                # which teacher the student was fine-tuned from
                "fine_tuned_from": f"teacher{results['distill']['student']}" if member == "student" else None,
            }
        )
    write_record(
        dest / f"electrolyte-stability-{scale}-{stamp}.json",
        suite="md",
        name=f"electrolyte-stability-{scale}",
        title="Electrolyte box: NVE drift (float64), NVT guards, student vs teachers (held-out clusters)",
        rows=rows,
        plots=plots[1:2],
        columns={
            "simulated_ps": {"better": "higher", "unit": "ps", "label": "simulated"},
            "abs_drift_eV_per_atom_per_ps": {"better": "lower", "unit": "eV/atom/ps", "label": "|drift|"},
            "heldout_forces_mae_meV_per_A": {"better": "lower", "unit": "meV/Å", "label": "F MAE held-out"},
            "steps_per_second": {"better": "higher", "unit": "1/s", "label": "steps/s"},
            "temperature_K_mean": {"better": None, "unit": "K", "label": "T mean"},
        },
        **common,
    )
    tr = results["transport"]
    rows = [
        {"quantity": f"D({sp})", "value": d["D_m2_s"], "sem": d["D_sem_m2_s"], "unit": "m²/s"}
        for sp, d in tr.get("diffusion", {}).items()
    ]
    c = tr.get("conductivity") or {}
    if c:
        rows += [
            {
                "quantity": "σ Nernst–Einstein",
                "value": c["nernst_einstein_mS_cm"],
                "sem": c["nernst_einstein_sem_mS_cm"],
                "unit": "mS/cm",
            },
            {
                "quantity": "σ Einstein",
                "value": c["einstein_mS_cm"],
                "sem": c["einstein_sem_mS_cm"],
                "unit": "mS/cm",
            },
        ]
    if "viscosity_mPa_s" in tr:
        rows.append(
            {
                "quantity": "η Green–Kubo",
                "value": tr["viscosity_mPa_s"],
                "sem": tr["viscosity_sem_mPa_s"],
                "unit": "mPa·s",
            }
        )
    write_record(
        dest / f"electrolyte-transport-{scale}-{stamp}.json",
        suite="md",
        name=f"electrolyte-transport-{scale}",
        title="Transport of the electrolyte from the NVT run (block error bars)",
        rows=rows,
        plots=plots[2:],
        columns={
            "value": {"better": None, "unit": "", "label": "value"},
            "sem": {"better": None, "unit": "", "label": "SEM"},
        },
        **common,
    )
    (plots_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"records written to {dest}")


def plot_nve(thermo: Path, path: Path) -> None:
    """Total and potential energy per atom of the NVE run against time, relative to their first value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scifm.md.thermo import read_thermo

    th = read_thermo(thermo)
    n_atoms = json.loads((thermo.parent / "summary.json").read_text())["n_atoms"]
    t_ps = th["time_fs"] * 1e-3
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key, label in (("etot_eV", "total"), ("epot_eV", "potential")):
        ax.plot(t_ps, 1e3 * (th[key] - th[key][0]) / n_atoms, label=label, lw=0.8)
    ax.set_xlabel("t (ps)")
    ax.set_ylabel("E − E(0) (meV/atom)")
    ax.set_title("NVE, float64: electrolyte box")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_densities(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["systems"])
    rows = [results["systems"][n] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for k, (key, label) in enumerate(
        [("density_exp", "experiment"), ("density_before", "student (before)"), ("density_after", "aligned")]
    ):
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        err = [0.0 if r.get(key + "_sem") is None else r[key + "_sem"] for r in rows]
        ax.bar(x + (k - 1) * 0.27, vals, 0.27, yerr=err, label=label)
    ax.set_xticks(
        x, [n + ("" if r["aligned_on"] else "\n(held out)") for n, r in zip(names, rows, strict=True)]
    )
    ax.set_ylabel("density (g/cm³)")
    ax.set_ylim(0.8, None)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
