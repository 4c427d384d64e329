"""Which force-field terms drive the SNIS log-weights of a `sci-fm sample prose` run?

Reads `samples.npz` of a sampling run (proposals and their log-weights), evaluates every force of the target
System separately on the proposals, and prints (a) the fraction of clashes (total beta*U more than 30 above
the median: proposals with ~zero weight) and (b) for the other proposals the spread of each term and its
correlation with log w. A term with a large spread and a strongly negative correlation is where the flow's
proposals miss the Boltzmann distribution.

    uv run python benchmarks/prose/logw_terms.py --run runs/pep_transfer/zero_shot_WT_snis \
        --data runs/pep_transfer/dipeptides.h5 --sequence WT
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def term_table(samples: str, data: str, sequence: str, n: int = 3000, clash_kT: float = 30.0) -> dict:
    import openmm as mm
    import openmm.unit as u

    from scifm.prose.data import PeptideMDFile
    from scifm.prose.peptides import create_system, kT_kJ_per_mol, select_platform, topology_from_pdb

    z = np.load(samples)
    info = PeptideMDFile(data).info[sequence]
    top, _ = topology_from_pdb(info["topology_pdb"])
    system = create_system(top, info["force_field"])
    names = []
    for g, force in enumerate(system.getForces()):
        force.setForceGroup(g)
        names.append(type(force).__name__)
    plat, props = select_platform("Reference")
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), plat, props)
    kT = kT_kJ_per_mol(float(info["temperature_K"]))
    logw = z["logw"]
    idx = np.flatnonzero(np.isfinite(logw))[:n]
    terms = np.zeros((len(idx), len(names)))
    for r, i in enumerate(idx):
        ctx.setPositions(z["proposal_nm"][i].astype(np.float64) * u.nanometer)
        for g in range(len(names)):
            state = ctx.getState(getEnergy=True, groups={g})
            terms[r, g] = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) / kT
    total = terms.sum(axis=1)
    keep = total < np.median(total) + clash_kT
    lw = logw[idx][keep]
    w = np.exp(lw - lw.max())
    out = dict(
        sequence=sequence,
        proposals=int(len(idx)),
        clash_fraction=float(1 - keep.mean()),
        logw_std_without_clashes=float(lw.std()),
        ess_without_clashes=float(w.sum() ** 2 / (w**2).sum() / len(lw)),
        terms={},
    )
    for g, name in enumerate(names):
        t = terms[keep, g]
        if t.std() > 1e-9:
            out["terms"][name] = dict(std_kT=float(t.std()), corr_with_logw=float(np.corrcoef(lw, t)[0, 1]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="output folder of `sci-fm sample prose` (holds samples.npz)")
    p.add_argument("--data", required=True, help="peptide_md file with the sequence's topology")
    p.add_argument("--sequence", required=True)
    p.add_argument("--n", type=int, default=3000, help="proposals evaluated")
    a = p.parse_args()
    print(json.dumps(term_table(f"{a.run}/samples.npz", a.data, a.sequence, a.n), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
