"""Prose benchmarks: alanine dipeptide (single system) and transferability over dipeptides.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE uv run python benchmarks/prose/run.py --quick  # minutes
    uv run python benchmarks/prose/run.py --suite ad --platform CUDA --device cuda  # GPU machine
    uv run python benchmarks/prose/run.py --suite transfer --workers 16  # many cores

On alanine dipeptide two flows are trained on the same MD: the transferable Prose TarFlow (Cartesian) and
the single-system internal-coordinate flow (`--model icflow`, the classical Boltzmann generator); a run
folder that already holds a trained model is reused. Full settings (issue 6): Ace-A-Nme training MD
>= 5 ns (a frame every 0.1 ps by default), held-out reference MD of another seed (a frame every 1 ps),
10^4 proposals, targets ESS >= 0.05 and torus W2 <= 0.3 after SNIS; transferability: >= 30 training
dipeptides x >= 1 ns, zero-shot SNIS on >= 5 unseen dipeptides (each with its own 1 ns reference), target
ESS >= 0.01. `--quick` shrinks
everything to check the pipeline; its numbers say nothing about quality. Writes
benchmarks/results/prose/<name>-<UTC time>.json (schema scifm-bench/1) and keeps run folders in --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_LABELS = {
    "tarflow": "Prose TarFlow (Cartesian, transferable)",
    "icflow": "IC flow (internal coordinates, this molecule only)",
    "ictransfer": "transferable IC flow (zero-shot)",
}
COLUMNS = {
    "ess": {"better": "higher", "unit": "", "label": "SNIS ESS"},
    "energy_w2": {"better": "lower", "unit": "kT", "label": "E-W2"},
    "torus_w2": {"better": "lower", "unit": "rad", "label": "T-W2"},
    "tica_w2": {"better": "lower", "unit": "", "label": "TICA-W2"},
    "macrostate_jsd": {"better": "lower", "unit": "bits", "label": "JSD"},
    "wrong_chirality_fraction": {"better": "lower", "unit": "", "label": "wrong chir."},
    "energy_evaluations": {"better": None, "unit": "", "label": "energy evaluations"},
    "wall_time_s": {"better": None, "unit": "s", "label": "sampling time"},
}


def sci_fm(*args: str) -> None:
    from scifm.cli.main import main

    print("$ sci-fm " + " ".join(args), flush=True)
    rc = main(list(args))
    if rc not in (0, None):
        raise SystemExit(f"sci-fm {' '.join(args)} failed with {rc}")


def _peptide_md(
    a,
    out: Path,
    sequences: list[str],
    frames: int,
    interval: int,
    warm: int,
    seed: int | None = None,
    *extra: str,
) -> None:
    if out.is_file():
        return
    seed_args = [] if seed is None else ["--seed", str(seed)]
    sci_fm(
        "data",
        "peptides",
        "--sequences",
        *sequences,
        "--frames",
        str(frames),
        "--interval-steps",
        str(interval),
        "--warmup-steps",
        str(warm),
        "--out",
        str(out),
        "--workers",
        str(a.workers),
        "--platform",
        a.platform,
        *seed_args,
        *extra,
        "--no-progress",
    )


def _train(a, data: Path, run: Path, epochs: int, batch: int, *extra: str) -> None:
    """`sci-fm train prose` with the options every benchmark training shares."""
    sci_fm(
        "train",
        "prose",
        "--data",
        str(data),
        "--run-dir",
        str(run),
        "--max-epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        *extra,
        *_time_cap(a),
        "--device",
        a.device,
        "--no-progress",
        "--seed",
        str(a.seed),
        "--threads",
        str(a.train_threads),
    )


def _time_cap(a) -> list[str]:
    return [] if a.quick or not a.max_train_s else ["--max-time-s", str(a.max_train_s)]


def _sample(a, run: Path, sequence: str, reference: Path, out: Path, n: int, *extra: str) -> dict:
    """`sci-fm sample prose` with n proposals (`--method snis` unless `extra` names another); returns its
    metrics.json (reused when the folder already holds one)."""
    if (out / "metrics.json").is_file() and not a.quick:
        return json.loads((out / "metrics.json").read_text())
    sci_fm(
        "sample",
        "prose",
        "--model",
        str(run),
        "--sequence",
        sequence,
        "--n",
        str(n),
        "--method",
        "snis",
        "--reference",
        str(reference),
        "--out",
        str(out),
        "--workers",
        str(a.workers),
        "--metric-points",
        str(min(n, 5000)),
        "--seed",
        str(a.seed),
        "--device",
        a.device,
        "--platform",
        a.platform,
        *extra,
    )
    return json.loads((out / "metrics.json").read_text())


def bench_ad(a, wd: Path) -> list[dict]:
    """Flow trained on one MD run of Ace-A-Nme; metrics against a second, independent run (another seed:
    other initial velocities and Langevin noise), so the reference is held out."""
    q = a.quick
    data, held_out = wd / "ad.h5", wd / "ad_reference.h5"
    interval = 100 if q else a.ad_interval_steps
    frames, warm = (400, 2000) if q else (a.ad_ns * 1_000_000 // interval, 50_000)
    _peptide_md(a, data, ["Ace-A-Nme"], frames, interval, warm, a.seed)
    ref_frames = 200 if q else a.ad_ref_ns * 1000
    _peptide_md(a, held_out, ["Ace-A-Nme"], ref_frames, 100 if q else 1000, warm, a.seed + 1000)
    rows = []
    for model in a.ad_models:
        run = wd / ("ad_run" if model == "tarflow" else f"ad_{model}_run")
        if (run / "model" / "model.json").is_file() and not q:
            print(f"reusing the trained {model} in {run}", flush=True)
        elif model == "tarflow":
            lr = str(1e-3 if q else 5e-4)
            _train(
                a,
                data,
                run,
                3 if q else a.epochs,
                32 if q else 256,
                "--size",
                "tiny" if q else a.size,
                "--lr",
                lr,
            )
        else:
            small = ["--ic-hidden", "32", "--ic-layers", "4"] if q else []
            _train(a, data, run, 1 if q else a.ic_epochs, 32 if q else 256, "--model", "icflow", *small)
        out = wd / ("ad_snis" if model == "tarflow" else f"ad_{model}_snis")
        m = _sample(a, run, "Ace-A-Nme", held_out, out, 500 if q else a.n_proposals)
        row = {"task": "Ace-A-Nme", "model": MODEL_LABELS[model], "method": "snis"}
        row.update({k: m.get(k) for k in COLUMNS})
        row["passes"] = bool(
            m["ess"] is not None and m["ess"] >= 0.05 and m["torus_w2"] is not None and m["torus_w2"] <= 0.3
        )
        rows.append(row)
    return rows


def _all_dipeptides() -> list[str]:
    """The 400 one-letter dipeptides in alphabetical order."""
    letters = sorted("ACDEFGHIKLMNPQRSTVWY")
    return [x + y for x in letters for y in letters]


def _dipeptides(n: int, seed: int) -> list[str]:
    import numpy as np

    pairs = _all_dipeptides()
    rng = np.random.default_rng(seed)
    return [pairs[i] for i in rng.permutation(len(pairs))[:n]]


TEST_POOL_START = 30  # the unseen sequences come after this many of the random order (see transfer_split)
# MD order: the unseen systems are simulated after the first MD_TEST_SLOT training systems, so that every
# system's MD seed (seed + its position) stays the same when --n-train grows past it (the part files of an
# earlier, smaller run are reused and the unseen systems keep their reference trajectories)
MD_TEST_SLOT = 60


def transfer_split(n_train: int, n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Random zwitterionic dipeptides: n_test unseen ones and n_train for training.

    With m = min(n_train, TEST_POOL_START), the unseen ones are the first n_test after the first m of a
    random order whose two residues both occur among those m (zero-shot on new sequences, not on new amino
    acids); training takes the first n_train of the order that are not unseen ones. The test set is the same
    for every n_train >= TEST_POOL_START, and a larger n_train extends the same training set."""
    seqs = _dipeptides(400, seed)
    m = min(n_train, TEST_POOL_START)
    seen = {c for s in seqs[:m] for c in s}
    test = [s for s in seqs[m:] if set(s) <= seen][:n_test]
    train = [s for s in seqs if s not in test][:n_train]
    return train, test


def position_neighbours(train: list[str], test: list[str]) -> list[str]:
    """Dipeptides not in train or test that share the residue at one position with an unseen one (IY ->
    I-X and X-Y), in alphabetical order: appended after the training systems, so every earlier system keeps
    its MD seed. The unseen sequences themselves are never added."""
    known = set(train) | set(test)
    return [
        p for p in _all_dipeptides() if p not in known and any(p[0] == t[0] or p[1] == t[1] for t in test)
    ]


def bench_transfer(a, wd: Path) -> list[dict]:
    """Zero-shot transfer: one flow trained on n_train dipeptides, then SNIS, SMC and plain MD (as many
    force evaluations as SNIS and as SMC used) on each unseen dipeptide, against its own reference MD."""
    q = a.quick
    n_train, n_test = (3, 1) if q else (a.n_train, a.n_test)
    train, test = transfer_split(n_train, n_test, a.seed)
    if a.transfer_neighbours and not q:
        train = train + position_neighbours(train, test)
    a.train_systems, a.test_systems = train, test  # recorded in the record's config
    a.n_train_systems = len(train)  # n_train plus any --transfer-neighbours
    seqs = train[:MD_TEST_SLOT] + test + train[MD_TEST_SLOT:]
    dt = a.transfer_timestep_fs
    per_ps = round(1000 / dt)  # MD steps per ps
    frames, interval, warm = (60, 100, 1000) if q else (a.transfer_ns * 1000, per_ps, 50 * per_ps)
    data = wd / "dipeptides.h5"
    md_args = ["--force-field", a.transfer_force_field, "--parts-dir", str(wd / "md_parts")]
    md_args += ["--timestep-fs", str(dt), "--hydrogen-mass", str(a.transfer_hydrogen_mass)]
    if a.md_starts > 1 and not q:
        multi = [s for s in train if any(r in s for r in a.md_starts_residues)]
        if not multi:
            raise SystemExit(f"--md-starts: no training system has a residue of {a.md_starts_residues!r}")
        md_args += ["--starts", str(a.md_starts), "--starts-only", *multi]
        a.md_starts_systems = multi  # recorded in the record's config
    _peptide_md(a, data, seqs, frames, interval, warm, a.seed, *md_args)
    run = wd / "transfer_run"
    model = a.transfer_model
    if (run / "model" / "model.json").is_file() and not q:
        print(f"reusing the trained transfer model in {run}", flush=True)
    else:
        size = ["--size", "tiny" if q else a.size]
        if model == "ictransfer":
            size = [
                "--ic-hidden",
                "16" if q else str(a.ict_hidden),
                "--ic-layers",
                "4" if q else str(a.ict_layers),
                "--ic-stiff-kT",
                str(a.ict_stiff_kt),
            ]
        extra = [
            "--model",
            model,
            "--systems",
            *train,
            "--val-fraction",
            "0.05",
            *size,
            "--lr",
            str(a.transfer_lr),
        ]
        if a.transfer_init_from:
            extra += ["--init-from", a.transfer_init_from]
        if a.transfer_kl_weight:
            extra += ["--kl-weight", str(a.transfer_kl_weight), "--kl-systems", str(a.transfer_kl_systems)]
            extra += ["--kl-samples", str(a.transfer_kl_samples)]
        _train(a, data, run, 2 if q else a.epochs, 32 if q else a.transfer_batch, *extra)
    label = MODEL_LABELS[model]
    n_snis = 300 if q else a.n_proposals
    n_smc, smc_steps = (64, 5) if q else (a.smc_particles, a.smc_steps)
    rows = []
    for s in test:
        ms = _sample(a, run, s, data, wd / f"zero_shot_{s}_snis", n_snis)
        smc_args = ["--method", "smc", "--smc-steps", str(smc_steps), "--smc-kernel", "mala"]
        mc = _sample(a, run, s, data, wd / f"zero_shot_{s}_smc", n_smc, *smc_args)
        base = {"task": f"zero-shot {s}"}
        rows.append({**base, "model": label, "method": "snis", **{k: ms.get(k) for k in COLUMNS}})
        rows[-1]["passes"] = bool(ms["ess"] is not None and ms["ess"] >= 0.01)
        rows.append({**base, "model": label, "method": "smc", **{k: mc.get(k) for k in COLUMNS}})
        for ref_method, budget in (("snis", ms["energy_evaluations"]), ("smc", mc["energy_evaluations"])):
            md_args = ["--method", "md", "--md-interval", str(max(1, budget // 2000))]
            mm = _sample(a, run, s, data, wd / f"zero_shot_{s}_md_as_{ref_method}", budget, *md_args)
            row = {**base, "model": f"plain MD (cost of {ref_method.upper()})", "method": "md"}
            rows.append({**row, **{k: mm.get(k) for k in COLUMNS}})
    for s in [] if q else a.in_distribution:  # the same SNIS on systems the flow was trained on
        if s not in train:
            raise SystemExit(f"--in-distribution {s}: not one of the training systems {train}")
        mt = _sample(a, run, s, data, wd / f"train_sys_{s}_snis", n_snis)
        row = {"task": f"training system {s}", "model": label.replace("zero-shot", "seen in training")}
        rows.append({**row, "method": "snis", **{k: mt.get(k) for k in COLUMNS}})
    return rows


def _keep_outputs(wd: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy each sampling run's metrics.json and plots, and the transfer training's metrics.json (its fit
    summary: steps, epochs, wall time, last losses), to dest/<run>/; returns (plots, metrics files), paths
    relative to the record's folder (the metrics files become the record's ``config.sources``)."""
    import shutil

    plots, sources = [], []
    runs = sorted(wd.glob("ad_snis")) + sorted(wd.glob("ad_*_snis")) + sorted(wd.glob("zero_shot_*"))
    runs += sorted(wd.glob("train_sys_*_snis"))
    for run in runs + sorted(wd.glob("transfer_run")):
        if not (run / "metrics.json").is_file():
            continue
        (dest / run.name).mkdir(parents=True, exist_ok=True)
        for f in [run / "metrics.json", *sorted(run.glob("*.png"))]:
            if f.suffix == ".json":  # no path of this machine in a committed file
                text = f.read_text().replace(str(wd.resolve()) + "/", "").replace(str(REPO) + "/", "")
                (dest / run.name / f.name).write_text(text)
            else:
                shutil.copy2(f, dest / run.name / f.name)
            (plots if f.suffix == ".png" else sources).append(f"{dest.name}/{run.name}/{f.name}")
    return plots, sources


def _repo_relative(path: str) -> str:
    """`path` relative to the repository when it lies inside it (no machine path in a record)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--suite", default="all", choices=["all", "ad", "transfer"])
    p.add_argument("--workdir", default=None, help="run folders (default: a temporary folder under /tmp)")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "prose"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--platform",
        default="Reference",
        choices=["CPU", "Reference", "CUDA", "OpenCL", "auto"],
        help="OpenMM platform for MD and target energies (Reference: fastest for one small peptide on a CPU)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--size", default="base", help="flow size for the full runs (tiny/small/base/medium/paper)"
    )
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--ad-ns", type=int, default=5, help="ns of training MD")
    p.add_argument(
        "--ad-interval-steps", type=int, default=100, help="MD steps (1 fs) between training frames"
    )
    p.add_argument(
        "--ad-models",
        type=lambda v: v.split(","),
        default=["tarflow", "icflow"],
        help="flows on alanine dipeptide, comma-separated: tarflow, icflow",
    )
    p.add_argument("--ic-epochs", type=int, default=5, help="epochs of the IC flow (it overfits later)")
    p.add_argument("--n-proposals", type=int, default=10_000)
    p.add_argument("--max-train-s", type=float, default=None, help="wall-time cap of each flow training (s)")
    p.add_argument("--ad-ref-ns", type=int, default=5, help="ns of the held-out reference MD")
    p.add_argument("--transfer-ns", type=int, default=1)
    p.add_argument(
        "--transfer-model",
        default="ictransfer",
        choices=["ictransfer", "tarflow"],
        help="the transferable flow: per-atom internal coordinates (default) or the Cartesian Prose TarFlow",
    )
    p.add_argument(
        "--transfer-force-field",
        default="amber99sbildn-obc",
        choices=["amber99sbildn-obc", "amber14-obc1"],
        help="dipeptide MD force field (amber14-obc1 is ManyPeptidesMD's; ~14x slower on one core)",
    )
    p.add_argument(
        "--transfer-timestep-fs",
        type=float,
        default=2.0,
        help="dipeptide MD step; frames stay 1 ps apart and the warm-up 50 ps",
    )
    p.add_argument(
        "--transfer-hydrogen-mass",
        type=float,
        default=3.0,
        help="amu, hydrogen mass repartitioning for the dipeptide MD (0 = natural masses, for 1 fs)",
    )
    p.add_argument("--transfer-lr", type=float, default=1e-3)
    p.add_argument(
        "--transfer-init-from",
        default=None,
        help="start the transfer flow from a finished run's weights (`sci-fm train prose --init-from`): "
        "train longer with a fresh schedule",
    )
    p.add_argument("--transfer-batch", type=int, default=128)
    p.add_argument(
        "--transfer-kl-weight",
        type=float,
        default=0.0,
        help="weight of the reverse-KL (energy) term in the transfer flow's training (`sci-fm train prose "
        "--kl-weight`); 0: likelihood only",
    )
    p.add_argument("--transfer-kl-systems", type=int, default=8, help="training systems per KL step")
    p.add_argument("--transfer-kl-samples", type=int, default=16, help="flow samples per system per KL step")
    p.add_argument("--ict-hidden", type=int, default=64, help="ictransfer width")
    p.add_argument("--ict-layers", type=int, default=8, help="ictransfer couplings")
    p.add_argument(
        "--ict-stiff-kt",
        type=float,
        default=10.0,
        help="ictransfer: barrier (kT) above which a proper torsion is unimodal; 0: all circular (stop 18)",
    )
    p.add_argument("--smc-particles", type=int, default=400)
    p.add_argument("--smc-steps", type=int, default=50)
    p.add_argument("--train-threads", type=int, default=1, help="torch threads of each flow training")
    p.add_argument("--n-train", type=int, default=30)
    p.add_argument("--n-test", type=int, default=5)
    p.add_argument(
        "--transfer-neighbours",
        action="store_true",
        help="also train on every dipeptide that shares the residue at one position with an unseen one "
        "(I-X and X-Y for IY; the unseen ones stay unseen)",
    )
    p.add_argument(
        "--md-starts",
        type=int,
        default=1,
        help="independent MD runs (`sci-fm data peptides --starts`) for the training systems that contain "
        "a residue of --md-starts-residues; the unseen systems' reference MD is always one run",
    )
    p.add_argument(
        "--md-starts-residues",
        default="",
        help="one-letter residues whose chi1 the 1 ns runs do not equilibrate, e.g. IVN (median <= 4 chi1 "
        "changes per ns in the stop-22 data)",
    )
    p.add_argument(
        "--in-distribution",
        nargs="*",
        default=[],
        help="training systems that also get the zero-shot SNIS (an in-distribution reference for the ESS)",
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import tempfile

    import torch

    from scifm.core.provenance import utc_timestamp, write_record

    torch.set_num_threads(1)
    wd = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="prose-bench-"))
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    if a.suite in ("all", "ad"):
        rows += bench_ad(a, wd)
    if a.suite in ("all", "transfer"):
        rows += bench_transfer(a, wd)
    wall = time.perf_counter() - t0
    name = ("quick" if a.quick else "full") + f"-{a.suite}"
    stamp = utc_timestamp().replace(":", "")
    plots, sources = ([], []) if a.quick else _keep_outputs(wd, Path(a.results) / f"{name}-{stamp}")
    path = write_record(
        Path(a.results) / f"{name}-{stamp}.json",
        suite="prose",
        name=name,
        title="Prose: alanine dipeptide SNIS and zero-shot dipeptides",
        rows=rows,
        columns=COLUMNS,
        plots=plots,
        config={**vars(a), "results": _repo_relative(a.results), "sources": sources},
        seed=a.seed,
        wall_time_s=wall,
        command=" ".join(sys.argv),
    )
    print(json.dumps(rows, indent=1))
    print(f"record: {path} ({wall:.0f} s, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, workdir {wd})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
