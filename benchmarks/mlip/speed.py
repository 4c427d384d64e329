"""MD speed through the ASE calculator: steps/s (velocity Verlet, neighbour list rebuilt every step, float32)
and the split of one step between neighbour list, model forward and backward (forces + stress).

Systems: aspirin (21 atoms, isolated) and a periodic liquid water box (7×7×7 = 343 molecules, 1029 atoms,
1 g/cm³, randomly oriented molecules on a cubic grid: a timing geometry, not an equilibrated liquid). Models:
the sci-fm registry models at sizes comparable to MACE with ``64x0e + 64x1o`` and 2 interactions (random
weights: speed does not depend on training), and MACE itself when ``--mace-model`` names a model file
trained by rmd17_compare.py
(run inside the MACE virtual environment, same threads and dtype).

    OMP_NUM_THREADS=2 uv run python benchmarks/mlip/speed.py --threads 2                       # full (CPU)
    uv run python benchmarks/mlip/speed.py --device cuda \
        --mace-model runs/rmd17_compare/salicylic_acid/mace/mace.model
    uv run python benchmarks/mlip/speed.py --quick                                              # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ELEMENTS = [1, 6, 7, 8]
SIZES = {  # comparable to MACE 64x0e + 64x1o, 2 interactions
    "bamboo": {"n_features": 64, "n_heads": 16, "n_layers": 3, "n_rbf": 32},
    "painn": {"n_features": 64, "n_layers": 3},
    "schnet": {"n_features": 64, "n_filters": 64, "n_interactions": 3},
    "nequip": {"n_features": 64, "l_max": 1, "n_interactions": 2},
}
QUICK_SIZES = {
    "bamboo": {"n_features": 16, "n_heads": 4, "n_layers": 2, "n_rbf": 8},
    "painn": {"n_features": 16, "n_layers": 2},
    "schnet": {"n_features": 16, "n_filters": 16, "n_interactions": 2},
    "nequip": {"n_features": 8, "l_max": 1, "n_interactions": 2},
}


def aspirin():
    from scifm.mlip.data.generate import embed

    mol = embed(0, "aspirin", "CC(=O)Oc1ccccc1C(=O)O", seed=0)
    from ase import Atoms

    return Atoms(numbers=mol.numbers, positions=mol.positions)


def water_box(n: int = 7, seed: int = 0):
    """n³ water molecules on a cubic grid at 1 g/cm³ (29.9 Å³ per molecule), random orientations."""
    from ase import Atoms
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    a = 29.9 ** (1 / 3)
    mol = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    mol -= mol.mean(0)
    pos, numbers = [], []
    for idx in np.ndindex(n, n, n):
        rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
        pos.append(mol @ rot.T + (np.array(idx) + 0.5) * a)
        numbers += [8, 1, 1]
    return Atoms(numbers=numbers, positions=np.concatenate(pos), cell=np.eye(3) * n * a, pbc=True)


def steps_per_s(atoms, calc, steps: int) -> float:
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(2)  # warm-up (first calls allocate)
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t0)


def time_split(pot, atoms, reps: int, device: str) -> dict[str, float]:
    """ms per call: neighbour list + graph, model forward (energy), backward (forces; stress if periodic)."""
    import torch

    from scifm.core.graph import atomic_graph, batch_graphs, edge_vectors, strained

    periodic = bool(atoms.pbc.all())
    t = {"nl_ms": 0.0, "forward_ms": 0.0, "backward_ms": 0.0}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for k in range(reps + 1):
        t0 = time.perf_counter()
        g = batch_graphs(
            [
                atomic_graph(
                    atoms.numbers,
                    atoms.positions,
                    pot.cutoff,
                    cell=atoms.cell.array if periodic else None,
                    pbc=atoms.pbc,
                    dtype=torch.float32,
                )
            ]
        ).to(device)
        sync()
        t1 = time.perf_counter()
        pos = g.pos.detach().requires_grad_(True)
        eps = torch.zeros(1, 3, 3, device=device, requires_grad=True)
        cell = g.cell.reshape(-1, 3, 3)
        pos_s, cell_s = strained(pos, cell, g.batch, eps) if periodic else (pos, cell)
        g.pos, g.cell = pos_s, cell_s
        g.edge_vec = edge_vectors(pos_s, cell_s, g.shifts, g.edge_index, g.batch)
        g.num_graphs = 1
        out = pot.model(g)
        energy = (pot.scale * out["node_energy"]).sum() + out.get(
            "physics_node_energy", out["node_energy"] * 0
        ).sum()
        sync()
        t2 = time.perf_counter()
        torch.autograd.grad(energy, [pos, eps] if periodic else [pos], allow_unused=True)
        sync()
        t3 = time.perf_counter()
        if k:  # skip the first (warm-up) repetition
            t["nl_ms"] += 1000 * (t1 - t0) / reps
            t["forward_ms"] += 1000 * (t2 - t1) / reps
            t["backward_ms"] += 1000 * (t3 - t2) / reps
    return t


MACE_SNIPPET = r"""
import json, sys, time, numpy as np, torch, ase.io
from ase import units
from ase.md.verlet import VelocityVerlet
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from mace.calculators import MACECalculator
torch.set_num_threads(int(sys.argv[4]))
calc = MACECalculator(model_paths=sys.argv[1], device=sys.argv[3], default_dtype="float32")
model = calc.models[0]
reps = int(sys.argv[6])
res = {}
for name, steps in json.loads(sys.argv[5]).items():
    atoms = ase.io.read(sys.argv[2] + f"/{name}.xyz")
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(2)
    t0 = time.perf_counter(); dyn.run(steps); sps = steps / (time.perf_counter() - t0)
    # split of one call, as for our models: neighbour list + graph, energy forward, the rest (forces/stress)
    periodic = bool(atoms.pbc.all())
    t = {"nl_ms": 0.0, "forward_ms": 0.0, "backward_ms": 0.0}
    for k in range(reps + 1):
        a = time.perf_counter(); batch = calc._atoms_to_batch(atoms); b = time.perf_counter()
        d = calc._clone_batch(batch).to_dict()
        model(d, compute_force=False, compute_stress=False, training=False); c = time.perf_counter()
        d = calc._clone_batch(batch).to_dict()
        model(d, compute_force=True, compute_stress=periodic, training=False); e = time.perf_counter()
        if k:
            t["nl_ms"] += 1000 * (b - a) / reps
            t["forward_ms"] += 1000 * (c - b) / reps
            t["backward_ms"] += 1000 * max(0.0, (e - c) - (c - b)) / reps
    res[name] = {"steps_per_s": sps, "n_parameters": sum(p.numel() for p in model.parameters()), **t}
print(json.dumps(res))
"""


def mace_speed(args, systems, steps) -> dict[str, dict]:
    import ase.io

    with tempfile.TemporaryDirectory() as tmp:
        for name, atoms in systems.items():
            ase.io.write(f"{tmp}/{name}.xyz", atoms, format="extxyz")
        script = Path(tmp) / "mace_speed.py"
        script.write_text(MACE_SNIPPET)
        python = str(Path(args.mace_venv) / "bin" / "python")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
        out = subprocess.run(
            [
                python,
                str(script),
                args.mace_model,
                tmp,
                args.device,
                str(args.threads),
                json.dumps(steps),
                str(args.reps),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="bamboo,painn,schnet,nequip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--steps", default="aspirin=50,water_box=5", help="MD steps timed per system")
    p.add_argument("--reps", type=int, default=5, help="repetitions of the forward/backward split")
    p.add_argument("--mace-model", default=None, help="MACE .model file (from rmd17_compare.py)")
    p.add_argument("--mace-venv", default=".venv-mace")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "mlip"))
    p.add_argument("--quick", action="store_true", help="smoke: tiny models, a 3x3x3 water box, few steps")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from scifm.mlip.calculator import SciFMCalculator
    from scifm.mlip.models.registry import build_model
    from scifm.mlip.potential import Potential

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    steps = {k: int(v) for k, v in (kv.split("=") for kv in args.steps.split(","))}
    if args.quick:
        steps, args.reps = {"aspirin": 3, "water_box": 2}, 1
    systems = {"aspirin": aspirin(), "water_box": water_box(3 if args.quick else 7)}
    sizes = QUICK_SIZES if args.quick else SIZES
    rows = []
    for model in [m for m in args.models.split(",") if m]:
        pot = (
            Potential(build_model(model, cutoff=5.0, elements=ELEMENTS, **sizes[model]))
            .to(args.device)
            .eval()
        )
        n_params = sum(p.numel() for p in pot.parameters())
        for name, atoms in systems.items():
            calc = SciFMCalculator(pot, dtype="float32", device=args.device, dispersion=None)
            row = {
                "model": model,
                "system": name,
                "n_atoms": len(atoms),
                "n_parameters": n_params,
                "steps_per_s": steps_per_s(atoms, calc, steps[name]),
                **time_split(calc.potential, atoms, args.reps, args.device),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.mace_model:
        for name, res in mace_speed(args, systems, steps).items():
            rows.append({"model": "mace", "system": name, "n_atoms": len(systems[name]), **res})
            print(json.dumps(rows[-1]), flush=True)

    from scifm.core.provenance import utc_timestamp, write_record

    name = "md-speed-quick" if args.quick else "md-speed"
    stamp = utc_timestamp().replace(":", "").replace("-", "")
    path = write_record(
        Path(args.results) / f"{name}-{stamp}.json",
        suite="mlip",
        name=name,
        title=f"MD steps/s through the ASE calculator (float32, {args.threads} threads, {args.device}, "
        "neighbour list every step)",
        rows=rows,
        columns={
            "steps_per_s": {"better": "higher", "unit": "1/s", "label": "MD steps/s"},
            "nl_ms": {"better": "lower", "unit": "ms", "label": "neighbour list"},
            "forward_ms": {"better": "lower", "unit": "ms", "label": "forward"},
            "backward_ms": {"better": "lower", "unit": "ms", "label": "backward"},
            "n_atoms": {"better": None, "label": "atoms"},
            "n_parameters": {"better": None, "label": "params"},
        },
        config={
            "threads": args.threads,
            "device": args.device,
            "steps": steps,
            "sizes": sizes,
            "mace_model": args.mace_model,
            "dtype": "float32",
        },
        seed=0,
        wall_time_s=time.perf_counter() - t_start,
        command=" ".join(sys.argv),
    )
    print(f"record written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
