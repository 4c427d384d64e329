"""``sci-fm relax``: relax PubChemQCR molecules with an MLIP and compare with the reference relaxation.

Protocol (ours; the paper reports no relaxation metric, anchor §3): for each molecule start from the first
kept geometry of the chosen stage (for ``1st``, the geometry handed over by the HF stage, as in Force2Geo),
relax with the exported model through the ASE calculator (BFGS or FIRE, ``--fmax 0.05`` eV/Å,
``--max-steps 500``), then report

* converged (max force below fmax within the step budget), steps, wall seconds;
* final energy error: E_MLIP(x_MLIP) - E_ref(x_ref,relaxed), meV/atom (the reference relaxed energy is the
  last valid step of the stage; same energy kind, total or referenced, the model was trained on);
* heavy-atom RMSD (Å) between the MLIP-relaxed and the reference relaxed geometry after Kabsch
  superposition (all atoms for molecules with fewer than 3 heavy atoms); fractions under 0.1 and 0.3 Å;
* optionally (``--reference-method``) E_m(x_MLIP) - E_m(x_ref,relaxed) with the reference method m
  (GFN1/GFN2-xTB for our generated sets, B3LYP/6-31G* via PySCF for real data; slow), meV/atom: how far
  above the reference minimum the MLIP geometry sits on the reference surface.

Relaxations run in ``--workers`` processes, each loading the model once, with one torch thread each.
Outputs in ``--out``: ``metrics.json`` (aggregate), ``relaxations.json`` (per molecule), ``relaxed.extxyz``
(final geometries), ``relax.png`` (RMSD and energy-error histograms).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from scifm.core.errors import ConfigError, DataError

OPTIMIZERS = ("bfgs", "fire")
REFERENCE_METHODS = ("none", "gfn2-xtb", "gfn1-xtb", "b3lyp")
_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """A run directory (holding ``model/``) or an exported model directory -> the exported directory."""
    path = Path(model)
    if (path / "model" / "model.json").is_file():
        return path / "model"
    if (path / "model.json").is_file():
        return path
    if path.is_file() and path.name == "model.json":
        return path.parent
    raise DataError(path, "no exported model here (expected model.json, or a run directory with model/)")


def trained_energy_kind(model_dir: Path) -> str:
    """'referenced' when the model was trained on a ``pubchemqcr:...energy=referenced`` spec, else 'total'."""
    try:
        meta = json.loads((model_dir / "model.json").read_text()).get("meta", {}) or {}
    except (OSError, ValueError):
        return "total"
    return "referenced" if "energy=referenced" in str(meta.get("train_file", "")) else "total"


def build_tasks(
    data: str,
    stage: str = "1st",
    subset: bool = False,
    split: str = "all",
    split_file: str | None = None,
    seed: int = 42,
    max_molecules: int | None = None,
    energy: str = "total",
) -> list[dict]:
    """One task per molecule: start geometry, reference relaxed geometry and energy (eV)."""
    from scifm.mlip.pubchemqcr.reader import PubChemQCR, parse_spec
    from scifm.mlip.pubchemqcr.splits import paper_split, read_split_file

    path, opts = parse_spec(data)
    if data.startswith("pubchemqcr:") and "?" in data:  # options in the spec win over the flags
        stage, energy, split = opts["stage"], opts["energy"], opts["split"]
        subset = opts["subset"] not in ("0", "false", "False", "")
        split_file = opts["split_file"] or split_file
    mols = PubChemQCR(path, stage=stage, subset=subset)
    if split != "all":
        parts = (
            read_split_file(split_file) if split_file else paper_split(mols.cids, subset=subset, seed=seed)
        )
        mols = PubChemQCR(path, stage=stage, subset=subset, cids=parts[split])
    tasks = []
    for traj in mols.trajectories():
        shift = 0.0
        if energy == "referenced":
            if traj.atom_ref_energy is None:
                continue  # counted in the reader's report as molecule_unknown_reference
            shift = traj.atom_ref_energy
        tasks.append(
            {
                "cid": int(traj.cid),
                "numbers": traj.numbers,
                "start": traj.start.positions,
                "ref_positions": traj.relaxed.positions,
                "ref_energy": traj.relaxed.energy - shift,
                "charge": traj.total_charge,
                "ref_steps": len(traj.steps),
            }
        )
        if max_molecules is not None and len(tasks) >= max_molecules:
            break
    if not tasks:
        raise DataError(path, f"no molecule with valid steps in stage {stage!r}\n" + mols.report.summary())
    return tasks


# ----------------------------------------------------------------------------------------------------------
# worker side

_WORKER: dict = {}


def _reference_calculator(method: str, charge: float):
    if method in ("gfn2-xtb", "gfn1-xtb"):
        from tblite.ase import TBLite

        return TBLite(method=method.upper().replace("XTB", "xTB"), charge=int(round(charge)), verbosity=0)
    from scifm.mlip.pubchemqcr.generate import PySCFCalculator

    return PySCFCalculator(charge=int(round(charge)))


def init_worker(
    model_dir: str, dtype: str, optimizer: str, fmax: float, max_steps: int, reference_method: str
) -> None:
    """Load the model once per process (one torch thread)."""
    import torch

    from scifm.mlip.calculator import SciFMCalculator

    os.environ.update(_THREAD_ENV)
    torch.set_num_threads(1)
    _WORKER.update(
        calc=SciFMCalculator(model_dir, dtype=dtype),
        optimizer=optimizer,
        fmax=fmax,
        max_steps=max_steps,
        reference_method=reference_method,
    )


def relax_one(task: dict) -> dict:
    """Relax one molecule with the worker's model; never raises (a crash becomes ``error``)."""
    from ase import Atoms
    from ase.optimize import BFGS, FIRE

    from scifm.mlip.pubchemqcr.metrics import heavy_atom_rmsd, same_bond_graph

    n = len(task["numbers"])
    out = {"cid": task["cid"], "n_atoms": n, "converged": False, "steps": 0, "seconds": 0.0}
    atoms = Atoms(numbers=task["numbers"], positions=task["start"])
    atoms.info["charge"] = task["charge"]
    atoms.calc = _WORKER["calc"]
    t0 = time.perf_counter()
    try:
        opt = (BFGS if _WORKER["optimizer"] == "bfgs" else FIRE)(atoms, logfile=None)
        converged = bool(opt.run(fmax=_WORKER["fmax"], steps=_WORKER["max_steps"]))
        energy = float(atoms.get_potential_energy())
        if not (np.isfinite(energy) and np.isfinite(atoms.positions).all()):
            raise FloatingPointError("non-finite energy or positions")
        out.update(
            converged=converged,
            steps=int(opt.nsteps),
            seconds=time.perf_counter() - t0,
            energy=energy,
            ref_energy=task["ref_energy"],
            energy_error_meV_per_atom=1000.0 * (energy - task["ref_energy"]) / n,
        )
        rmsd, atoms_used = heavy_atom_rmsd(task["numbers"], atoms.positions, task["ref_positions"])
        out.update(
            rmsd_A=rmsd,
            rmsd_atoms=atoms_used,
            bonds_kept=same_bond_graph(task["numbers"], atoms.positions, task["ref_positions"]),
            positions=atoms.positions.tolist(),
        )
    except Exception as exc:  # noqa: BLE001 - a diverging model must not stop the benchmark
        out.update(
            seconds=time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {exc}",
            energy_error_meV_per_atom=None,
            rmsd_A=None,
        )
        return out
    method = _WORKER["reference_method"]
    if method != "none":
        try:
            ref = _reference_calculator(method, task["charge"])
            a = Atoms(numbers=task["numbers"], positions=atoms.positions)
            a.calc = ref
            e_mlip_geom = a.get_potential_energy()
            b = Atoms(numbers=task["numbers"], positions=task["ref_positions"])
            b.calc = _reference_calculator(method, task["charge"])
            out["ref_energy_gap_meV_per_atom"] = 1000.0 * (e_mlip_geom - b.get_potential_energy()) / n
        except Exception as exc:  # noqa: BLE001
            out["ref_energy_gap_error"] = f"{type(exc).__name__}: {exc}"
    return out


# ----------------------------------------------------------------------------------------------------------
# driver


def relax_all(
    tasks: list[dict],
    model_dir: Path,
    dtype: str = "float32",
    optimizer: str = "bfgs",
    fmax: float = 0.05,
    max_steps: int = 500,
    workers: int = 1,
    reference_method: str = "none",
    progress: bool = True,
) -> list[dict]:
    """Relax every task, in ``workers`` processes; results in task order."""
    init_args = (str(model_dir), dtype, optimizer, fmax, max_steps, reference_method)
    if workers <= 1:
        init_worker(*init_args)
        results = map(relax_one, tasks)
        pool = None
    else:
        import multiprocessing as mp

        saved = {k: os.environ.get(k) for k in _THREAD_ENV}
        os.environ.update(_THREAD_ENV)
        pool = mp.get_context("spawn").Pool(workers, initializer=init_worker, initargs=init_args)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        results = pool.imap_unordered(relax_one, tasks)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(tasks), desc="relaxing", unit="mol")
    try:
        out = list(results)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    order = {t["cid"]: k for k, t in enumerate(tasks)}
    return sorted(out, key=lambda r: order[r["cid"]])


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _write_outputs(out: Path, tasks: list[dict], results: list[dict], metrics: dict) -> None:
    from ase import Atoms
    from ase.io import write

    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "relaxations.json", [{k: v for k, v in r.items() if k != "positions"} for r in results])
    frames = []
    by_cid = {t["cid"]: t for t in tasks}
    for r in results:
        if "positions" in r:
            a = Atoms(numbers=by_cid[r["cid"]]["numbers"], positions=np.asarray(r["positions"]))
            a.info.update(cid=r["cid"], converged=r["converged"], steps=r["steps"], mlip_energy=r["energy"])
            frames.append(a)
    if frames:
        tmp = out / f".relaxed.{os.getpid()}.extxyz"
        write(tmp, frames, format="extxyz")
        os.replace(tmp, out / "relaxed.extxyz")
    _plot(out / "relax.png", results)
    _write_json(out / "metrics.json", metrics)


def _plot(path: Path, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rmsd = [r["rmsd_A"] for r in results if r.get("rmsd_A") is not None]
    de = [r["energy_error_meV_per_atom"] for r in results if r.get("energy_error_meV_per_atom") is not None]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].hist(rmsd, bins=30, color="tab:blue")
    for t in (0.1, 0.3):
        ax[0].axvline(t, color="k", ls="--", lw=0.8)
    ax[0].set_xlabel("heavy-atom RMSD to reference minimum (Å)")
    ax[0].set_ylabel("molecules")
    ax[1].hist(de, bins=30, color="tab:orange")
    ax[1].set_xlabel("E_MLIP(min) - E_ref(min) (meV/atom)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def configure(p: argparse.ArgumentParser) -> None:
    from scifm.mlip.pubchemqcr.reader import STAGES

    p.add_argument("--model", required=True, help="run directory or exported model directory")
    p.add_argument("--data", required=True, help="PubChemQCR shard(s) folder or pubchemqcr:PATH?options spec")
    p.add_argument("--out", default="runs/relax", help="output directory")
    p.add_argument(
        "--stage", choices=STAGES, default="1st", help="reference stage: start = its first geometry"
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="bfgs")
    p.add_argument("--fmax", type=float, default=0.05, help="convergence threshold on the max force (eV/Å)")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--workers", type=int, default=1, help="parallel processes, each loads the model once")
    p.add_argument("--subset", action="store_true", help="PubChemQCR-S (Data06.lmdb) and its 60/20/20 split")
    p.add_argument("--split", choices=["all", "train", "valid", "test"], default="all")
    p.add_argument(
        "--split-file", default=None, help="JSON {train,valid,test: [CID...]} instead of the seed split"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the paper split")
    p.add_argument("--max-molecules", type=int, default=None)
    p.add_argument(
        "--energy",
        choices=["auto", "total", "referenced"],
        default="auto",
        help="energy kind the model predicts; auto reads it from the model's training spec",
    )
    p.add_argument(
        "--reference-method",
        choices=REFERENCE_METHODS,
        default="none",
        help="also evaluate the reference method at the MLIP-relaxed geometry",
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    if not args.fmax > 0:
        raise ConfigError(f"--fmax {args.fmax}: must be > 0 eV/Å")
    if args.max_steps < 1:
        raise ConfigError(f"--max-steps {args.max_steps}: must be >= 1")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    model_dir = resolve_model_dir(args.model)
    energy = trained_energy_kind(model_dir) if args.energy == "auto" else args.energy
    data = args.data if str(args.data).startswith("pubchemqcr:") else f"pubchemqcr:{args.data}"
    tasks = build_tasks(
        data,
        stage=args.stage,
        subset=args.subset,
        split=args.split,
        split_file=args.split_file,
        seed=args.seed,
        max_molecules=args.max_molecules,
        energy=energy,
    )
    t0 = time.perf_counter()
    results = relax_all(
        tasks,
        model_dir,
        dtype=args.dtype,
        optimizer=args.optimizer,
        fmax=args.fmax,
        max_steps=args.max_steps,
        workers=args.workers,
        reference_method=args.reference_method,
        progress=not args.no_progress,
    )
    from scifm.mlip.pubchemqcr.metrics import relaxation_summary

    metrics = relaxation_summary(results)
    metrics.update(
        model=str(model_dir),
        data=str(args.data),
        stage=args.stage,
        optimizer=args.optimizer,
        fmax=args.fmax,
        max_steps=args.max_steps,
        energy_kind=energy,
        workers=args.workers,
        wall_time_s=time.perf_counter() - t0,
        reference_method=args.reference_method,
        threads_per_worker=1,
    )
    _write_outputs(Path(args.out), tasks, results, metrics)
    keys = (
        "n_molecules",
        "success_rate",
        "converged_rate",
        "bonds_kept_rate",
        "energy_error_meV_per_atom_mae",
        "rmsd_A_median",
        "frac_rmsd_below_0.1A",
        "steps_mean",
        "seconds_per_relaxation",
    )
    print(json.dumps({k: metrics[k] for k in keys}, indent=1))
    print(f"relaxations written to {args.out}")
    return 0
