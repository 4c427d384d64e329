"""``sci-fm analyze``: properties of an MD run with block-averaged error bars and one plot each.

Inputs: a ``sci-fm md`` output directory (``--run``: summary.json, thermo.csv, traj.*) or explicit
``--trajectory``/``--thermo`` files. Properties (``--properties``, default all that the inputs allow):

- density: block average of the thermo density (g/cm³) [plot: time series]
- rdf: g(r) for ``--rdf-pairs`` (e.g. ``Li-O,P-F``; default all-all) with coordination numbers [plot]
- msd: self-diffusion per molecular species (molecules = ``mol_id`` or covalent connectivity; species =
  Hill formula; centre-of-mass MSD with the system's centre-of-mass drift removed) [plot: MSD(t)]
- conductivity: Nernst–Einstein from the ions' D and Einstein (collective) from the ions' translational
  dipole; ion charges from ``formal_charge`` arrays or ``--ion-charges Li=1,F6P=-1`` [plot]
- viscosity: Green–Kubo from pxy, pxz, pyz of the thermo log (needs a fine ``--thermo-every``) [plot]

Results go to ``OUT/metrics.json`` (default ``RUN/analysis``), values with ``_sem`` error bars.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scifm.core.errors import ConfigError, DataError

from .blocks import block_average

PROPERTIES = ("density", "rdf", "msd", "conductivity", "viscosity")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parse_ion_charges(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise ConfigError(f"--ion-charges: {item!r} must look like FORMULA=CHARGE (e.g. Li=1,F6P=-1)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"--ion-charges: charge {v!r} is not a number") from None
    return out


def trajectory_arrays(frames, timestep_fs: float | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """positions [T,N,3], cells [T,3,3] (None if not periodic), times [T] fs."""
    pos = np.stack([a.positions for a in frames])
    periodic = all(a.pbc.all() for a in frames)
    cells = np.stack([np.asarray(a.cell) for a in frames]) if periodic else None
    if all("time_fs" in a.info for a in frames):
        times = np.array([float(a.info["time_fs"]) for a in frames])
    elif all("step" in a.info for a in frames) and timestep_fs:
        times = np.array([int(a.info["step"]) for a in frames]) * timestep_fs
    else:
        raise ConfigError("frames carry no time_fs; give --timestep (fs) and frames with info['step']")
    return pos, cells, times


def _uniform_dt(times: np.ndarray, what: str) -> float:
    d = np.diff(times)
    if len(d) == 0 or not np.allclose(d, d[0], rtol=1e-6):
        raise DataError(what, "frames are not evenly spaced in time")
    return float(d[0])


def analyze_density(thermo: dict, out: Path, plt) -> dict:
    rho = thermo["density_g_cm3"]
    if not np.isfinite(rho).any():
        raise ConfigError("density needs a periodic run (the thermo log has no density)")
    b = block_average(rho)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(thermo["time_fs"] * 1e-3, rho, lw=0.8)
    ax.axhline(b.mean, color="k", lw=1)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("density (g/cm³)")
    ax.set_title(f"ρ = {b.mean:.4f} ± {b.sem:.4f} g/cm³")
    fig.tight_layout()
    fig.savefig(out / "density.png", dpi=120)
    plt.close(fig)
    return {"density_g_cm3": b.mean, "density_g_cm3_sem": b.sem, "density_block_size": b.block_size}


def analyze_rdf(
    frames, pairs: list[tuple[str | None, str | None]], r_max: float, n_bins: int, out: Path, plt
) -> dict:
    from .rdf import rdf

    res = {}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    cell = np.asarray(frames[0].cell)
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    r_max = min(r_max, 0.5 * float(heights.min()))
    for a, b in pairs:
        g = rdf(frames, a, b, r_max=r_max, n_bins=n_bins)
        k = int(np.argmax(g.g))
        res[g.pair] = {
            "r_peak_A": float(g.r[k]),
            "g_peak": float(g.g[k]),
            "g_peak_sem": float(g.g_sem[k]),
            "r_A": g.r.tolist(),
            "g": g.g.tolist(),
            "g_sem": g.g_sem.tolist(),
            "coordination": g.coordination.tolist(),
        }
        ax.plot(g.r, g.g, label=g.pair)
        ax.fill_between(g.r, g.g - np.nan_to_num(g.g_sem), g.g + np.nan_to_num(g.g_sem), alpha=0.3)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rdf.png", dpi=120)
    plt.close(fig)
    return {"rdf": res, "rdf_r_max_A": r_max}


def molecular_species(frames, ion_charges: dict[str, float]):
    """(molecule ids [N], species name per molecule [M], charge per molecule [M])."""
    from ..clusters import molecule_charges, molecule_ids

    a0 = frames[0]
    mol = molecule_ids(a0)
    n_mol = int(mol.max()) + 1
    names = [a0[mol == m].get_chemical_formula(mode="hill") for m in range(n_mol)]
    q = (
        molecule_charges(a0, mol)
        if "formal_charge" in a0.arrays
        else np.array([ion_charges.get(n, 0.0) for n in names])
    )
    return mol, np.array(names), q


def analyze_transport(
    frames,
    times,
    cells,
    pos,
    temperature: float,
    volume: float,
    ion_charges,
    fit,
    n_blocks: int,
    want_cond: bool,
    out: Path,
    plt,
) -> dict:
    from .conductivity import einstein, nernst_einstein
    from .msd import diffusion, group_centres, unwrap

    dt = _uniform_dt(times, "trajectory")
    x = unwrap(pos, cells)
    masses = frames[0].get_masses()
    x = x - np.einsum("n,tnd->td", masses / masses.sum(), x)[:, None, :]  # remove the system's COM drift
    mol, names, q = molecular_species(frames, ion_charges)
    com = group_centres(x, masses, mol)
    res: dict = {"diffusion": {}}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    d_by = {}
    counts = {}
    for name in sorted(set(names)):
        sel = names == name
        fitd = diffusion(com[:, sel], dt, fit=fit, n_blocks=n_blocks)
        d_by[name] = fitd.D_m2_s
        counts[name] = int(sel.sum())
        res["diffusion"][name] = {
            "D_m2_s": fitd.D_m2_s,
            "D_sem_m2_s": fitd.D_sem_m2_s,
            "n": int(sel.sum()),
            "fit_window_fs": list(fitd.window_fs),
        }
        ax.plot(fitd.lag_fs * 1e-3, fitd.msd_A2, label=f"{name} D={fitd.D_m2_s:.2e} m²/s")
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("MSD (Å²)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "msd.png", dpi=120)
    plt.close(fig)
    if want_cond:
        charged = q != 0
        if not charged.any():
            raise ConfigError("conductivity needs ions: no formal_charge arrays and no --ion-charges match")
        charges = {n: float(q[names == n][0]) for n in set(names[charged])}
        sig_ne = nernst_einstein({n: counts[n] for n in charges}, charges, d_by, volume, temperature)
        # NE error: propagate the D SEMs (independent species)
        e2kt = sig_ne / max(sum(counts[n] * charges[n] ** 2 * d_by[n] for n in charges), 1e-300)
        var = sum(
            (e2kt * counts[n] * charges[n] ** 2 * res["diffusion"][n]["D_sem_m2_s"]) ** 2 for n in charges
        )
        ein = einstein(com[:, charged], q[charged], dt, volume, temperature, fit=fit, n_blocks=n_blocks)
        res["conductivity"] = {
            "nernst_einstein_mS_cm": 10 * sig_ne,
            "nernst_einstein_sem_mS_cm": 10 * float(np.sqrt(var)),
            "einstein_mS_cm": 10 * ein.sigma_S_m,
            "einstein_sem_mS_cm": 10 * ein.sigma_sem_S_m,
            "ion_charges": charges,
            "ionicity": ein.sigma_S_m / sig_ne if sig_ne else None,
        }
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(ein.lag_fs * 1e-3, ein.msd_e2A2)
        ax.set_xlabel("lag (ps)")
        ax.set_ylabel("⟨|ΔM|²⟩ (e² Å²)")
        ax.set_title(f"σ_E = {10 * ein.sigma_S_m:.3g} mS/cm, σ_NE = {10 * sig_ne:.3g} mS/cm")
        fig.tight_layout()
        fig.savefig(out / "conductivity.png", dpi=120)
        plt.close(fig)
    return res


def analyze_viscosity(
    thermo: dict, temperature: float, volume: float, t_max: float, n_blocks: int, out: Path, plt
) -> dict:
    from .viscosity import green_kubo

    p = np.stack([thermo[k] for k in ("pxy_bar", "pxz_bar", "pyz_bar")], axis=1)
    if not np.isfinite(p).all():
        raise ConfigError("viscosity needs a periodic run with a pressure tensor in the thermo log")
    dt = _uniform_dt(thermo["time_fs"], "thermo log")
    try:
        gk = green_kubo(p, dt, volume, temperature, t_max, n_blocks=n_blocks)
    except ValueError as exc:  # a run too short for the requested integration limit
        raise ConfigError(f"viscosity: {exc}; lower --gk-tmax or run longer") from None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(gk.lag_fs * 1e-3, gk.running_mPa_s)
    ax.set_xlabel("t (ps)")
    ax.set_ylabel("running η (mPa·s)")
    ax.set_title(f"η = {gk.eta_mPa_s:.3g} ± {gk.eta_sem_mPa_s:.2g} mPa·s")
    fig.tight_layout()
    fig.savefig(out / "viscosity.png", dpi=120)
    plt.close(fig)
    return {
        "viscosity_mPa_s": gk.eta_mPa_s,
        "viscosity_sem_mPa_s": gk.eta_sem_mPa_s,
        "gk_t_max_fs": t_max,
        "thermo_dt_fs": dt,
    }


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="output directory of `sci-fm md`")
    p.add_argument("--trajectory", default=None, help="trajectory file (default RUN/traj.*)")
    p.add_argument("--thermo", default=None, help="thermo CSV (default RUN/thermo.csv)")
    p.add_argument(
        "--properties", default=",".join(PROPERTIES), help="comma-separated subset of " + ",".join(PROPERTIES)
    )
    p.add_argument("--skip", type=float, default=0.1, help="fraction of the run discarded as equilibration")
    p.add_argument("--temperature", type=float, default=None, help="K (default: mean of the thermo log)")
    p.add_argument("--timestep", type=float, default=None, help="fs, for frames without time_fs")
    p.add_argument("--rdf-pairs", default=None, help="e.g. Li-O,P-F (default: all atoms)")
    p.add_argument("--rdf-rmax", type=float, default=8.0, help="Å (capped at half the box)")
    p.add_argument("--rdf-bins", type=int, default=160)
    p.add_argument("--fit-window", default="0.2,0.8", help="MSD fit window as fractions of the max lag")
    p.add_argument("--ion-charges", default=None, help="FORMULA=CHARGE,... when frames have no formal_charge")
    p.add_argument("--gk-tmax", type=float, default=1000.0, help="Green–Kubo integration limit, fs")
    p.add_argument("--blocks", type=int, default=5, help="blocks for the transport error bars")
    p.add_argument("--out", default=None, help="output directory (default RUN/analysis)")


def run(args) -> int:
    from ..md import _write_json
    from ..thermo import read_thermo
    from ..trajectory import read_trajectory

    props = [s.strip() for s in args.properties.split(",") if s.strip()]
    bad = [s for s in props if s not in PROPERTIES]
    if bad:
        raise ConfigError(f"--properties: unknown {bad}; choose from {', '.join(PROPERTIES)}")
    if not 0 <= args.skip < 1:
        raise ConfigError(f"--skip {args.skip}: must be in [0, 1)")
    run_dir = Path(args.run) if args.run else None
    summary = {}
    if run_dir is not None:
        if not run_dir.is_dir():
            raise DataError(run_dir, "run directory not found")
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
    traj_path = args.trajectory or (run_dir / summary.get("trajectory", "traj.extxyz") if run_dir else None)
    thermo_path = args.thermo or (run_dir / "thermo.csv" if run_dir else None)
    if traj_path is None and thermo_path is None:
        raise ConfigError("give --run or --trajectory/--thermo")
    out = Path(args.out) if args.out else (run_dir / "analysis" if run_dir else Path("analysis"))
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    thermo = read_thermo(thermo_path) if thermo_path and Path(thermo_path).is_file() else None
    if thermo is not None:
        n0 = int(args.skip * len(thermo["time_fs"]))
        thermo = {k: v[n0:] for k, v in thermo.items()}
    frames = None
    if traj_path and any(p in props for p in ("rdf", "msd", "conductivity")):
        frames = read_trajectory(traj_path)
        frames = frames[int(args.skip * len(frames)) :]
    temperature = args.temperature or (
        float(np.mean(thermo["temperature_K"])) if thermo is not None else None
    )
    metrics: dict = {"skip_fraction": args.skip, "temperature_K": temperature}
    if thermo is not None and np.isfinite(thermo["volume_A3"]).any():
        volume = float(np.nanmean(thermo["volume_A3"]))
    elif frames is not None and frames[0].pbc.all():
        volume = float(np.mean([a.get_volume() for a in frames]))
    else:
        volume = None
    metrics["volume_A3"] = volume
    fit = tuple(float(x) for x in args.fit_window.split(","))

    def _one(prop: str) -> None:
        if prop == "density":
            if thermo is None:
                raise ConfigError("density needs a thermo log")
            metrics.update(analyze_density(thermo, out, plt))
        elif prop == "rdf":
            if frames is None:
                raise ConfigError("rdf needs a trajectory")
            if not frames[0].pbc.all():
                raise ConfigError("rdf needs periodic frames")
            pairs = [(None, None)]
            if args.rdf_pairs:
                pairs = [tuple(s.split("-", 1)) for s in args.rdf_pairs.split(",")]
            metrics.update(analyze_rdf(frames, pairs, args.rdf_rmax, args.rdf_bins, out, plt))
        elif prop == "msd" or (prop == "conductivity" and "msd" not in props):
            if frames is None or temperature is None or volume is None:
                raise ConfigError(f"{prop} needs a periodic trajectory and a temperature")
            pos, cells, times = trajectory_arrays(frames, args.timestep or summary.get("timestep_fs"))
            metrics.update(
                analyze_transport(
                    frames,
                    times,
                    cells,
                    pos,
                    temperature,
                    volume,
                    parse_ion_charges(args.ion_charges),
                    fit,
                    args.blocks,
                    "conductivity" in props,
                    out,
                    plt,
                )
            )
        elif prop == "viscosity":
            if thermo is None or temperature is None or volume is None:
                raise ConfigError("viscosity needs a periodic thermo log")
            metrics.update(
                analyze_viscosity(thermo, temperature, volume, args.gk_tmax, args.blocks, out, plt)
            )

    for prop in props:
        try:
            _one(prop)
        except ValueError as exc:  # e.g. a run too short for the fit window or the GK limit
            raise ConfigError(f"{prop}: {exc} (is the run long enough?)") from None
    _write_json(out / "metrics.json", metrics)
    short = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    print(json.dumps(short, indent=1, default=str))
    print(f"analysis written to {out}")
    return 0
