"""The MD runner: NVE / NVT / NPT through any ASE calculator, with thermo log, trajectory, guards,
committee flags and a summary.

Integrators (ASE): NVE velocity Verlet; NVT Langevin (``friction`` 1/fs) or Nosé–Hoover chain
(``tdamp`` fs); NPT isotropic MTK (Nosé–Hoover chains on particles and barostat; ``tdamp``, ``pdamp``)
or Berendsen (``taut``=tdamp, ``taup``=pdamp, ``compressibility`` 1/bar). Pressure in bar is converted to
eV/Å³ with ``ase.units.bar``.

Outputs in ``out``: ``traj.extxyz`` (or ``traj.h5``) every ``save_every`` steps, ``thermo.csv`` every
``thermo_every`` steps (see ``scifm.md.thermo``), ``flagged.extxyz`` (frames whose committee force spread
passed ``uncertainty_threshold``), ``summary.json``; on a guard stop also ``last_frame.extxyz`` (the
offending geometry). A stop keeps everything written so far and is reported in the summary
(``stopped``, ``stop_reason``, ``stop_step``).

Averages (temperature, potential energy, pressure, density, volume, κ_T) leave out the first
``equilibration_ps`` (``sci-fm md --equilibration PS``): a box packed at a guessed density relaxes its volume
over the first picoseconds of NPT, and that transient is not the model's density.

Summary keys: steps, steps_requested, equilibration_ps, n_thermo_rows_averaged, steps_per_second, ns_per_day,
temperature_K_mean/_sem, epot_eV_mean, pressure_bar_mean/_sem (periodic), density_g_cm3_mean/_sem and
volume_A3_mean (periodic), isothermal_compressibility_per_bar (NPT, from volume fluctuations
κ_T = ⟨δV²⟩/(k_B T ⟨V⟩)), energy_drift_eV_per_atom_per_ps (NVE: slope of E_tot/N vs time) and its
standard error energy_drift_sem_eV_per_atom_per_ps (``analysis.blocks.slope_sem``), n_frames, n_flagged,
wall_time_s.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import units

from scifm.core.errors import ConfigError

from .analysis.blocks import block_average, slope_sem
from .guards import Guards
from .thermo import ThermoLog, is_periodic, observables
from .trajectory import TrajectoryWriter

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "nose-hoover")
BAROSTATS = ("mtk", "berendsen")


@dataclass
class MDSettings:
    """All knobs of a run (units in the comments). Validated by :meth:`check`."""

    ensemble: str = "nvt"
    temperature: float = 300.0  # K (bath; NVE: initial velocities)
    pressure: float = 1.0  # bar (NPT)
    timestep: float = 1.0  # fs
    steps: int = 1000
    save_every: int = 100  # steps between trajectory frames
    equilibration_ps: float = 0.0  # ps at the start left out of the averages (density, T, P, κ_T)
    thermo_every: int = 10  # steps between thermo rows
    thermostat: str = "langevin"
    barostat: str = "mtk"
    friction: float = 0.01  # 1/fs (Langevin)
    tdamp: float = 100.0  # fs (Nosé–Hoover, MTK thermostat, Berendsen taut)
    pdamp: float = 1000.0  # fs (MTK barostat, Berendsen taup)
    compressibility: float = 4.57e-5  # 1/bar (Berendsen only; water's value)
    init_velocities: bool = True  # Maxwell–Boltzmann at ``temperature`` (else keep the structure's)
    minimize_fmax: float | None = None  # eV/Å: FIRE on the positions (fixed cell) before the dynamics
    minimize_steps: int = 500
    seed: int = 0
    trajectory_format: str = "extxyz"
    min_distance: float | None = 0.5  # Å guard
    max_temperature: float | None = None  # K guard (None: max(5·T, 2000 K))
    guard_every: int = 1  # steps between distance checks (NaN and temperature are checked every step)
    uncertainty_threshold: float | None = None  # eV/Å, committee forces_std_max
    uncertainty_action: str = "flag"  # flag | stop
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        def bad(flag, value, why):
            return ConfigError(f"--{flag} {value}: {why}")

        if self.ensemble not in ENSEMBLES:
            raise bad("ensemble", self.ensemble, f"choose one of {', '.join(ENSEMBLES)}")
        if self.thermostat not in THERMOSTATS:
            raise bad("thermostat", self.thermostat, f"choose one of {', '.join(THERMOSTATS)}")
        if self.barostat not in BAROSTATS:
            raise bad("barostat", self.barostat, f"choose one of {', '.join(BAROSTATS)}")
        if not self.temperature > 0 and self.ensemble != "nve":
            raise bad("temperature", self.temperature, "must be > 0 K")
        if self.temperature < 0:
            raise bad("temperature", self.temperature, "must be >= 0 K")
        if not 0 < self.timestep <= 10:
            raise bad("timestep", self.timestep, "must be in (0, 10] fs")
        if self.steps < 0:
            raise bad("steps", self.steps, "must be >= 0")
        run_ps = self.steps * self.timestep * 1e-3
        if self.equilibration_ps < 0 or (self.steps > 0 and self.equilibration_ps >= run_ps):
            raise bad(
                "equilibration",
                self.equilibration_ps,
                f"must be >= 0 ps and shorter than the run ({run_ps:g} ps)",
            )
        if self.minimize_fmax is not None and not self.minimize_fmax > 0:
            raise bad("minimize", self.minimize_fmax, "must be > 0 eV/Å")
        if self.minimize_steps < 1:
            raise bad("minimize-steps", self.minimize_steps, "must be >= 1")
        for name in ("save_every", "thermo_every", "guard_every"):
            if getattr(self, name) < 1:
                raise bad(name.replace("_", "-"), getattr(self, name), "must be >= 1")
        if self.friction <= 0 or self.tdamp <= 0 or self.pdamp <= 0:
            raise ConfigError("--friction, --tdamp and --pdamp must be > 0")
        if self.uncertainty_action not in ("flag", "stop"):
            raise bad("uncertainty-action", self.uncertainty_action, "choose flag or stop")
        if self.trajectory_format not in ("extxyz", "h5"):
            raise bad("trajectory-format", self.trajectory_format, "choose extxyz or h5")

    @property
    def temperature_limit(self) -> float | None:
        if self.max_temperature is not None:
            return self.max_temperature if self.max_temperature > 0 else None
        return max(5.0 * self.temperature, 2000.0)


def make_dynamics(atoms, s: MDSettings, rng: np.random.Generator):
    """The ASE integrator for ``s.ensemble`` (see the module docstring)."""
    dt = s.timestep * units.fs
    if s.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if s.ensemble == "nvt":
        if s.thermostat == "langevin":
            from ase.md.langevin import Langevin

            return Langevin(
                atoms,
                timestep=dt,
                temperature_K=s.temperature,
                friction=s.friction / units.fs,
                fixcm=False,
                rng=rng,
            )
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=s.temperature, tdamp=s.tdamp * units.fs)
    if not is_periodic(atoms):
        raise ConfigError("--ensemble npt needs a fully periodic structure with a cell")
    p_au = s.pressure * units.bar
    if s.barostat == "mtk":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(
            atoms,
            timestep=dt,
            temperature_K=s.temperature,
            pressure_au=p_au,
            tdamp=s.tdamp * units.fs,
            pdamp=s.pdamp * units.fs,
        )
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(
        atoms,
        timestep=dt,
        temperature_K=s.temperature,
        pressure_au=p_au,
        taut=s.tdamp * units.fs,
        taup=s.pdamp * units.fs,
        compressibility_au=s.compressibility / units.bar,
    )


def init_velocities(atoms, temperature: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at ``temperature`` K, zero total momentum (and, if isolated, rotation)."""
    from ase.md import velocitydistribution as vd

    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)
    if not atoms.get_pbc().any() and len(atoms) > 2:
        vd.ZeroRotation(atoms)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def summarize(log: ThermoLog, s: MDSettings, n_atoms: int, steps_done: int, wall: float) -> dict:
    """Run statistics from the thermo rows (block-averaged SEMs)."""
    sim_ns = steps_done * s.timestep * 1e-6
    out: dict = {
        "steps": steps_done,
        "steps_requested": s.steps,
        "n_atoms": n_atoms,
        "ensemble": s.ensemble,
        "timestep_fs": s.timestep,
        "simulated_ps": steps_done * s.timestep * 1e-3,
        "wall_time_s": wall,
        "steps_per_second": steps_done / wall if wall > 0 else None,
        "ns_per_day": sim_ns / wall * 86400.0 if wall > 0 else None,
    }
    if not log.rows:
        return out
    # averages over the production part only; the NVE drift below uses every row
    prod = log.column("time_fs") >= 1e3 * s.equilibration_ps
    if not prod.any():
        prod[:] = True
    out["equilibration_ps"] = float(s.equilibration_ps)
    out["n_thermo_rows_averaged"] = int(prod.sum())
    temp = log.column("temperature_K")[prod]
    tb = block_average(temp)
    out.update(
        temperature_K_mean=_finite(tb.mean),
        temperature_K_sem=_finite(tb.sem),
        epot_eV_mean=_finite(float(np.mean(log.column("epot_eV")[prod]))),
    )
    dens = log.column("density_g_cm3")[prod]
    if np.isfinite(dens).any():
        db = block_average(dens)
        pb = block_average(log.column("pressure_bar")[prod])
        vol = log.column("volume_A3")[prod]
        out.update(
            density_g_cm3_mean=_finite(db.mean),
            density_g_cm3_sem=_finite(db.sem),
            pressure_bar_mean=_finite(pb.mean),
            pressure_bar_sem=_finite(pb.sem),
            volume_A3_mean=_finite(float(np.mean(vol))),
        )
        if s.ensemble == "npt" and len(vol) > 2:
            kt = units.kB * float(np.mean(temp))  # eV
            kappa = float(np.var(vol) / (kt * np.mean(vol)))  # Å³/eV -> 1/(eV/Å³)
            out["isothermal_compressibility_per_bar"] = _finite(kappa * units.bar)
    if s.ensemble == "nve" and len(log.rows) >= 2:
        t_ps = log.column("time_fs") * 1e-3
        e = log.column("etot_eV") / n_atoms
        drift, drift_sem = slope_sem(t_ps, e)
        out["energy_drift_eV_per_atom_per_ps"] = _finite(drift)
        out["energy_drift_sem_eV_per_atom_per_ps"] = _finite(drift_sem)
        out["energy_fluctuation_eV_per_atom"] = _finite(float(np.std(e)))
    std = log.column("forces_std_max_eV_A")
    if np.isfinite(std).any():
        out["forces_std_max_eV_A_mean"] = _finite(float(np.nanmean(std)))
        out["forces_std_max_eV_A_max"] = _finite(float(np.nanmax(std)))
    return out


def minimize(atoms, fmax: float, steps: int, out: Path) -> dict:
    """FIRE on the positions (the cell fixed) until the largest force is below ``fmax`` eV/Å or ``steps``
    steps: a packed box (packmol templates, strained ions) can start with forces of tens of eV/Å that blow
    any MD up in a few steps. Writes ``out/minimized.extxyz``; returns energies and largest forces before
    and after."""
    import ase.io
    from ase.optimize import FIRE

    def fmax_now():
        return float(np.linalg.norm(atoms.get_forces(), axis=1).max())

    e0, f0 = float(atoms.get_potential_energy()), fmax_now()
    opt = FIRE(atoms, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    info = {
        "steps": int(opt.nsteps),
        "converged": converged,
        "fmax_target_eV_A": float(fmax),
        "fmax_start_eV_A": f0,
        "fmax_end_eV_A": fmax_now(),
        "epot_start_eV": e0,
        "epot_end_eV": float(atoms.get_potential_energy()),
    }
    ase.io.write(out / "minimized.extxyz", atoms, format="extxyz")
    return info


def run_md(atoms, calc, settings: MDSettings, out: str | Path, meta: dict | None = None) -> dict:
    """Run MD of ``atoms`` (modified in place) with ``calc``; write outputs to ``out``; return the summary.

    Never raises on an unstable run: a guard stop ends the loop, closes the files and is recorded in the
    summary. Exceptions from the calculator propagate after the files written so far are closed.
    """
    import ase.io
    from tqdm.auto import tqdm

    s = settings
    s.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(s.seed)
    atoms.calc = calc
    minimized = minimize(atoms, s.minimize_fmax, s.minimize_steps, out) if s.minimize_fmax else None
    if s.init_velocities:
        init_velocities(atoms, s.temperature, rng)
    dyn = make_dynamics(atoms, s, rng)
    guards = Guards(min_distance=s.min_distance, max_temperature=s.temperature_limit)
    suffix = "h5" if s.trajectory_format == "h5" else "extxyz"
    traj = TrajectoryWriter(out / f"traj.{suffix}", s.trajectory_format)
    log = ThermoLog(out / "thermo.csv")
    flagged_path = out / "flagged.extxyz"
    flagged_path.unlink(missing_ok=True)
    n_flagged = 0
    stop_reason, stop_step = None, None
    step = 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=s.steps, unit="step", desc=f"MD {s.ensemble}", disable=not s.progress, dynamic_ncols=True
    )

    def record(step: int) -> str | None:
        """Guards, thermo, trajectory, committee flag at ``step``; returns a stop reason or None."""
        nonlocal n_flagged
        problem = guards.check(atoms, check_distance=(step % s.guard_every == 0))
        if problem:
            return problem
        t_fs = step * s.timestep
        if step % s.thermo_every == 0 or step == s.steps:
            log.write(observables(atoms, step, t_fs))
        if step % s.save_every == 0 or step == s.steps:
            traj.write(atoms, step, t_fs)
        spread = atoms.calc.results.get("forces_std_max") if s.uncertainty_threshold is not None else None
        if spread is not None and spread > s.uncertainty_threshold:
            snap = traj_snapshot(atoms, step, t_fs)
            ase.io.write(flagged_path, snap, format="extxyz", append=True)
            n_flagged += 1
            if s.uncertainty_action == "stop":
                return (
                    f"committee force spread {spread:.3f} eV/Å exceeds the "
                    f"{s.uncertainty_threshold} eV/Å threshold"
                )
        return None

    from .trajectory import snapshot as traj_snapshot

    try:
        atoms.get_forces()  # the first evaluation: a model that cannot run fails here, before any step
        stop_reason = record(0)
        stop_step = 0 if stop_reason else None
        while stop_reason is None and step < s.steps:
            dyn.step()
            dyn.nsteps += 1
            step += 1
            stop_reason = record(step)
            if stop_reason:
                stop_step = step
            if step % 20 == 0 or step == s.steps:
                wall = time.perf_counter() - t0
                bar.set_postfix_str(
                    f"{step * s.timestep * 1e-6 / max(wall, 1e-9) * 86400:.3g} ns/day, "
                    f"T={atoms.get_temperature():.0f} K",
                    refresh=False,
                )
            bar.update(1)
    finally:
        bar.close()
        traj.close()
        log.close()
    wall = time.perf_counter() - t0
    if stop_reason:
        ase.io.write(
            out / "last_frame.extxyz", traj_snapshot(atoms, step, step * s.timestep), format="extxyz"
        )
    steps_done = step - (1 if stop_reason and stop_step == step and step > 0 else 0)
    summary = summarize(log, s, len(atoms), steps_done, wall)
    summary.update(
        stopped=stop_reason is not None,
        stop_reason=stop_reason,
        stop_step=stop_step,
        n_frames=traj.n_frames,
        n_flagged=n_flagged,
        minimized=minimized,
        trajectory=traj.path.name,
        settings={k: v for k, v in asdict(s).items() if k != "extra"},
        **(meta or {}),
    )
    _write_json(out / "summary.json", summary)
    return summary
