"""NVE energy conservation of a sci-fm potential (default: BAMBOO with Coulomb and E_χη) on one molecule.

Velocity Verlet in float64 (0.5 fs, velocities at --temperature, no thermostat) through the ASE calculator;
the total energy is recorded every 10 steps and the drift is the slope of a straight-line fit, reported in
eV/atom/ps (target < 1e-4), together with the RMS fluctuation. A model with random weights is a valid test of
energy/force consistency (forces are -dE/dx, charges included); pass --model DIR to test a trained model.

    uv run python benchmarks/mlip/nve_drift.py --time-ps 10                      # random paper-size BAMBOO
    uv run python benchmarks/mlip/nve_drift.py --model runs/x/model --molecule toluene --time-ps 10
    uv run python benchmarks/mlip/nve_drift.py --quick                            # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SMILES = {
    "toluene": "Cc1ccccc1",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "O=C(O)c1ccccc1O",
    "azobenzene": "c1ccc(cc1)/N=N/c1ccccc1",
    "benzene": "c1ccccc1",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
}
SIZES = {
    "paper": {"n_features": 64, "n_heads": 16, "n_layers": 3, "n_rbf": 32},
    "tiny": {"n_features": 16, "n_heads": 4, "n_layers": 2, "n_rbf": 8},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="exported model dir; default: a random BAMBOO")
    p.add_argument("--size", choices=sorted(SIZES), default="paper", help="size of the random BAMBOO")
    p.add_argument("--molecule", choices=sorted(SMILES), default="toluene")
    p.add_argument("--time-ps", type=float, default=10.0)
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=300.0, help="K, initial velocities")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "mlip"))
    p.add_argument("--quick", action="store_true", help="smoke: tiny model, 0.1 ps")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from ase import Atoms, units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from scifm.mlip.calculator import SciFMCalculator
    from scifm.mlip.data.generate import embed
    from scifm.mlip.models.registry import build_model
    from scifm.mlip.potential import Potential

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.quick:
        args.size, args.time_ps = "tiny", 0.1
    mol = embed(0, args.molecule, SMILES[args.molecule], seed=args.seed)
    atoms = Atoms(numbers=mol.numbers, positions=mol.positions)
    if args.model:
        model = args.model
        label = str(args.model)
    else:
        model = Potential(build_model("bamboo", cutoff=5.0, elements=[1, 6, 7, 8], **SIZES[args.size]))
        label = f"bamboo (random weights, {args.size})"
    atoms.calc = SciFMCalculator(model, dtype="float64", dispersion=None)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=args.temperature, rng=np.random.default_rng(args.seed))
    vd.Stationary(atoms)
    vd.ZeroRotation(atoms)
    n_steps = int(round(args.time_ps * 1000 / args.timestep))
    dyn = VelocityVerlet(atoms, args.timestep * units.fs)
    times, energies = [], []

    def record():
        times.append(dyn.nsteps * args.timestep / 1000.0)  # ps
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())

    dyn.attach(record, interval=10)
    t0 = time.perf_counter()
    dyn.run(n_steps)
    wall = time.perf_counter() - t0
    t, e = np.array(times), np.array(energies) / len(atoms)
    slope = float(np.polyfit(t, e, 1)[0]) if len(t) > 1 else float("nan")
    row = {
        "model": label,
        "molecule": args.molecule,
        "n_atoms": len(atoms),
        "time_ps": float(t[-1]),
        "timestep_fs": args.timestep,
        "drift_eV_per_atom_per_ps": slope,
        "abs_drift_eV_per_atom_per_ps": abs(slope),
        "fluctuation_rms_eV_per_atom": float(np.std(e)),
        "max_dev_eV_per_atom": float(np.abs(e - e[0]).max()),
        "final_temperature_K": float(atoms.get_temperature()),
        "steps_per_s": n_steps / wall,
        "passes_1e-4": abs(slope) < 1e-4,
    }
    print(json.dumps(row, indent=1))
    from scifm.core.provenance import utc_timestamp, write_record

    name = "nve-drift-quick" if args.quick else "nve-drift"
    stamp = utc_timestamp().replace(":", "").replace("-", "")
    path = write_record(
        Path(args.results) / f"{name}-{stamp}.json",
        suite="mlip",
        name=name,
        title="NVE energy drift (float64, velocity Verlet)",
        rows=[row],
        columns={
            "abs_drift_eV_per_atom_per_ps": {"better": "lower", "unit": "eV/atom/ps", "label": "|drift|"},
            "fluctuation_rms_eV_per_atom": {"better": "lower", "unit": "eV/atom", "label": "RMS fluct."},
            "drift_eV_per_atom_per_ps": {"better": None, "unit": "eV/atom/ps", "label": "drift"},
            "max_dev_eV_per_atom": {"better": None, "unit": "eV/atom", "label": "max dev."},
            "final_temperature_K": {"better": None, "unit": "K", "label": "T end"},
            "steps_per_s": {"better": None, "unit": "1/s", "label": "steps/s"},
        },
        config=vars(args),
        seed=args.seed,
        wall_time_s=wall,
        command=" ".join(sys.argv),
    )
    print(f"record written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
