"""rMD17-like benchmark data, ours: GFN2-xTB Langevin MD of five small molecules.

Per molecule: RDKit geometry -> xTB relaxation -> Langevin MD at 500 K with 0.5 fs steps (friction 0.01/fs),
a frame every 10 steps after a 1000-step warm-up. The frames are split in time: the first half gives the
training (95 %) and validation (every 20th frame, 5 %) sets, the second half is the test set, so every test
frame lies later in time than every training frame. With the default ``--frames 2000``: 950 train / 50 valid /
1000 test frames per molecule. Labels: energy (eV), forces (eV/Å), Mulliken charges (e), dipole (e·Å).

One process per molecule (OMP_NUM_THREADS=1 each; see scifm.mlip.data.generate). Outputs under --out:
``<molecule>_{train,valid,test}.extxyz`` and ``manifest.json`` (settings, counts, wall time).

    uv run python benchmarks/mlip/rmd17_data.py --out benchmarks/mlip/data/rmd17 --workers 5   # full
    uv run python benchmarks/mlip/rmd17_data.py --quick --out runs/rmd17_quick                 # smoke

Cost (GFN2-xTB ~16 ms per 21-atom call): about 21 000 MD steps per molecule at --frames 2000, i.e. roughly
6-10 CPU-minutes per molecule; 5 molecules on 5 cores take ~10 minutes of wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

MOLECULES = {
    "toluene": "Cc1ccccc1",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "O=C(O)c1ccccc1O",
    "azobenzene": "c1ccc(cc1)/N=N/c1ccccc1",
    "benzene": "c1ccccc1",
}


def split_in_time(frames: list, valid_every: int = 20) -> dict[str, list]:
    """frames in time order -> {"train", "valid", "test"}: the first half is train + valid (every
    ``valid_every``-th frame), the second half test."""
    half = len(frames) // 2
    early, late = frames[:half], frames[half:]
    valid = [f for k, f in enumerate(early) if k % valid_every == valid_every - 1]
    train = [f for k, f in enumerate(early) if k % valid_every != valid_every - 1]
    return {"train": train, "valid": valid, "test": late}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/mlip/data/rmd17", help="output folder")
    p.add_argument(
        "--frames", type=int, default=2000, help="MD frames per molecule (half train+valid, half test)"
    )
    p.add_argument("--interval", type=int, default=10, help="MD steps between frames")
    p.add_argument("--warmup", type=int, default=1000, help="MD steps before the first frame")
    p.add_argument("--temperature", type=float, default=500.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--workers", type=int, default=5, help="processes (one molecule each)")
    p.add_argument(
        "--molecules", default=",".join(MOLECULES), help="comma-separated subset of " + ",".join(MOLECULES)
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 molecules, 40 frames, short warm-up")
    args = p.parse_args(argv)

    from scifm.mlip.data.generate import generate, write

    names = [m for m in args.molecules.split(",") if m]
    unknown = sorted(set(names) - set(MOLECULES))
    if unknown:
        p.error(f"unknown molecule(s) {unknown}; choose from {sorted(MOLECULES)}")
    if args.quick:
        names, args.frames, args.warmup, args.workers = names[:2], 40, 20, min(args.workers, 2)
    t0 = time.perf_counter()
    frames = generate(
        [(n, MOLECULES[n]) for n in names],
        n_perturbed=0,
        n_md=args.frames,
        md_temperature=args.temperature,
        md_timestep=args.timestep,
        md_interval=args.interval,
        md_warmup=args.warmup,
        seed=args.seed,
        workers=args.workers,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in names:
        mine = sorted((a for a in frames if a.info["molecule"] == name), key=lambda a: a.info["step"])
        parts = split_in_time(mine)
        counts[name] = {k: len(v) for k, v in parts.items()}
        for part, fr in parts.items():
            write(out / f"{name}_{part}.extxyz", fr)
    manifest = {
        "molecules": {n: MOLECULES[n] for n in names},
        "counts": counts,
        "settings": {
            k: getattr(args, k) for k in ("frames", "interval", "warmup", "temperature", "timestep", "seed")
        },
        "level_of_theory": "GFN2-xTB (tblite)",
        "units": "energy eV, forces eV/A, charges e, dipole e*A",
        "wall_time_s": time.perf_counter() - t0,
        "workers": args.workers,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
