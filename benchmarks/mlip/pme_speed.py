"""Reciprocal-space Coulomb: plain Ewald (sum over k-vectors) vs smooth particle-mesh Ewald, time of one
energy evaluation + backward (forces and the cell derivative, as in an NPT MD step) for random neutral
charges at liquid density (0.1 atoms/Å³) in cubic boxes, with BAMBOO's Ewald parameters (real-space cutoff
5 Å, accuracy 1e-6: α = 0.743 /Å, k_cut = 5.53 /Å), PME at spline order 6 and the default mesh.

    OMP_NUM_THREADS=1 uv run python benchmarks/mlip/pme_speed.py      # record -> benchmarks/results/mlip/
    uv run python benchmarks/mlip/pme_speed.py --sizes 100 376 --device cuda

The table gives milliseconds per evaluation (median of the repeats), the speed-up and, in float64, the
relative difference of the PME reciprocal energy from the Ewald one.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from scifm.mlip.physics.coulomb import (
    ewald_parameters,
    pme_mesh_shape,
    pme_node_energy,
    reciprocal_node_energy,
)

DENSITY = 0.1  # atoms/Å³


def system(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    length = (n / DENSITY) ** (1 / 3)
    q = rng.normal(size=n) * 0.5
    return rng.uniform(0, length, (n, 3)), np.eye(3) * length, q - q.mean()


def time_call(fn, min_time: float, max_repeats: int) -> tuple[float, float]:
    """(median seconds per call, energy) after one warm-up call; repeats until min_time has passed."""
    energy = fn()
    times = []
    while len(times) < max_repeats and (not times or sum(times) < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), energy


def energy_and_backward(fn, q, pos, cell, alpha, k_cut, **kw):
    """A call of fn(q, pos, cell, ...).sum() and its backward to positions and a strain of the cell."""

    def call() -> float:
        x = pos.clone().requires_grad_(True)
        eps = torch.zeros(3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
        d = torch.eye(3, dtype=pos.dtype, device=pos.device) + eps
        e = fn(q, x @ d, cell @ d, alpha, k_cut, **kw).sum()
        e.backward()
        if pos.device.type == "cuda":
            torch.cuda.synchronize()
        return float(e.detach())

    return call


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 376, 1000, 3000])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--order", type=int, default=6)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed repeats per entry")
    ap.add_argument("--max-repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as plain JSON here")
    ap.add_argument(
        "--results",
        default=str(Path(__file__).resolve().parents[1] / "results" / "mlip"),
        help="folder of the scifm-bench record ('' for none)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    alpha, k_cut = ewald_parameters(5.0, 1e-6)
    device = torch.device(args.device)

    rows = []
    print(
        f"{'N':>5} {'box/Å':>6} {'dtype':>7} {'K(half)':>8} {'mesh':>12} {'Ewald ms':>9} {'PME ms':>8} "
        f"{'speed-up':>8} {'rel.diff':>9}"
    )
    for n in args.sizes:
        pos, cell, q = system(n)
        for dt_name in args.dtypes:
            dtype = getattr(torch, dt_name)
            qt = torch.as_tensor(q, dtype=dtype, device=device)
            xt = torch.as_tensor(pos, dtype=dtype, device=device)
            ct = torch.as_tensor(cell, dtype=dtype, device=device)

            ew = energy_and_backward(reciprocal_node_energy, qt, xt, ct, alpha, k_cut)
            pme = energy_and_backward(pme_node_energy, qt, xt, ct, alpha, k_cut, order=args.order)
            t_ew, e_ew = time_call(ew, args.min_time, args.max_repeats)
            t_pme, e_pme = time_call(pme, args.min_time, args.max_repeats)
            lengths = np.linalg.norm(cell, axis=1)
            nmax = np.ceil(k_cut * lengths / (2 * math.pi)).astype(int)
            grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in nmax], indexing="ij"), -1).reshape(
                -1, 3
            )
            k = 2 * math.pi * grid @ np.linalg.inv(cell).T
            n_k = int(((np.linalg.norm(k, axis=1) < k_cut) & (np.abs(grid).sum(1) > 0)).sum() // 2)
            mesh = pme_mesh_shape(ct, k_cut, args.order)
            row = {
                "n_atoms": n,
                "box_A": float(cell[0, 0]),
                "dtype": dt_name,
                "device": str(device),
                "threads": args.threads,
                "n_kvectors_half": n_k,
                "mesh": "x".join(map(str, mesh)),
                "order": args.order,
                "ewald_ms": 1e3 * t_ew,
                "pme_ms": 1e3 * t_pme,
                "speedup": t_ew / t_pme,
                "rel_diff": abs(e_pme - e_ew) / abs(e_ew),
            }
            rows.append(row)
            print(
                f"{n:>5} {row['box_A']:>6.1f} {dt_name:>7} {n_k:>8} {'x'.join(map(str, mesh)):>12} "
                f"{row['ewald_ms']:>9.1f} {row['pme_ms']:>8.1f} {row['speedup']:>8.1f} "
                f"{row['rel_diff']:>9.1e}",
                flush=True,
            )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    if args.results:
        import sys

        from scifm.core.provenance import utc_timestamp, write_record

        stamp = utc_timestamp().replace(":", "").replace("-", "")
        path = write_record(
            Path(args.results) / f"pme-speed-{stamp}.json",
            suite="mlip",
            name="pme-speed",
            title="Reciprocal-space Coulomb: Ewald k-sum vs smooth PME (energy + backward, BAMBOO's Ewald)",
            rows=rows,
            columns={
                "ewald_ms": {"better": "lower", "unit": "ms", "label": "Ewald"},
                "pme_ms": {"better": "lower", "unit": "ms", "label": "PME"},
                "speedup": {"better": "higher", "unit": "", "label": "Ewald / PME"},
                "rel_diff": {"better": "lower", "unit": "", "label": "|ΔE|/E"},
            },
            config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            seed=0,
            command=" ".join(sys.argv),
        )
        print(f"record written to {path}")
    return rows


if __name__ == "__main__":
    main()
