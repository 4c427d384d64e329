"""MD commands: ``md``, ``analyze``, ``build electrolyte``, ``data clusters``, ``distill``, ``align``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scifm.core.cli import CommandTree, lazy_command
from scifm.core.errors import ConfigError, DataError


def _md_args(p: argparse.ArgumentParser) -> None:
    from .md import BAROSTATS, ENSEMBLES, THERMOSTATS, MDSettings

    d = MDSettings()
    p.add_argument(
        "--model",
        nargs="+",
        required=True,
        help="run or model directory; several = a committee (mean forces, spread reported)",
    )
    p.add_argument(
        "--structure", required=True, help="starting structure (extxyz, xyz, pdb, cif, ... via ASE)"
    )
    p.add_argument("--ensemble", choices=ENSEMBLES, default=d.ensemble)
    p.add_argument("--temperature", type=float, default=d.temperature, help="K")
    p.add_argument("--pressure", type=float, default=d.pressure, help="bar (NPT)")
    p.add_argument("--timestep", type=float, default=d.timestep, help="fs")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--save-every", type=int, default=d.save_every, help="steps between trajectory frames")
    p.add_argument(
        "--equilibration",
        type=float,
        default=d.equilibration_ps,
        metavar="PS",
        help="ps at the start left out of the averages in summary.json (density, T, P, κ_T)",
    )
    p.add_argument("--thermo-every", type=int, default=d.thermo_every, help="steps between thermo rows")
    p.add_argument("--thermostat", choices=THERMOSTATS, default=d.thermostat)
    p.add_argument("--barostat", choices=BAROSTATS, default=d.barostat)
    p.add_argument("--friction", type=float, default=d.friction, help="Langevin friction, 1/fs")
    p.add_argument("--tdamp", type=float, default=d.tdamp, help="thermostat time constant, fs")
    p.add_argument("--pdamp", type=float, default=d.pdamp, help="barostat time constant, fs")
    p.add_argument("--compressibility", type=float, default=d.compressibility, help="1/bar (Berendsen)")
    p.add_argument(
        "--keep-velocities",
        dest="init_velocities",
        action="store_false",
        help="start from the structure's momenta instead of Maxwell–Boltzmann",
    )
    p.add_argument(
        "--minimize",
        type=float,
        default=None,
        metavar="FMAX",
        help="relax the positions (FIRE, cell fixed) to this largest force, eV/Å, before the dynamics",
    )
    p.add_argument("--minimize-steps", type=int, default=d.minimize_steps, help="FIRE steps at most")
    p.add_argument("--trajectory-format", choices=["extxyz", "h5"], default=d.trajectory_format)
    p.add_argument("--min-distance", type=float, default=d.min_distance, help="guard, Å (0 disables)")
    p.add_argument(
        "--max-temperature", type=float, default=None, help="guard, K (default max(5 T, 2000 K); 0 disables)"
    )
    p.add_argument("--guard-every", type=int, default=d.guard_every)
    p.add_argument(
        "--uncertainty-threshold",
        type=float,
        default=None,
        help="committee forces_std_max (eV/Å) above which frames are flagged",
    )
    p.add_argument("--uncertainty-action", choices=["flag", "stop"], default="flag")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skin", type=float, default=1.0, help="neighbour-list skin, Å (0: rebuild every step)")
    p.add_argument(
        "--no-dispersion",
        dest="dispersion",
        action="store_false",
        help="do not add the D3 term that the model's config asks for",
    )
    p.add_argument(
        "--dispersion-tail",
        action="store_true",
        help="add the dispersion beyond the model's cutoff (homogeneous-fluid tail, D3 C6) to energy and "
        "pressure: for models trained on dispersion-including labels (GFN2-xTB clusters)",
    )
    p.add_argument("--charge", type=float, default=None, help="total charge (default: structure info or 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/md")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def read_structure(path: str):
    import ase.io

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "structure file not found")
    try:
        atoms = ase.io.read(p, index=-1)
    except Exception as exc:  # ASE raises many types on malformed input
        raise DataError(p, f"cannot read the structure: {exc}") from None
    if len(atoms) == 0:
        raise DataError(p, "structure has no atoms")
    import numpy as np

    if not np.isfinite(atoms.positions).all():
        raise DataError(p, "positions contain NaN or inf")
    return atoms


def make_calculator(
    models, dtype: str, device: str, skin: float, dispersion: bool, numbers=None, where=None, tail=False
):
    """One SciFMCalculator or a CommitteeCalculator; checks the structure's elements against each model."""
    from .committee import CommitteeCalculator, make_member, resolve_model_dir

    members = []
    for m in models:
        d = resolve_model_dir(m)
        if not (d / "model.json").is_file():
            raise DataError(m, "not a model directory (no model.json, nor model/model.json)")
        calc = make_member(
            d,
            dtype=dtype,
            device=device,
            skin=skin,
            dispersion="auto" if dispersion else None,
            dispersion_tail=tail,
        )
        if numbers is not None:
            missing = sorted(set(int(z) for z in numbers) - set(calc.potential.elements))
            if missing:
                from ase.data import chemical_symbols

                raise DataError(
                    where,
                    f"element(s) {', '.join(chemical_symbols[z] for z in missing)} are not "
                    f"known to the model {m}",
                )
        members.append(calc)
    return members[0] if len(members) == 1 else CommitteeCalculator(members)


def _md(args) -> int:
    from .md import MDSettings, run_md

    settings = MDSettings(
        ensemble=args.ensemble,
        temperature=args.temperature,
        pressure=args.pressure,
        timestep=args.timestep,
        steps=args.steps,
        save_every=args.save_every,
        equilibration_ps=args.equilibration,
        thermo_every=args.thermo_every,
        thermostat=args.thermostat,
        barostat=args.barostat,
        friction=args.friction,
        tdamp=args.tdamp,
        pdamp=args.pdamp,
        compressibility=args.compressibility,
        init_velocities=args.init_velocities,
        minimize_fmax=args.minimize,
        minimize_steps=args.minimize_steps,
        seed=args.seed,
        trajectory_format=args.trajectory_format,
        min_distance=args.min_distance if args.min_distance and args.min_distance > 0 else None,
        max_temperature=args.max_temperature,
        guard_every=args.guard_every,
        uncertainty_threshold=args.uncertainty_threshold,
        uncertainty_action=args.uncertainty_action,
        progress=args.progress,
    )
    settings.check()
    if args.uncertainty_threshold is not None and len(args.model) < 2:
        raise ConfigError("--uncertainty-threshold needs a committee: give several --model directories")
    atoms = read_structure(args.structure)
    if args.charge is not None:
        atoms.info["charge"] = float(args.charge)
    from .thermo import is_periodic

    if args.dispersion_tail and not is_periodic(atoms):
        raise ConfigError(f"--dispersion-tail needs a periodic box; {args.structure} is not fully periodic")
    try:
        calc = make_calculator(
            args.model,
            args.dtype,
            args.device,
            args.skin,
            args.dispersion,
            atoms.numbers,
            args.structure,
            tail=args.dispersion_tail,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    meta = {"model": [str(m) for m in args.model], "structure": str(args.structure), "dtype": args.dtype}
    meta["dispersion_tail"] = bool(args.dispersion_tail)
    s = run_md(atoms, calc, settings, args.out, meta=meta)
    keys = (
        "steps",
        "ns_per_day",
        "temperature_K_mean",
        "density_g_cm3_mean",
        "density_g_cm3_sem",
        "energy_drift_eV_per_atom_per_ps",
        "n_flagged",
    )
    print(json.dumps({k: s[k] for k in keys if k in s}, indent=1))
    if s["stopped"]:
        print(
            f"sci-fm md: stopped at step {s['stop_step']}: {s['stop_reason']}; "
            f"everything up to then is in {args.out}"
        )
        return 3
    print(f"run written to {args.out}")
    return 0


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--composition",
        required=True,
        help="'EC:DMC 1:1 + LiPF6 1.0 M' or 'EC x 50 + LiPF6 x 5' or SMILES with counts",
    )
    p.add_argument("--density", type=float, required=True, help="target density, g/cm³")
    p.add_argument("--n-solvent", type=int, default=100, help="solvent molecules (ratio form)")
    p.add_argument("--tolerance", type=float, default=2.0, help="packmol minimum distance, Å")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default="box.extxyz", help="output structure (.extxyz keeps mol_id/formal_charge)"
    )


def _build(args) -> int:
    import ase.io

    from .electrolyte import build_box
    from .md import _write_json

    atoms, report = build_box(
        args.composition, args.density, n_solvent=args.n_solvent, tolerance=args.tolerance, seed=args.seed
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    ase.io.write(tmp, atoms, format="extxyz")
    tmp.replace(out)
    _write_json(out.with_suffix(".json"), report)
    print(json.dumps({k: report[k] for k in ("counts", "box_A", "density_g_cm3", "n_atoms", "total_charge")}))
    print(f"box written to {out}")
    return 0


def _clusters_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trajectory", required=True, help="MD frames (.extxyz/.h5)")
    p.add_argument(
        "--centres", default="Li", help="centre molecules: formulas or elements (e.g. Li,F6P) or all"
    )
    p.add_argument("--radius", type=float, default=4.0, help="Å from the centre's centre of mass")
    p.add_argument("--every", type=int, default=1, help="use every k-th frame")
    p.add_argument("--max-clusters", type=int, default=100)
    p.add_argument("--max-atoms", type=int, default=120, help="skip larger clusters (xTB cost)")
    p.add_argument(
        "--rattle",
        type=float,
        default=0.0,
        help="Å: displace every atom of a cluster by N(0, σ²) per coordinate, σ drawn per cluster from "
        "U(0, RATTLE) (distorted geometries teach the restoring forces; clusters cut from a packmol box "
        "hold rigid templates only)",
    )
    p.add_argument("--label", choices=["none", "GFN2-xTB", "GFN1-xTB"], default="GFN2-xTB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="clusters.extxyz")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _clusters(args) -> int:
    import ase.io
    import numpy as np

    from .clusters import centre_molecules, extract_cluster, label_clusters, molecule_ids
    from .trajectory import read_trajectory

    if args.every < 1:
        raise ConfigError(f"--every {args.every}: must be >= 1")
    if not 0 <= args.rattle <= 0.5:
        raise ConfigError(f"--rattle {args.rattle}: must be in [0, 0.5] Å")
    frames = read_trajectory(args.trajectory)[:: args.every]
    rng = np.random.default_rng(args.seed)
    mol = molecule_ids(frames[0])
    centres = centre_molecules(frames[0], mol, args.centres)
    if not centres:
        raise ConfigError(f"--centres {args.centres}: no such molecule in {args.trajectory}")
    clusters = []
    for f, atoms in enumerate(frames):
        for c in rng.permutation(centres):
            cl = extract_cluster(atoms, int(c), args.radius, mol)
            if len(cl) <= args.max_atoms:
                cl.info.update(frame=f * args.every, traj_id=len(clusters))
                clusters.append(cl)
    rng.shuffle(clusters)
    clusters = clusters[: args.max_clusters]
    if args.rattle > 0:
        for cl in clusters:
            sigma = float(rng.uniform(0.0, args.rattle))
            cl.positions = cl.positions + rng.normal(0.0, sigma, cl.positions.shape)
            cl.info["rattle_A"] = sigma
    failed = 0
    if args.label != "none":
        clusters, failed = label_clusters(clusters, args.label, progress=args.progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    ase.io.write(tmp, clusters, format="extxyz")
    tmp.replace(out)
    q = [c.info["charge"] for c in clusters]
    print(
        f"wrote {len(clusters)} clusters ({failed} SCF failures dropped; charges {sorted(set(q))}) to {out}"
    )
    return 0


def register(tree: CommandTree) -> None:
    tree.add("md", None, _md_args, _md, help="molecular dynamics (NVE/NVT/NPT) with an exported MLIP")
    tree.add(
        "analyze",
        None,
        *lazy_command("scifm.md.analysis.report"),
        help="density, RDF, diffusion, conductivity, viscosity of an MD run (with error bars)",
    )
    tree.add(
        "build",
        "electrolyte",
        _build_args,
        _build,
        help="pack an electrolyte box from a composition and a density (packmol)",
    )
    tree.add(
        "data",
        "clusters",
        _clusters_args,
        _clusters,
        help="cut whole-molecule clusters out of MD frames and label them with GFN2-xTB",
    )
    tree.add(
        "distill",
        None,
        *lazy_command("scifm.md.distill"),
        help="ensemble distillation: fine-tune a student's energy readout on the teachers' mean",
    )
    tree.add(
        "align",
        None,
        *lazy_command("scifm.md.align"),
        help="density alignment: fine-tune the energy readout to shift each mixture's pressure",
    )
