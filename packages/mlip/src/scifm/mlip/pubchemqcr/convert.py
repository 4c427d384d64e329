"""Convert PubChemQCR LMDB shards to the atomistic HDF5 spec (chunked, gzip-compressed) for fast training.

``sci-fm convert pubchemqcr --data PATH --out train.h5 --stage 1st`` reads every kept snapshot of the
chosen stage (quirks skipped and counted, see ``reader``), writes frames with ``traj_id`` = CID and
``step`` = index in the raw stage, and saves next to the output:

* ``<out>.skipped.json``: the skip summary (also printed);
* ``<out>.splits.json``: the paper's seed-42 split of the CIDs read (60/20/20 with ``--subset``, else
  80/10/10), or the split file given with ``--split-file`` copied through.

Large sets are written as several files of at most ``--frames-per-file`` frames (``out_000.h5``, ...),
each validated and written atomically, so memory stays bounded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scifm.core.errors import ConfigError

from .reader import ENERGY_KINDS, STAGES, PubChemQCR, frame_atoms, parse_spec
from .splits import paper_split, read_split_file, write_split_file


def convert(
    data: str,
    out: str | Path,
    stage: str = "1st",
    energy: str = "total",
    subset: bool = False,
    split: str = "all",
    split_file: str | None = None,
    max_molecules: int | None = None,
    frames_per_file: int = 1_000_000,
    seed: int = 42,
    progress: bool = True,
) -> dict:
    """Write the HDF5 file(s); returns a summary dict (files, frames, molecules, seconds, skipped)."""
    from scifm.core.data.atomistic import write_frames

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"--out {out}: the atomistic spec file must end in .h5")
    if frames_per_file < 1:
        raise ConfigError("--frames-per-file must be >= 1")
    if split not in ("all", "train", "valid", "test"):
        raise ConfigError(f"--split {split}: choose all, train, valid or test")
    path = Path(data[len("pubchemqcr:") :] if data.startswith("pubchemqcr:") else data)
    if "?" in str(data):
        path, opts = parse_spec(data)
        stage, energy = opts["stage"], opts["energy"]
    every = PubChemQCR(path, stage=stage, subset=subset, max_molecules=max_molecules)
    parts = read_split_file(split_file) if split_file else paper_split(every.cids, subset=subset, seed=seed)
    mols = every if split == "all" else PubChemQCR(path, stage=stage, subset=subset, cids=parts[split])
    attrs = {
        "level_of_theory": f"PubChemQCR {stage} (as stored in {path.name})",
        "source": str(path),
        "pubchemqcr_stage": stage,
        "energy_kind": energy,
    }
    files, buffer, n_frames = [], [], 0

    def target(k: int) -> Path:
        return out if k == 0 else out.with_name(f"{out.stem}_{k:03d}{out.suffix}")

    def flush():
        nonlocal buffer
        if buffer:
            files.append(write_frames(target(len(files)), buffer, attrs=attrs, source=path))
            buffer = []

    for traj in mols.trajectories(progress=progress):
        for st in traj.steps:
            buffer.append(frame_atoms(traj, st, energy))
            n_frames += 1
        if len(buffer) >= frames_per_file:
            flush()
    flush()
    if len(files) > 1:  # name every file by its index, the first included, so globbing finds all
        renamed = []
        for k, f in enumerate(files):
            dest = out.with_name(f"{out.stem}_{k:03d}{out.suffix}")
            f.replace(dest)
            renamed.append(dest)
        files = renamed
    report = mols.report
    report.save(out.with_name(out.stem + ".skipped.json"))
    write_split_file(out.with_name(out.stem + ".splits.json"), parts)
    return {
        "files": [str(f) for f in files],
        "n_frames": n_frames,
        "n_molecules": report.molecules_kept,
        "seconds": time.perf_counter() - t0,
        "skipped": report.as_dict()["counts"],
        "summary": report.summary(),
    }


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="PubChemQCR shard, folder of DataNN.lmdb shards, or pubchemqcr: spec"
    )
    p.add_argument("--out", required=True, help="output atomistic .h5 file")
    p.add_argument("--stage", choices=STAGES, default="1st", help="which optimisation stage to read")
    p.add_argument(
        "--energy",
        choices=ENERGY_KINDS,
        default="total",
        help="total electronic energy, or referenced to isolated atoms (both eV; forces unchanged)",
    )
    p.add_argument("--subset", action="store_true", help="PubChemQCR-S: only Data06.lmdb; 60/20/20 split")
    p.add_argument(
        "--split",
        choices=["all", "train", "valid", "test"],
        default="all",
        help="write only this split's molecules",
    )
    p.add_argument(
        "--split-file", default=None, help="JSON {train,valid,test: [CID, ...]} instead of the seed split"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the paper split")
    p.add_argument("--max-molecules", type=int, default=None)
    p.add_argument("--frames-per-file", type=int, default=1_000_000)
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    s = convert(
        args.data,
        args.out,
        stage=args.stage,
        energy=args.energy,
        subset=args.subset,
        split=args.split,
        split_file=args.split_file,
        max_molecules=args.max_molecules,
        frames_per_file=args.frames_per_file,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(s["summary"])
    print(
        f"wrote {s['n_frames']} frames of {s['n_molecules']} molecules to {', '.join(s['files'])} "
        f"in {s['seconds']:.1f} s"
    )
    return 0
