"""Reference MD with OpenMM (anchor §2.1): Langevin-middle, minimise, warm up, then one frame per interval.

ManyPeptidesMD settings (zwitterionic peptides): amber14-all + implicit/obc1, CutoffNonPeriodic 2 nm, no
constraints, 310 K, friction 0.3 /ps, 1 fs, 50,000 warm-up steps, a frame every 1,000 steps (1 ps).
Capped peptides (Ace-X-Nme): amber99sbildn + amber99_obc, NoCutoff, no constraints, 300 K, friction 1 /ps
(the value in the anchor's alanine-dipeptide config), 1 fs, same warm-up and frame interval.

Hydrogen mass repartitioning (`hydrogen_mass_amu`, e.g. 3 with a 2 fs step) is optional: it leaves the
configurational ensemble unchanged and halves the cost (benchmarks/prose/hmr_check.py).

`generate(...)` runs many sequences in parallel processes (one OpenMM thread each, or the CUDA platform)
with a progress bar over frames, then writes one `data_specs/peptide_md` file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from scifm.core.errors import ConfigError

__all__ = ["MDSettings", "generate", "run_md", "settings_for"]

_ADDED_SETTINGS = ("n_starts",)  # settings newer than some part files (absent there means the default)
_START_SEED_STRIDE = 100_003  # seed offset between the starts of one system (n_starts > 1)


@dataclass
class MDSettings:
    force_field: str
    temperature_K: float
    friction_per_ps: float
    timestep_fs: float = 1.0
    warmup_steps: int = 50_000
    frame_interval_steps: int = 1_000
    hydrogen_mass_amu: float = 0.0  # > 0: hydrogen mass repartitioning (0 = natural masses)
    n_starts: int = 1  # independent runs from differently embedded structures, frames split between them

    @property
    def frame_interval_ps(self) -> float:
        return self.frame_interval_steps * self.timestep_fs / 1000.0


def settings_for(capped: bool, **overrides) -> MDSettings:
    """The anchor's MD settings for a zwitterionic (ManyPeptidesMD) or capped peptide."""
    from scifm.prose.peptides import FORCE_FIELDS, default_force_field

    ff = default_force_field(capped)
    s = MDSettings(ff, FORCE_FIELDS[ff]["temperature_K"], 1.0 if capped else 0.3)
    for k, v in overrides.items():
        if v is not None:
            setattr(s, k, type(getattr(s, k))(v))
    if s.force_field not in FORCE_FIELDS:
        raise ConfigError(f"unknown force field {s.force_field!r} (known: {sorted(FORCE_FIELDS)})")
    if s.timestep_fs <= 0 or s.frame_interval_steps < 1 or s.warmup_steps < 0 or s.temperature_K <= 0:
        raise ConfigError(f"invalid MD settings {s}")
    if s.n_starts < 1:
        raise ConfigError(f"n_starts must be >= 1, got {s.n_starts}")
    if s.hydrogen_mass_amu != 0 and not 1.0 <= s.hydrogen_mass_amu <= 4.0:
        raise ConfigError(f"hydrogen mass must be 0 (off) or in [1, 4] amu, got {s.hydrogen_mass_amu}")
    return s


def run_md(
    name: str, n_frames: int, settings: MDSettings, seed: int = 0, platform: str = "CPU", progress=None
) -> dict:
    """One trajectory: returns {"name", "coordinates" [F, N, 3] nm float32, "pdb", "attrs", "wall_s"}.

    `progress(k)` is called with the number of new frames every few frames.
    """
    import openmm as mm
    import openmm.unit as u

    from scifm.prose.peptides import (
        FORCE_FIELDS,
        build_peptide,
        create_system,
        parse_system_name,
        select_platform,
    )

    t0 = time.perf_counter()
    seq, capped = parse_system_name(name)
    K = int(settings.n_starts)
    if not 1 <= K <= n_frames:
        raise ConfigError(f"{name}: n_starts must be between 1 and the frame count {n_frames}, got {K}")
    counts = [n_frames // K + (j < n_frames % K) for j in range(K)]
    plat, props = select_platform(platform)
    pep = frames = None
    reported = 0
    for j, n_j in enumerate(counts):
        # start 0 is the single-start run exactly; later starts embed (RDKit ETKDG) and integrate with
        # seeds far from any other system's (systems use seed + their position in the list)
        s_j = int(seed) + _START_SEED_STRIDE * j
        pep_j = build_peptide(seq, capped, seed=s_j)
        if pep is None:
            pep = pep_j
            system = create_system(pep.topology, settings.force_field, settings.hydrogen_mass_amu)
            frames = np.empty((n_frames, pep.n_atoms, 3), dtype=np.float32)
        elif [a.name for a in pep_j.topology.atoms()] != [a.name for a in pep.topology.atoms()]:
            raise RuntimeError(f"{name}: start {j} built a different atom order")
        integ = mm.LangevinMiddleIntegrator(
            settings.temperature_K * u.kelvin,
            settings.friction_per_ps / u.picosecond,
            settings.timestep_fs * u.femtosecond,
        )
        integ.setRandomNumberSeed(s_j % 2**31 + 1)
        ctx = mm.Context(system, integ, plat, props)
        ctx.setPositions(pep_j.positions * u.nanometer)
        mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 0)
        ctx.setVelocitiesToTemperature(settings.temperature_K * u.kelvin, s_j % 2**31 + 1)
        done = 0
        while done < settings.warmup_steps:
            k = min(10_000, settings.warmup_steps - done)
            integ.step(k)
            done += k
        first = sum(counts[:j])
        for i in range(first, first + n_j):
            integ.step(settings.frame_interval_steps)
            frames[i] = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
            if progress is not None and (i + 1 - reported >= 10 or i + 1 == n_frames):
                progress(i + 1 - reported)
                reported = i + 1
        if j < K - 1:
            del ctx
    plat_name = ctx.getPlatform().getName()
    del ctx
    if not np.isfinite(frames).all():
        raise RuntimeError(f"{name}: MD produced non-finite coordinates")
    spec = FORCE_FIELDS[settings.force_field]
    attrs = dict(
        asdict(settings),
        sequence=seq,
        capped=capped,
        force_field_files=spec["files"],
        nonbonded=spec["nonbonded"],
        cutoff_nm=spec["cutoff_nm"] if spec["cutoff_nm"] is not None else -1.0,
        constraints="none",
        integrator="LangevinMiddleIntegrator",
        frame_interval_ps=settings.frame_interval_ps,
        seed=int(seed),
        start_frames=counts,  # frames of each start, in order (a trajectory boundary between them)
        platform=plat_name,
        ph=7.0,
    )
    return dict(
        name=pep.name, coordinates=frames, pdb=pep.to_pdb(), attrs=attrs, wall_s=time.perf_counter() - t0
    )


_QUEUE = None


def _init(queue) -> None:
    global _QUEUE
    _QUEUE = queue
    os.environ["OMP_NUM_THREADS"] = "1"


def _job(name, n_frames, settings, seed, platform):
    return run_md(name, n_frames, settings, seed, platform, progress=lambda k: _QUEUE.put(k))


def generate(
    names: list[str],
    out: str,
    n_frames: int,
    seed: int = 0,
    workers: int = 1,
    platform: str = "CPU",
    progress: bool = True,
    parts_dir: str | os.PathLike | None = None,
    starts_only: list[str] | None = None,
    **overrides,
) -> dict:
    """MD for every system in `names` (e.g. "AK", "Ace-A-Nme"), written to `out` (peptide_md HDF5).

    Each system's seed is `seed + its position in names`. With `parts_dir`, every finished system is also
    written there as `<name>.h5` (atomically) the moment it ends, and a system whose part file already
    holds a trajectory made with the same settings, seed and frame count is read back instead of simulated
    again: a long run that is interrupted resumes where it stopped. `n_starts` (in `overrides`) > 1 splits
    each system's frames between that many independent runs from different embedded structures (side-chain
    rotamers that one short run would not leave); with `starts_only`, only the listed systems get them and
    every other one a single run. Returns a summary dict.
    """
    from tqdm.auto import tqdm

    from scifm.prose.data import SystemRecord, record_from_topology, write_peptide_md
    from scifm.prose.peptides import parse_system_name, system_name, topology_from_pdb

    parsed = [parse_system_name(n) for n in names]  # validate everything first
    canon = [system_name(s, c) for s, c in parsed]
    if len(set(canon)) != len(canon):
        raise ConfigError("a sequence is listed twice")
    if n_frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {n_frames}")
    only = None
    if starts_only is not None:
        only = {system_name(*parse_system_name(n)) for n in starts_only}
        missing = sorted(only - set(canon))
        if missing:
            raise ConfigError(f"--starts-only names systems that are not simulated: {missing}")

    def settings(name: str, capped: bool) -> MDSettings:
        s = settings_for(capped, **overrides)
        if only is not None and name not in only:
            s.n_starts = 1
        if s.n_starts > n_frames:
            raise ConfigError(f"--starts {s.n_starts} is more than --frames {n_frames}")
        return s

    jobs = [
        (n, n_frames, settings(n, c), seed + i, platform)
        for i, (n, (_, c)) in enumerate(zip(canon, parsed, strict=True))
    ]
    t0 = time.perf_counter()
    results = {}
    parts = None if parts_dir is None else Path(parts_dir)
    if parts is not None:
        for job in list(jobs):
            r = _read_part(parts / f"{job[0]}.h5", job)
            if r is not None:
                results[job[0]] = r
                jobs.remove(job)

    def finished(r: dict) -> None:
        results[r["name"]] = r
        if parts is not None:
            _write_part(parts / f"{r['name']}.h5", r)

    bar = tqdm(total=n_frames * len(jobs), unit="frame", disable=not progress, desc="peptide MD")
    if workers <= 1:
        for job in jobs:
            finished(run_md(*job, progress=bar.update))
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Manager().Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(queue,)) as pool:
            futs = [pool.submit(_job, *job) for job in jobs]
            pending = set(futs)
            while pending:
                while not queue.empty():
                    bar.update(queue.get())
                done = {f for f in pending if f.done()}
                for f in done:
                    finished(f.result())
                pending -= done
                time.sleep(0.2)
            while not queue.empty():
                bar.update(queue.get())
    bar.close()
    records: list[SystemRecord] = []
    for n in canon:
        r = results[n]
        top, _ = topology_from_pdb(r["pdb"])
        records.append(record_from_topology(n, top, r["coordinates"], r["pdb"], r["attrs"]))
    write_peptide_md(out, records)
    wall = time.perf_counter() - t0
    interval_ps = next(iter(results.values()))["attrs"]["frame_interval_ps"]
    sim_ns = sum(r["coordinates"].shape[0] for r in results.values()) * interval_ps / 1000
    return dict(
        out=str(out),
        systems=canon,
        n_frames=n_frames,
        wall_time_s=wall,
        simulated_ns=sim_ns,
        per_system_wall_s={n: results[n]["wall_s"] for n in canon},
        workers=workers,
        platform=platform,
        resumed=sorted(n for n in canon if results[n].get("resumed")),
    )


def _write_part(path: Path, r: dict) -> None:
    from scifm.prose.data import record_from_topology, write_peptide_md
    from scifm.prose.peptides import topology_from_pdb

    top, _ = topology_from_pdb(r["pdb"])
    attrs = dict(r["attrs"], wall_s=float(r["wall_s"]))
    write_peptide_md(path, [record_from_topology(r["name"], top, r["coordinates"], r["pdb"], attrs)])


def _read_part(path: Path, job: tuple) -> dict | None:
    """The finished trajectory of `job` from its part file, or None when it is missing or was made with
    other settings (then it is simulated again and the part file replaced)."""
    from scifm.core.errors import DataError
    from scifm.prose.data import read_peptide_md

    name, n_frames, settings, seed, _ = job
    if not path.is_file():
        return None
    try:
        rec = {r.name: r for r in read_peptide_md(path)}.get(name)
    except DataError:
        return None
    if rec is None or len(rec.coordinates) != n_frames or int(rec.attrs["seed"]) != int(seed):
        return None
    defaults = {f.name: f.default for f in fields(MDSettings)}
    for k, v in asdict(settings).items():
        if k not in rec.attrs:  # written before the setting existed: fine when it is at its default
            if k in _ADDED_SETTINGS and v == defaults[k]:
                continue
            return None
        if str(rec.attrs[k]) != str(v) and not _close(rec.attrs[k], v):
            return None
    attrs = {k: v for k, v in rec.attrs.items() if k not in ("topology_pdb", "wall_s")}
    return dict(
        name=name,
        coordinates=rec.coordinates.astype(np.float32),
        pdb=rec.attrs["topology_pdb"],
        attrs=attrs,
        wall_s=float(rec.attrs.get("wall_s", 0.0)),
        resumed=True,
    )


def _close(a, b) -> bool:
    try:
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    except (TypeError, ValueError):
        return False
