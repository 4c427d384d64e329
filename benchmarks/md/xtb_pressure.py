"""Is a model's liquid density its reference's? Intermolecular pressure of bulk frames: model vs GFN2-xTB.

The density of an NPT run is set by the intermolecular part of the pressure. For one frame it is

    P_inter = -dE/dV at fixed molecular geometries (molecule centres of mass scaled with the cell)

by central differences (cell and centres scaled by 1 ± h; every molecule rigid), for the model (with the
dispersion tail, as the MD ran) and for GFN2-xTB (tblite, periodic) on the same frames; the Coulomb part of
the model is the difference with its Coulomb term switched off. The atomic virial is not compared: small
differences in bond lengths between two potentials put kilobars into it that do not move the density.

    uv run python benchmarks/md/xtb_pressure.py --model runs/ef_small/teacher0_r2 \
        --trajectory runs/ef_small/npt_committee/EC/traj.extxyz runs/ef_small/npt_committee/DMC/traj.extxyz \
        --frames 2 --out benchmarks/results/md

Writes a ``scifm-bench/1`` record ``xtb-pressure-<stamp>.json``. Costs two GFN2-xTB single points per frame
(~40 s each for 400 atoms on one core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def scaled(atoms, pos, com, mol, s: float):
    """The frame with cell and molecular centres scaled by ``s``, each molecule rigid."""
    a = atoms.copy()
    a.set_cell(np.asarray(atoms.cell) * s, scale_atoms=False)
    a.positions = pos + (s - 1.0) * com[mol]
    return a


def inter_pressure_bar(atoms, make_calc, h: float = 0.002) -> float:
    """-dE/dV (bar) under rigid-molecule scaling, central difference with relative step ``h``."""
    from ase import units

    from scifm.md.clusters import molecule_ids, whole_molecules

    mol = molecule_ids(atoms)
    pos = whole_molecules(atoms, mol)
    m = atoms.get_masses()
    com = np.stack([np.average(pos[mol == k], axis=0, weights=m[mol == k]) for k in range(mol.max() + 1)])
    e = []
    for s in (1.0 + h, 1.0 - h):
        a = scaled(atoms, pos, com, mol, s)
        a.calc = make_calc()
        e.append(float(a.get_potential_energy()))
    dv = atoms.get_volume() * ((1.0 + h) ** 3 - (1.0 - h) ** 3)
    return -(e[0] - e[1]) / dv / units.bar


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--trajectory", nargs="+", required=True)
    p.add_argument("--frames", type=int, default=2, help="last frames of each trajectory")
    p.add_argument("--temperature", type=float, default=298.0, help="K, for the molecular kinetic term")
    p.add_argument("--out", default="benchmarks/results/md")
    a = p.parse_args()
    import ase.io
    from ase import units
    from tblite.ase import TBLite

    from scifm.core.provenance import utc_timestamp, write_record
    from scifm.md.clusters import molecule_ids
    from scifm.md.committee import make_member, resolve_model_dir
    from scifm.md.thermo import density_g_cm3

    t0 = time.time()
    model = resolve_model_dir(a.model)

    def ours(coulomb: bool = True):
        calc = make_member(model, dtype="float64", dispersion="auto", dispersion_tail=True)
        calc.potential.model.coulomb = coulomb
        return calc

    rows = []
    for traj in a.trajectory:
        for k, atoms in enumerate(ase.io.read(traj, ":")[-a.frames :]):
            p_model = inter_pressure_bar(atoms, ours)
            p_nocoul = inter_pressure_bar(atoms, lambda: ours(False))
            p_xtb = inter_pressure_bar(atoms, lambda: TBLite(method="GFN2-xTB", verbosity=0))
            n_mol = int(molecule_ids(atoms).max()) + 1
            kinetic = n_mol * units.kB * a.temperature / atoms.get_volume() / units.bar
            row = {
                "system": Path(traj).parent.name,
                "frame": k - a.frames,
                "density_g_cm3": density_g_cm3(atoms),
                "p_inter_model_bar": p_model,
                "p_inter_model_coulomb_bar": p_model - p_nocoul,
                "p_inter_gfn2_bar": p_xtb,
                "model_minus_gfn2_bar": p_model - p_xtb,
                "molecular_kinetic_bar": kinetic,
            }
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    stamp = utc_timestamp().replace(":", "").replace("-", "")
    unit = {"unit": "bar"}
    write_record(
        Path(a.out) / f"xtb-pressure-{stamp}.json",
        suite="md",
        name="xtb-pressure",
        title="Intermolecular pressure of bulk frames at the model's own density: model vs GFN2-xTB",
        rows=rows,
        columns={
            "density_g_cm3": {"better": None, "unit": "g/cm³", "label": "ρ of the frame"},
            "p_inter_model_bar": {"better": None, "label": "P_inter model", **unit},
            "p_inter_gfn2_bar": {"better": None, "label": "P_inter GFN2-xTB", **unit},
            "model_minus_gfn2_bar": {"better": None, "label": "model − GFN2", **unit},
            "molecular_kinetic_bar": {"better": None, "label": "N_mol kT/V", **unit},
        },
        config={"model": str(a.model), "trajectories": a.trajectory, "frames": a.frames},
        seed=0,
        wall_time_s=time.time() - t0,
        command=" ".join(["benchmarks/md/xtb_pressure.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
