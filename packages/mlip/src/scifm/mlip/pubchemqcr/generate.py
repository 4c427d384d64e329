"""Generate PubChemQCR-format data from SMILES: staged relaxations, every optimizer step recorded.

The original data are PubChemQC's PM3 -> HF -> DFT (B3LYP/6-31G*) geometry optimisations. We cannot run
those here at scale, so each stage is played by a cheaper method with the same role:

=========  ==========================  =======================================================
stage      method (default)            meaning here
=========  ==========================  =======================================================
pm3        GFN1-xTB, BFGS, fmax 0.3    coarse semi-empirical pre-relaxation from the raw embedding
hf         GFN1-xTB, LBFGS, fmax 0.05  tighter relaxation, continues from pm3's last geometry
DFT_1st    GFN2-xTB, BFGS, fmax 0.05   first "DFT" run (Firefly or SMASH upstream); from hf's last
DFT_2nd    GFN2-xTB, LBFGS, fmax 0.01  second "DFT" run continuing to a tight minimum (GAMESS upstream)
=========  ==========================  =======================================================

With ``dft="pyscf"``, molecules with at most ``pyscf_max_atoms`` atoms run both DFT stages with PySCF
B3LYP/6-31G* (the real level of theory; ~minutes per small molecule).

SMASH: upstream, SMASH computed part of DFT_1st and wrote no per-atom charges. Every ``smash_every``-th
molecule (index % smash_every == smash_every - 1) gets a DFT_1st written without ``charge`` entries, so
the reader's ``1st_smash`` stage and its missing-charge handling are exercised. ``mixing`` needs nothing
special: it reads DFT_1st and DFT_2nd together.

Geometry: RDKit ETKDGv3 with a fixed seed per molecule and *no* force-field clean-up (PubChemQC started
from raw structures too). Each stage starts from the previous stage's last geometry, so, as upstream,
the last coordinates of one stage equal the first of the next. Energies/gradients are written in
Hartree and Hartree/Bohr, dividing ASE's eV and eV/Å by the official loader's constants (27.2114 and
27.2114 x 1.8897), so the reader's conversions give back our eV numbers exactly (to float rounding).

Keys are synthetic CIDs ``900000000 + line index`` in the SMILES file (real CIDs are below 2e8), written
as 9-digit strings; ``molecules.json`` in the output maps them to SMILES and names.

Test-only option ``plant_quirks``: the first molecule gets ``DFT_1st = None``; the second gets, after its
first DFT_1st step, five copies of that step with: no energy, no gradient, one atom dropped, a NaN
energy, and no charges (the last one is valid and kept). The reader must skip and count each.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import pickle
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from scifm.core.errors import ConfigError, DataError

from .units import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV

RAW_STAGES = ("pm3", "hf", "DFT_1st", "DFT_2nd")
OPTIMIZERS = ("BFGS", "LBFGS", "FIRE")
METHODS = ("GFN1-xTB", "GFN2-xTB")
CID_BASE = 900_000_000
MAP_SIZE = 1 << 32  # bytes of address space per shard (the file grows only as needed)
_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def bundled_smiles_path() -> Path:
    return Path(__file__).with_name("molecules.smi")


def read_smiles(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(smiles, name) per line of a ``SMILES<TAB or space>name`` file ('#' comments); name defaults to
    ``mol<line>``. Default: the bundled list."""
    path = Path(path) if path is not None else bundled_smiles_path()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(path, f"cannot read SMILES file: {exc}") from None
    out = []
    for k, line in enumerate(lines):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        out.append((parts[0], parts[1].strip() if len(parts) > 1 else f"mol{k}"))
    if not out:
        raise DataError(path, "no SMILES in file")
    return out


@dataclass(frozen=True)
class StageProtocol:
    method: str  # GFN1-xTB | GFN2-xTB (| B3LYP/6-31G* when run by PySCF)
    fmax: float  # eV/Å
    max_steps: int
    optimizer: str  # BFGS | LBFGS | FIRE


DEFAULT_PROTOCOL: dict[str, StageProtocol] = {
    "pm3": StageProtocol("GFN1-xTB", 0.3, 150, "BFGS"),
    "hf": StageProtocol("GFN1-xTB", 0.05, 200, "LBFGS"),
    "DFT_1st": StageProtocol("GFN2-xTB", 0.05, 200, "BFGS"),
    "DFT_2nd": StageProtocol("GFN2-xTB", 0.01, 100, "LBFGS"),
}


@dataclass(frozen=True)
class GenSettings:
    protocol: dict = field(default_factory=lambda: dict(DEFAULT_PROTOCOL))
    dft: str = "xtb"  # xtb | pyscf
    pyscf_max_atoms: int = 8
    smash_every: int = 4  # 0: never write SMASH-style (charge-less) DFT_1st
    max_scf_iterations: int = 250


def check_settings(s: GenSettings) -> None:
    if set(s.protocol) != set(RAW_STAGES):
        raise ConfigError(f"protocol must define the stages {', '.join(RAW_STAGES)}")
    for name, p in s.protocol.items():
        if p.method not in METHODS:
            raise ConfigError(f"stage {name}: unknown method {p.method!r}; choose {', '.join(METHODS)}")
        if p.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"stage {name}: unknown optimizer {p.optimizer!r}; choose {', '.join(OPTIMIZERS)}"
            )
        if not p.fmax > 0 or p.max_steps < 1:
            raise ConfigError(f"stage {name}: fmax must be > 0 eV/Å and max_steps >= 1")
    if s.dft not in ("xtb", "pyscf"):
        raise ConfigError(f"--dft {s.dft}: choose xtb or pyscf")
    if s.smash_every < 0:
        raise ConfigError("--smash-every must be >= 0")


# ----------------------------------------------------------------------------------------------------------
# one molecule (runs in a worker)


def embed(smiles: str, seed: int, name: str = "", source: object = "SMILES"):
    """RDKit: parse, add hydrogens, one ETKDGv3 conformer (seeded), no force-field clean-up.

    Returns (symbols, positions [N,3] Å, formal charge, unpaired electrons)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    if mol is None:
        raise DataError(source, f"invalid SMILES {smiles!r}", record=name or None)
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise DataError(source, f"RDKit could not embed {smiles!r}", record=name or None)
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    pos = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
    uhf = int(sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms()))
    return symbols, pos, int(Chem.GetFormalCharge(mol)), uhf


def molecule_seed(seed: int, index: int) -> int:
    return zlib.crc32(f"pubchemqcr:{seed}:{index}".encode()) & 0x7FFFFFFF


class PySCFCalculator(Calculator):
    """Minimal ASE calculator: B3LYP/6-31G* energy (eV), forces (eV/Å) and Mulliken charges via PySCF."""

    implemented_properties = ["energy", "forces", "charges"]

    def __init__(self, charge: int = 0, spin: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.charge, self.spin = int(charge), int(spin)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from pyscf import dft, gto

        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        mol = gto.M(
            atom=[(s, tuple(p)) for s, p in zip(a.get_chemical_symbols(), a.positions, strict=True)],
            unit="Angstrom",
            basis="6-31g*",
            charge=self.charge,
            spin=self.spin,
            verbose=0,
        )
        mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
        mf.xc = "b3lyp"
        e = mf.kernel()
        if not mf.converged:
            raise CalculationFailed("PySCF SCF did not converge")
        g = mf.nuc_grad_method().kernel()  # Hartree/Bohr
        _, q = mf.mulliken_pop(verbose=0)
        # through the official constants so the writer's division gives PySCF's Hartree numbers back
        self.results = {
            "energy": e * HARTREE_TO_EV,
            "forces": -g * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
            "charges": np.asarray(q, dtype=np.float64),
        }


def _calculator(
    proto: StageProtocol, charge: int, uhf: int, settings: GenSettings, n_atoms: int, raw_stage: str
):
    if settings.dft == "pyscf" and raw_stage.startswith("DFT") and n_atoms <= settings.pyscf_max_atoms:
        return PySCFCalculator(charge=charge, spin=uhf), "B3LYP/6-31G*"
    from tblite.ase import TBLite

    return TBLite(
        method=proto.method,
        charge=charge,
        multiplicity=uhf + 1,
        verbosity=0,
        max_iterations=settings.max_scf_iterations,
    ), proto.method


def _step_dict(symbols, pos, energy_ev, forces, charges) -> dict:
    """One step in the original layout (Hartree, Hartree/Bohr), plain Python floats only."""
    grad = -np.asarray(forces, dtype=np.float64) / HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
    coords, grads = [], []
    for k, s in enumerate(symbols):
        c = {"atom": s, "x": float(pos[k, 0]), "y": float(pos[k, 1]), "z": float(pos[k, 2])}
        g = {"atom": s, "dx": float(grad[k, 0]), "dy": float(grad[k, 1]), "dz": float(grad[k, 2])}
        if charges is not None:
            c["charge"] = g["charge"] = float(charges[k])
        coords.append(c)
        grads.append(g)
    return {"coordinates": coords, "energy": float(energy_ev) / HARTREE_TO_EV, "gradient": grads}


def relax_stage(symbols, positions, calc, proto: StageProtocol, with_charges: bool = True):
    """Relax from ``positions`` recording every optimizer step (initial geometry included).

    Returns (steps list in the original layout, last positions [N,3], converged)."""
    from ase import Atoms
    from ase.calculators.calculator import CalculationFailed
    from ase.optimize import BFGS, FIRE, LBFGS

    atoms = Atoms(symbols=symbols, positions=positions)
    atoms.calc = calc
    steps: list[dict] = []

    def record():
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        q = calc.results.get("charges") if with_charges else None
        if not (math.isfinite(e) and np.isfinite(f).all()):
            raise CalculationFailed("non-finite energy or forces")
        steps.append(_step_dict(symbols, atoms.positions, e, f, q))

    opt = {"BFGS": BFGS, "LBFGS": LBFGS, "FIRE": FIRE}[proto.optimizer](atoms, logfile=None)
    opt.attach(record, interval=1)
    converged = False
    try:
        converged = bool(opt.run(fmax=proto.fmax, steps=proto.max_steps))
    except CalculationFailed:
        pass  # keep the steps recorded so far; the next stage starts from the last good geometry
    last = np.array([[c["x"], c["y"], c["z"]] for c in steps[-1]["coordinates"]]) if steps else positions
    return steps, last, converged


_UNPAIRED = {
    "H": 1,
    "B": 1,
    "C": 2,
    "N": 3,
    "O": 2,
    "F": 1,
    "Al": 1,
    "Si": 2,
    "P": 3,
    "S": 2,
    "Cl": 1,
    "Br": 1,
    "I": 1,
}


def atom_reference_energies(symbols: Iterable[str], settings: GenSettings) -> dict[str, dict[str, float]]:
    """Isolated-atom energies (Hartree) per raw stage for the elements given, with each stage's xTB method
    (ground-state spin: Hund's rule for the p-block). Written as ``atom_refs.json`` next to the shards so
    the reader's per-atom target is referenced with the method that made the data."""
    from ase import Atoms
    from ase.data import atomic_numbers
    from tblite.ase import TBLite

    out: dict[str, dict[str, float]] = {}
    cache: dict[tuple[str, str], float] = {}
    for raw_stage, proto in settings.protocol.items():
        table = {}
        for s in sorted(set(symbols)):
            if (proto.method, s) not in cache:
                uhf = _UNPAIRED.get(s, atomic_numbers[s] % 2)
                a = Atoms(s, positions=[[0.0, 0.0, 0.0]])
                a.calc = TBLite(method=proto.method, multiplicity=uhf + 1, verbosity=0)
                cache[(proto.method, s)] = a.get_potential_energy() / HARTREE_TO_EV
            table[s] = cache[(proto.method, s)]
        out[raw_stage] = table
    return out


def generate_record(
    index: int, smiles: str, seed: int, settings: GenSettings, name: str = ""
) -> tuple[dict, dict]:
    """One molecule -> (record {stage: [steps]}, info). Stages that produced no step are None."""
    t0 = time.perf_counter()
    symbols, pos, charge, uhf = embed(smiles, molecule_seed(seed, index), name)
    smash = settings.smash_every > 0 and index % settings.smash_every == settings.smash_every - 1
    record: dict = {}
    info = {
        "index": index,
        "cid": CID_BASE + index,
        "smiles": smiles,
        "name": name,
        "n_atoms": len(symbols),
        "smash_dft_1st": smash,
        "methods": {},
        "steps": {},
        "converged": {},
    }
    for raw_stage in RAW_STAGES:
        proto = settings.protocol[raw_stage]
        calc, method = _calculator(proto, charge, uhf, settings, len(symbols), raw_stage)
        steps, pos, conv = relax_stage(
            symbols, pos, calc, proto, with_charges=not (smash and raw_stage == "DFT_1st")
        )
        record[raw_stage] = steps or None
        info["methods"][raw_stage] = method
        info["steps"][raw_stage] = len(steps)
        info["converged"][raw_stage] = conv
    info["seconds"] = time.perf_counter() - t0
    return record, info


def plant_quirks(record: dict, kind: str) -> dict:
    """Test-only damage in the shapes the real data shows (see module docstring). Returns a new record."""
    rec = copy.deepcopy(record)
    if kind == "stage_none":
        rec["DFT_1st"] = None
    elif kind == "bad_steps":
        steps = rec["DFT_1st"]
        base = steps[0]
        no_e = copy.deepcopy(base)
        del no_e["energy"]
        no_g = copy.deepcopy(base)
        no_g["gradient"] = None
        short = copy.deepcopy(base)
        short["coordinates"], short["gradient"] = short["coordinates"][:-1], short["gradient"][:-1]
        nan = copy.deepcopy(base)
        nan["energy"] = float("nan")
        no_q = copy.deepcopy(base)
        for a in no_q["coordinates"] + no_q["gradient"]:
            a.pop("charge", None)
        rec["DFT_1st"] = [base, no_e, no_g, short, nan, no_q] + steps[1:]
    else:
        raise ValueError(f"unknown quirk kind {kind!r}")
    return rec


def _worker_init() -> None:
    os.environ.update(_THREAD_ENV)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _work(task):
    index, smiles, name, seed, settings = task
    try:
        record, info = generate_record(index, smiles, seed, settings, name)
        return index, record, info
    except Exception as exc:  # one bad molecule must not stop a long run; it is reported
        return (
            index,
            None,
            {
                "index": index,
                "cid": CID_BASE + index,
                "smiles": smiles,
                "name": name,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )


# ----------------------------------------------------------------------------------------------------------
# LMDB shards


def encode_value(record: dict) -> bytes:
    return gzip.compress(pickle.dumps(record, protocol=4))


class ShardWriter:
    """Writes ``DataNN.lmdb`` shards of ``shard_size`` molecules each; a shard appears (by rename) only once
    complete, so an interrupted run leaves no half-written shard under its final name."""

    def __init__(self, out: str | os.PathLike, shard_size: int = 1000, first_shard: int = 0):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.shard_size = int(shard_size)
        self.shard = first_shard
        self.count = 0
        self.env = None
        self.paths: list[Path] = []

    def _tmp(self) -> Path:
        return self.out / f".Data{self.shard:02d}.lmdb.partial"

    def put(self, cid: int, record: dict | bytes) -> None:
        import lmdb

        if self.env is None:
            tmp = self._tmp()
            if tmp.exists():
                tmp.unlink()
            self.env = lmdb.open(str(tmp), subdir=False, map_size=MAP_SIZE, lock=False, meminit=False)
        value = record if isinstance(record, bytes) else encode_value(record)
        with self.env.begin(write=True) as txn:
            txn.put(f"{int(cid):09d}".encode(), value)
        self.count += 1
        if self.count >= self.shard_size:
            self._finish()

    def _finish(self) -> None:
        if self.env is None:
            return
        self.env.sync()
        self.env.close()
        self.env = None
        final = self.out / f"Data{self.shard:02d}.lmdb"
        os.replace(self._tmp(), final)
        self.paths.append(final)
        self.shard += 1
        self.count = 0

    def close(self) -> list[Path]:
        self._finish()
        return self.paths


def write_shards(
    records: Iterable[tuple[int, dict | bytes]], out: str | os.PathLike, shard_size: int = 1000
) -> list[Path]:
    """(cid, record) pairs -> LMDB shards under ``out``. Returns the shard paths."""
    w = ShardWriter(out, shard_size)
    for cid, rec in records:
        w.put(cid, rec)
    return w.close()


# ----------------------------------------------------------------------------------------------------------
# the whole set


def generate_dataset(
    out: str | os.PathLike,
    molecules: Sequence[tuple[int, str, str]] | None = None,
    n_molecules: int | None = None,
    seed: int = 42,
    settings: GenSettings | None = None,
    workers: int = 1,
    shard_size: int = 1000,
    plant: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Generate shards under ``out`` from ``molecules`` = [(index, smiles, name)] (default: the bundled list,
    first ``n_molecules``). Returns the generation summary (also written to ``out/generation.json``)."""
    settings = settings or GenSettings()
    check_settings(settings)
    out = Path(out)
    if molecules is None:
        molecules = [(k, s, n) for k, (s, n) in enumerate(read_smiles())]
    molecules = list(molecules)[: n_molecules if n_molecules is not None else None]
    if not molecules:
        raise ConfigError("no molecules to generate")
    if workers < 1:
        raise ConfigError("--workers must be >= 1")
    existing = sorted(out.glob("Data*.lmdb")) if out.is_dir() else []
    if existing and not overwrite:
        raise ConfigError(
            f"{out}: already holds shards ({existing[0].name}, ...); pass --overwrite or choose another --out"
        )
    for p in existing:
        p.unlink()
    for k, (_, smi, name) in enumerate(molecules):  # validate every SMILES before any xTB work
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")
        if not smi.strip() or Chem.MolFromSmiles(smi) is None:
            raise DataError("SMILES list", f"invalid SMILES {smi!r}", record=name or k)
    tasks = [(index, smi, name, seed, settings) for index, smi, name in molecules]
    t0 = time.perf_counter()
    writer = ShardWriter(out, shard_size)
    infos = []
    if workers == 1:
        if "tblite" not in sys.modules:  # thread settings only bite before the library is loaded
            for k, v in _THREAD_ENV.items():
                os.environ.setdefault(k, v)
        results = map(_work, tasks)
        pool = None
    else:
        import multiprocessing as mp

        saved = {k: os.environ.get(k) for k in _THREAD_ENV}
        os.environ.update(_THREAD_ENV)  # inherited by the spawned workers before they import tblite
        pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        results = pool.imap(_work, tasks)  # ordered: shards are identical whatever the worker count
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(tasks), desc="PubChemQCR generate", unit="mol")
    try:
        for pos, (index, record, info) in enumerate(results):
            infos.append(info)
            if record is None:
                continue
            if plant and pos == 0:
                record = plant_quirks(record, "stage_none")
            elif plant and pos == 1:
                record = plant_quirks(record, "bad_steps")
            writer.put(CID_BASE + index, record)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    shards = writer.close()
    ok = [i for i in infos if "error" not in i]
    summary = {
        "n_molecules": len(ok),
        "n_failed": len(infos) - len(ok),
        "failed": [
            {"name": i["name"], "smiles": i["smiles"], "error": i["error"]} for i in infos if "error" in i
        ],
        "steps_per_stage": {s: int(sum(i["steps"][s] for i in ok)) for s in RAW_STAGES},
        "n_steps": int(sum(sum(i["steps"].values()) for i in ok)),
        "shards": [p.name for p in shards],
        "bytes_on_disk": int(sum(p.stat().st_size for p in shards)),
        "seconds": time.perf_counter() - t0,
        "workers": workers,
        "seed": seed,
        "settings": {
            "dft": settings.dft,
            "pyscf_max_atoms": settings.pyscf_max_atoms,
            "smash_every": settings.smash_every,
            "protocol": {k: asdict(v) for k, v in settings.protocol.items()},
        },
        "planted_quirks": plant,
    }
    elements = set()
    for i in ok:
        from rdkit import Chem

        m = Chem.AddHs(Chem.MolFromSmiles(i["smiles"]))
        elements.update(a.GetSymbol() for a in m.GetAtoms())
    if elements:
        _write_json(out / "atom_refs.json", atom_reference_energies(elements, settings))
    _write_json(
        out / "molecules.json", {str(i["cid"]): {k: i[k] for k in i if k not in ("cid",)} for i in infos}
    )
    _write_json(out / "generation.json", summary)
    return summary


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# CLI: ``sci-fm data pubchemqcr``


def _parse_stage_map(text: str | None, cast, flag: str) -> dict:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in RAW_STAGES:
            raise ConfigError(
                f"--{flag} {text!r}: expected STAGE=VALUE pairs with STAGE in {', '.join(RAW_STAGES)}"
            )
        try:
            out[key.strip()] = cast(value)
        except ValueError:
            raise ConfigError(f"--{flag}: bad value {value!r} for {key}") from None
    return out


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/pubchemqcr", help="output folder for DataNN.lmdb shards")
    p.add_argument(
        "--smiles", default=None, help="SMILES file (SMILES name per line); default: the bundled list"
    )
    p.add_argument("--n-molecules", type=int, default=None, help="use the first N molecules of the list")
    p.add_argument("--start", type=int, default=0, help="skip the first START molecules of the list")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one thread each)")
    p.add_argument("--shard-size", type=int, default=1000, help="molecules per LMDB shard")
    p.add_argument(
        "--dft",
        choices=["xtb", "pyscf"],
        default="xtb",
        help="DFT stages with GFN2-xTB, or PySCF B3LYP/6-31G* for small molecules",
    )
    p.add_argument(
        "--pyscf-max-atoms", type=int, default=8, help="largest molecule run with PySCF when --dft pyscf"
    )
    p.add_argument(
        "--fmax", default=None, help="per-stage force thresholds, e.g. pm3=0.3,DFT_2nd=0.01 (eV/Å)"
    )
    p.add_argument("--max-steps", default=None, help="per-stage step limits, e.g. pm3=100,hf=200")
    p.add_argument(
        "--smash-every",
        type=int,
        default=4,
        help="every N-th molecule's DFT_1st is written SMASH-style (no charges); 0 = never",
    )
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plant-quirks", action="store_true", help=argparse.SUPPRESS)  # tests only


def settings_from_args(args) -> GenSettings:
    fmax = _parse_stage_map(args.fmax, float, "fmax")
    steps = _parse_stage_map(args.max_steps, int, "max-steps")
    protocol = {}
    for s, p in DEFAULT_PROTOCOL.items():
        protocol[s] = StageProtocol(p.method, fmax.get(s, p.fmax), steps.get(s, p.max_steps), p.optimizer)
    return GenSettings(
        protocol=protocol, dft=args.dft, pyscf_max_atoms=args.pyscf_max_atoms, smash_every=args.smash_every
    )


def run(args) -> int:
    settings = settings_from_args(args)
    check_settings(settings)
    mols = [(k, s, n) for k, (s, n) in enumerate(read_smiles(args.smiles))][args.start :]
    summary = generate_dataset(
        args.out,
        mols,
        n_molecules=args.n_molecules,
        seed=args.seed,
        settings=settings,
        workers=args.workers,
        shard_size=args.shard_size,
        plant=args.plant_quirks,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {summary['n_molecules']} molecules ({summary['n_steps']} steps, "
        f"{summary['n_failed']} failed) "
        f"to {args.out} in {summary['seconds']:.0f} s; {summary['bytes_on_disk'] / 1e6:.1f} MB"
    )
    return 0
