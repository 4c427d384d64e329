"""Side-by-side accuracy on our rMD17-like data (benchmarks/mlip/rmd17_data.py): sci-fm models and MACE.

Same splits, float32, r_max 5 Å and the same number of epochs for every model, on the same machine in one run.
Our models train through ``sci-fm train mlip`` (one subprocess each); MACE (``mace-torch``, which pins its own
e3nn) is installed into a separate virtual environment that this script creates with ``uv venv`` +
``uv pip install mace-torch torch==<our torch version>``, and trained with ``mace_run_train``
(hidden irreps ``64x0e + 64x1o``, 2 interactions, correlation 3, E0s "average", EMA 0.99, AMSGrad) and
evaluated with ``mace_eval_configs`` on the test frames.

Writes a ``scifm-bench/1`` record (energy and force MAE on the test frames, train wall time, parameters) to
``--results`` via ``scifm.core.provenance.write_record``.

    uv run python benchmarks/mlip/rmd17_compare.py --data benchmarks/mlip/data/rmd17 --epochs 200 \
        --device cuda --workdir runs/rmd17                                                     # full
    uv run python benchmarks/mlip/rmd17_compare.py --data runs/rmd17_quick --quick --no-mace  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Model sizes of the comparison, comparable to MACE's 64 channels and 2 interactions (BAMBOO at its paper
# size; NequIP keeps l_max 2 with 2 interactions: 4 interactions cost 2.6x the CPU time per step);
# --model-configs overrides, a JSON mapping name -> dict
MODEL_CONFIGS = {
    "bamboo": {"n_features": 64, "n_heads": 16, "n_layers": 3, "n_rbf": 32},
    "painn": {"n_features": 64, "n_layers": 3},
    "nequip": {"n_features": 32, "l_max": 2, "n_interactions": 2},
    "schnet": {"n_features": 128, "n_filters": 128, "n_interactions": 3},
}
QUICK_CONFIGS = {
    "bamboo": {"n_features": 16, "n_heads": 4, "n_layers": 2, "n_rbf": 8},
    "painn": {"n_features": 16, "n_layers": 2},
    "nequip": {"n_features": 8, "l_max": 1, "n_interactions": 2},
    "schnet": {"n_features": 16, "n_filters": 16, "n_interactions": 2},
}
MACE_ARGS = [
    "--model=MACE",
    "--hidden_irreps=64x0e + 64x1o",
    "--r_max=5.0",
    "--num_interactions=2",
    "--correlation=3",
    "--E0s=average",
    "--ema",
    "--ema_decay=0.99",
    "--amsgrad",
    "--default_dtype=float32",
    "--energy_key=REF_energy",
    "--forces_key=REF_forces",
]


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    return env


def run(cmd: list[str], cwd: Path | None = None, env=None, log: Path | None = None) -> float:
    """Run a command (stdout/stderr to ``log``), raise on failure; returns its wall time in s."""
    t0 = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = Path(log).read_text()[-3000:] if log else ""
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - t0


def train_ours(
    model: str, data: Path, mol: str, work: Path, args, config: dict, extra=(), name: str | None = None
) -> dict:
    """``sci-fm train mlip`` on one molecule; ``extra``: more CLI arguments (a variant's recipe, e.g.
    ``--lr 5e-3``), appended last so that they override the shared ones; ``name``: its run folder."""
    out = work / mol / (name or model)
    cmd = [
        sys.executable,
        "-m",
        "scifm.cli.main",
        "train",
        "mlip",
        "--model",
        model,
        "--train",
        str(data / f"{mol}_train.extxyz"),
        "--valid",
        str(data / f"{mol}_valid.extxyz"),
        "--test",
        str(data / f"{mol}_test.extxyz"),
        "--max-epochs",
        str(args.epochs),
        "--max-time",
        "0",  # no time cap: every model gets the same number of epochs
        "--batch-size",
        str(args.batch_size),
        "--cutoff",
        "5.0",
        "--dtype",
        "float32",
        "--energy-weight",
        str(args.energy_weight),
        "--forces-weight",
        str(args.forces_weight),
        "--seed",
        str(args.seed),
        "--model-config",
        json.dumps(config),
        "--out",
        str(out),
        "--no-progress",
        "--accelerator",
        "gpu" if args.device == "cuda" else "cpu",
    ]
    cmd += [str(a) for a in extra]
    if out.exists():
        cmd.append("--resume")
    wall = run(cmd, env=thread_env(args.threads), log=work / mol / f"{name or model}.log")
    m = json.loads((out / "metrics.json").read_text())
    return {
        "energy_mae_meV": m["energy_mae_meV"],
        "forces_mae_meV_per_A": m["forces_mae_meV_per_A"],
        "n_parameters": m["n_parameters"],
        "epochs": m["epochs"],
        "train_time_s": wall,
    }


# -- MACE --------------------------------------------------------------------------------------------------


def mace_venv(path: Path) -> Path:
    """Create (once) a venv with mace-torch and our torch version; returns its bin folder."""
    import torch

    bin_dir = path / "bin"
    if (bin_dir / "mace_run_train").exists():
        return bin_dir
    version = torch.__version__.split("+")[0]
    subprocess.run(
        ["uv", "venv", str(path), "--python", f"{sys.version_info.major}.{sys.version_info.minor}"],
        check=True,
    )
    subprocess.run(
        ["uv", "pip", "install", "--python", str(bin_dir / "python"), "mace-torch", f"torch=={version}"],
        check=True,
    )
    return bin_dir


def to_mace_file(src: Path, dst: Path) -> None:
    """Copy frames with the labels under MACE's REF_ keys (its default keys clash with ASE's calculator)."""
    import ase.io

    from scifm.mlip.data.generate import read

    frames = read(src)
    for a in frames:
        a.info["REF_energy"] = float(a.get_potential_energy())
        a.arrays["REF_forces"] = np.array(a.get_forces())
        a.calc = None
    ase.io.write(dst, frames, format="extxyz")


def train_mace(bin_dir: Path, data: Path, mol: str, work: Path, args) -> dict:
    import ase.io

    out = work / mol / "mace"
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        to_mace_file(data / f"{mol}_{part}.extxyz", out / f"{part}.xyz")
    cmd = [
        str(bin_dir / "mace_run_train"),
        "--name=mace",
        "--train_file=train.xyz",
        "--valid_file=valid.xyz",
        "--test_file=test.xyz",
        f"--batch_size={args.batch_size}",
        f"--max_num_epochs={args.epochs}",
        f"--seed={args.seed}",
        f"--device={args.device}",
        f"--energy_weight={args.energy_weight}",
        f"--forces_weight={args.forces_weight}",
        *MACE_ARGS,
    ]
    wall = run(cmd, cwd=out, env=thread_env(args.threads), log=out / "train.log")
    run(
        [
            str(bin_dir / "mace_eval_configs"),
            "--configs=test.xyz",
            "--model=mace.model",
            "--output=pred.xyz",
            f"--device={args.device}",
            "--default_dtype=float32",
        ],
        cwd=out,
        env=thread_env(args.threads),
        log=out / "eval.log",
    )
    ref, pred = ase.io.read(out / "test.xyz", ":"), ase.io.read(out / "pred.xyz", ":")
    de = np.array([p.info["MACE_energy"] - r.info["REF_energy"] for r, p in zip(ref, pred, strict=True)])
    df = np.concatenate(
        [p.arrays["MACE_forces"] - r.arrays["REF_forces"] for r, p in zip(ref, pred, strict=True)]
    )
    n_params = None
    try:
        probe = (
            "import torch,sys; m=torch.load(sys.argv[1],map_location='cpu',weights_only=False); "
            "print(sum(p.numel() for p in m.parameters()))"
        )
        # MACE's own model file (a pickle it wrote itself in this run) — read by MACE's interpreter only
        n_params = int(
            subprocess.run(
                [str(bin_dir / "python"), "-c", probe, str(out / "mace.model")],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]  # MACE may print notices before the number
        )
    except (subprocess.SubprocessError, ValueError):
        pass
    return {
        "energy_mae_meV": 1000 * float(np.abs(de).mean()),
        "forces_mae_meV_per_A": 1000 * float(np.abs(df).mean()),
        "n_parameters": n_params,
        "epochs": args.epochs,
        "train_time_s": wall,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="benchmarks/mlip/data/rmd17", help="folder written by rmd17_data.py")
    p.add_argument("--molecules", default=None, help="comma-separated; default: all in the manifest")
    p.add_argument("--models", default="bamboo,painn,nequip,schnet")
    p.add_argument("--model-configs", default=None, help="JSON mapping model -> config (overrides the sizes)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--energy-weight", type=float, default=1.0, help="loss weight of energies (all models)")
    p.add_argument(
        "--forces-weight",
        type=float,
        default=100.0,
        help="loss weight of forces (all models; MACE's default)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1, help="OMP/torch threads per training")
    p.add_argument("--jobs", type=int, default=1, help="molecules trained at the same time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/rmd17_compare")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "mlip"))
    p.add_argument("--mace-venv", default=".venv-mace", help="where to create MACE's virtual environment")
    p.add_argument("--no-mace", action="store_true", help="skip MACE (e.g. no registry access)")
    p.add_argument(
        "--variants",
        default=None,
        help='JSON mapping variant name -> {"model": M, "args": [extra train-mlip arguments], '
        '"config": {model config, default the model\'s}}: recipe probes, trained after --models, with '
        'rows tagged by "variant"; the record is named rmd17-probe (tables.py keeps reading rmd17-compare)',
    )
    p.add_argument("--quick", action="store_true", help="smoke: tiny models, 1 epoch")
    args = p.parse_args(argv)
    variants = json.loads(args.variants) if args.variants else {}
    for vname, v in variants.items():
        if not isinstance(v, dict) or "model" not in v or set(v) - {"model", "args", "config"}:
            p.error(f"--variants: {vname!r} needs a dict with 'model' and optional 'args', 'config'")
        if vname in {"mace", *args.models.split(",")}:
            p.error(f"--variants: name {vname!r} clashes with a model's run folder")

    data, work = Path(args.data), Path(args.workdir)
    manifest = json.loads((data / "manifest.json").read_text())
    molecules = args.molecules.split(",") if args.molecules else list(manifest["molecules"])
    configs = dict(QUICK_CONFIGS if args.quick else MODEL_CONFIGS)
    if args.model_configs:
        configs.update(json.loads(args.model_configs))
    if args.quick:
        args.epochs = 1
    t0 = time.perf_counter()
    bin_dir = None if args.no_mace else mace_venv(Path(args.mace_venv).resolve())

    def cached(mol: str, model: str, train) -> dict:
        """A finished training leaves ``<workdir>/<molecule>/<model>.result.json``; a rerun reuses it (with
        the same epochs), so an interrupted comparison resumes without training anything twice."""
        path = work / mol / f"{model}.result.json"
        if path.is_file():
            row = json.loads(path.read_text())
            if row.get("epochs") == args.epochs:
                return row
        row = {"molecule": mol, "model": model, **train()}  # a variant's train() names its own model
        path.write_text(json.dumps(row))
        return row

    def one_molecule(mol: str) -> list[dict]:
        """Every model on one molecule, one after the other (each training is its own subprocess)."""
        (work / mol).mkdir(parents=True, exist_ok=True)
        out = []
        for model in [m for m in args.models.split(",") if m]:
            cfg = configs.get(model, {})
            out.append(cached(mol, model, lambda m=model, c=cfg: train_ours(m, data, mol, work, args, c)))
            print(json.dumps(out[-1]), flush=True)
        for vname, v in variants.items():
            cfg = v.get("config", configs.get(v["model"], {}))

            def train(v=v, cfg=cfg, vname=vname):
                extra = [str(a) for a in v.get("args", ())]
                row = train_ours(v["model"], data, mol, work, args, cfg, extra, vname)
                return {"model": v["model"], "variant": vname, "variant_args": " ".join(extra), **row}

            out.append(cached(mol, vname, train))
            print(json.dumps(out[-1]), flush=True)
        if bin_dir is not None:
            out.append(cached(mol, "mace", lambda: train_mace(bin_dir, data, mol, work, args)))
            print(json.dumps(out[-1]), flush=True)
        return out

    # --jobs molecules at a time (threads only wait on the training subprocesses)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = [row for part in pool.map(one_molecule, molecules) for row in part]

    from scifm.core.provenance import utc_timestamp, write_record

    name = "rmd17-probe" if variants else "rmd17-compare"
    name += "-quick" if args.quick else ""
    stamp = utc_timestamp().replace(":", "").replace("-", "")
    path = write_record(
        Path(args.results) / f"{name}-{stamp}.json",
        suite="mlip",
        name=name,
        title="rMD17-like GFN2-xTB MD (500 K), 950 train frames per molecule: sci-fm models vs MACE",
        rows=rows,
        columns={
            "forces_mae_meV_per_A": {"better": "lower", "unit": "meV/Å", "label": "F MAE"},
            "energy_mae_meV": {"better": "lower", "unit": "meV", "label": "E MAE"},
            "train_time_s": {"better": None, "unit": "s", "label": "train time"},
            "n_parameters": {"better": None, "label": "params"},
            "epochs": {"better": None, "label": "epochs"},
        },
        config={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "loss_weights": {"energy": args.energy_weight, "forces": args.forces_weight},
            "device": args.device,
            "threads": args.threads,
            "jobs": args.jobs,
            "model_configs": configs,
            "variants": variants,
            "mace_args": MACE_ARGS,
            "data": manifest.get("settings"),
            "counts": manifest.get("counts"),
        },
        seed=args.seed,
        wall_time_s=time.perf_counter() - t0,
        command=" ".join(sys.argv),
    )
    print(f"record written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
