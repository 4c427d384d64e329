"""Generate MLIP training frames for small molecules, labelled with GFN2-xTB (tblite).

Pipeline per molecule: SMILES -> RDKit (AddHs, ETKDG with a fixed seed) -> optional xTB relaxation ->
(a) ``n_perturbed`` random Gaussian displacements of the relaxed geometry and (b) ``n_md`` frames of a
Langevin MD driven by xTB (saved every ``md_interval`` steps after ``md_warmup`` steps).

Every frame is an ``ase.Atoms`` carrying, in ASE units:

- ``atoms.calc``: a ``SinglePointCalculator`` with ``energy`` (total xTB energy, eV) and ``forces`` (eV/Å),
- ``atoms.arrays["charges"]``: Mulliken partial charges from tblite, shape [n_atoms], e (they sum to the
  total charge),
- ``atoms.info``: ``dipole`` (3-vector, e·Å, about the origin of the frame's coordinates), ``charge``
  (total charge, e), ``traj_id`` (``2 * molecule_index + {0 perturbed, 1 md}``), ``step`` (perturbation
  index or MD step), ``molecule``, ``smiles``, ``level_of_theory``, ``source`` (``"perturbed"`` | ``"md"``).

Units of tblite: its library returns Hartree, Hartree/Bohr and e·Bohr; ``tblite.ase.TBLite`` converts them
to eV, eV/Å and e·Å (its docstring says Debye for the dipole, but the code multiplies the e·Bohr value by
``ase.units.Bohr``, which gives e·Å; the tests check the magnitude of water's dipole to pin this down).

The same ``seed`` and molecule list give the same frames, whatever the number of workers: every molecule
draws from its own random stream ``SeedSequence([seed, index])``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scifm.core.errors import ConfigError, DataError

METHODS = ("GFN2-xTB", "GFN1-xTB")
MAX_Z = 86  # GFN1/GFN2-xTB are parametrised for H..Rn
SOURCES = ("perturbed", "md")
# Environment for workers: one OpenMP/BLAS thread each, set before tblite (or numpy's BLAS) is loaded.
_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


@dataclass(frozen=True)
class Settings:
    """Generation settings (units in the names' comments); validated by :func:`check_settings`."""

    n_perturbed: int = 20
    n_md: int = 60
    md_temperature: float = 500.0  # K, Langevin bath
    md_timestep: float = 0.5  # fs
    md_interval: int = 40  # MD steps between saved frames
    md_warmup: int = 200  # MD steps before the first saved frame
    md_friction: float = 0.01  # 1/fs, Langevin friction
    perturb_sigma: float = 0.05  # Å, std of the Gaussian displacement per Cartesian coordinate
    method: str = "GFN2-xTB"
    optimize: bool = True  # relax the RDKit geometry with xTB (BFGS) first
    fmax: float = 0.05  # eV/Å, relaxation threshold
    max_scf_iterations: int = 250


@dataclass(frozen=True)
class Molecule:
    """A validated molecule: its embedded RDKit geometry, ready for xTB."""

    index: int
    name: str
    smiles: str
    numbers: np.ndarray  # [n_atoms] atomic numbers
    positions: np.ndarray  # [n_atoms, 3] Å
    charge: int  # total formal charge, e
    uhf: int  # number of unpaired electrons


# ----------------------------------------------------------------------------------------------------------
# validation and embedding (cheap; done in the parent before any xTB work)


def check_settings(s: Settings) -> None:
    """Raise ConfigError for a setting that cannot work."""

    def bad(flag: str, value: object, why: str) -> ConfigError:
        return ConfigError(f"--{flag} {value}: {why}")

    if s.n_perturbed < 0:
        raise bad("n-perturbed", s.n_perturbed, "must be >= 0")
    if s.n_md < 0:
        raise bad("n-md", s.n_md, "must be >= 0")
    if s.n_perturbed + s.n_md == 0:
        raise ConfigError("--n-perturbed and --n-md are both 0: nothing to generate")
    if s.method not in METHODS:
        raise bad("method", s.method, f"unknown xTB method; choose one of {', '.join(METHODS)}")
    if not 0.0 <= s.perturb_sigma <= 0.5:
        raise bad("perturb-sigma", s.perturb_sigma, "must be in [0, 0.5] Å (larger breaks molecules)")
    if s.n_md > 0:
        if not s.md_temperature > 0:
            raise bad("md-temperature", s.md_temperature, "must be > 0 K")
        if not 0 < s.md_timestep <= 2.0:
            raise bad("md-timestep", s.md_timestep, "must be in (0, 2] fs (hydrogens move fast)")
        if s.md_interval < 1:
            raise bad("md-interval", s.md_interval, "must be >= 1 step")
        if s.md_warmup < 0:
            raise bad("md-warmup", s.md_warmup, "must be >= 0 steps")
        if not s.md_friction > 0:
            raise bad("md-friction", s.md_friction, "must be > 0 1/fs")
    if not s.fmax > 0:
        raise bad("fmax", s.fmax, "must be > 0 eV/Å")
    if s.max_scf_iterations < 1:
        raise bad("max-scf-iterations", s.max_scf_iterations, "must be >= 1")


def molecule_seed(seed: int, index: int) -> int:
    """A 31-bit seed for RDKit, fixed by (seed, molecule index)."""
    return zlib.crc32(f"{seed}:{index}".encode()) & 0x7FFFFFFF


def embed(index: int, name: str, smiles: str, seed: int, source: str = "--smiles") -> Molecule:
    """Parse ``smiles``, add hydrogens and embed one 3-D conformer with ETKDG (seeded).

    ``source`` names where the SMILES came from (a file, or the flag) for the error message.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # RDKit prints parse errors to stderr; we raise our own
    mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    if mol is None:
        raise DataError(source, f"invalid SMILES {smiles!r}: RDKit cannot parse it", record=name)
    heavy = [a.GetAtomicNum() for a in mol.GetAtoms()]
    if any(z < 1 or z > MAX_Z for z in heavy):
        bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if not 1 <= a.GetAtomicNum() <= MAX_Z})
        raise DataError(
            source,
            f"SMILES {smiles!r} has element(s) {', '.join(bad)} that xTB does not "
            f"cover (H..Rn, Z <= {MAX_Z})",
            record=name,
        )
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = molecule_seed(seed, index)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise DataError(source, f"RDKit could not embed a 3-D geometry for SMILES {smiles!r}", record=name)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
    charge = int(Chem.GetFormalCharge(mol))
    uhf = int(sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms()))
    return Molecule(index, name, smiles, numbers, positions, charge, uhf)


# ----------------------------------------------------------------------------------------------------------
# xTB work (runs in a worker process, or in-process with one worker)


def _calculator(mol: Molecule, s: Settings):
    from tblite.ase import TBLite

    return TBLite(
        method=s.method,
        charge=mol.charge,
        multiplicity=mol.uhf + 1,
        verbosity=0,
        max_iterations=s.max_scf_iterations,
    )


def _label(atoms) -> dict[str, Any] | None:
    """xTB labels of ``atoms`` (calculator attached), or None if the SCF failed or gave non-finite output."""
    from ase.calculators.calculator import CalculationFailed

    try:
        energy = float(atoms.get_potential_energy())
        # raw xTB forces: the MD's FixCom constraint must not leak into the labels
        forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
        charges = np.array(atoms.calc.get_property("charges", atoms), dtype=np.float64)
        dipole = np.array(atoms.calc.get_property("dipole", atoms), dtype=np.float64)
    except CalculationFailed:
        return None
    if not (
        math.isfinite(energy)
        and np.isfinite(forces).all()
        and np.isfinite(charges).all()
        and np.isfinite(dipole).all()
    ):
        return None
    return {
        "positions": np.array(atoms.positions, dtype=np.float64),
        "energy": energy,
        "forces": forces,
        "charges": charges,
        "dipole": dipole,
    }


def _relax(atoms, s: Settings) -> str | None:
    """BFGS-relax in place; returns a warning text on failure (the run goes on from the last geometry)."""
    from ase.calculators.calculator import CalculationFailed
    from ase.optimize import BFGS

    try:
        BFGS(atoms, logfile=None).run(fmax=s.fmax, steps=500)
    except CalculationFailed as exc:
        return f"xTB relaxation stopped after an SCF failure ({exc}); sampling from the last geometry"
    return None


def label_molecule(
    mol: Molecule, s: Settings, seed: int, on_frame: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """All frames of one molecule.

    Returns ``{"index", "frames": [dict(source, step, positions, energy, forces, charges, dipole)],
    "skipped": int, "notes": [str]}``; ``on_frame(n)`` is called as frames are done (progress).
    """
    from ase import Atoms, units
    from ase.calculators.calculator import CalculationFailed
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    tick = on_frame or (lambda n: None)
    # Separate streams so that changing n_perturbed leaves the MD frames unchanged (and vice versa).
    perturb_ss, md_ss = np.random.SeedSequence([seed, mol.index]).spawn(2)
    frames: list[dict[str, Any]] = []
    notes: list[str] = []
    skipped = 0

    atoms = Atoms(numbers=mol.numbers, positions=mol.positions)
    atoms.calc = _calculator(mol, s)
    if s.optimize:
        note = _relax(atoms, s)
        if note:
            notes.append(note)
    start = np.array(atoms.positions)

    rng = np.random.default_rng(perturb_ss)
    for k in range(s.n_perturbed):
        atoms.positions = start + rng.normal(0.0, s.perturb_sigma, size=start.shape)
        rec = _label(atoms)
        if rec is None:
            skipped += 1
        else:
            frames.append({"source": "perturbed", "step": k, **rec})
        tick(1)

    if s.n_md > 0:
        rng = np.random.default_rng(md_ss)
        atoms.positions = start
        # ASE 3.29 renamed MaxwellBoltzmannDistribution to thermalize_momenta (same draws from rng).
        thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
        thermalize(atoms, temperature_K=s.md_temperature, rng=rng)
        vd.Stationary(atoms)
        vd.ZeroRotation(atoms)
        atoms.set_constraint(FixCom())  # no drift of the molecule; ASE's recommended form of fixcm
        dyn = Langevin(
            atoms,
            timestep=s.md_timestep * units.fs,
            temperature_K=s.md_temperature,
            friction=s.md_friction / units.fs,
            fixcm=False,
            rng=rng,
        )
        done = 0
        try:
            if s.md_warmup:
                dyn.run(s.md_warmup)
            for _ in range(s.n_md):
                dyn.run(s.md_interval)
                # The integrator evaluated xTB at these positions last; _label reads the cached results.
                # Each SCF starts from the previous density, so labels match a from-scratch call to the
                # SCF tolerance (~1e-5 eV/Å).
                rec = _label(atoms)
                if rec is None:
                    raise CalculationFailed("non-finite xTB result")
                frames.append({"source": "md", "step": int(dyn.nsteps), **rec})
                done += 1
                tick(1)
        except CalculationFailed as exc:
            missing = s.n_md - done
            skipped += missing
            tick(missing)
            notes.append(
                f"MD stopped at step {dyn.nsteps} after an xTB SCF failure ({exc}); "
                f"{missing} MD frame(s) missing"
            )
    return {"index": mol.index, "frames": frames, "skipped": skipped, "notes": notes}


def _init_worker() -> None:
    os.environ.update(_THREAD_ENV)


def _worker(task: tuple[Molecule, Settings, int]) -> dict[str, Any]:
    mol, s, seed = task
    return label_molecule(mol, s, seed)


# ----------------------------------------------------------------------------------------------------------
# the public API


def generate(
    molecules: Sequence[tuple[str, str]],
    n_perturbed: int = 20,
    n_md: int = 60,
    *,
    md_temperature: float = 500.0,
    md_timestep: float = 0.5,
    md_interval: int = 40,
    md_warmup: int = 200,
    md_friction: float = 0.01,
    perturb_sigma: float = 0.05,
    method: str = "GFN2-xTB",
    optimize: bool = True,
    fmax: float = 0.05,
    max_scf_iterations: int = 250,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    source: str = "--smiles",
) -> list:
    """xTB-labelled frames for ``molecules`` (a list of ``(name, smiles)``); see the module docstring.

    Units: ``md_temperature`` K, ``md_timestep`` fs, ``md_friction`` 1/fs, ``perturb_sigma`` Å, ``fmax`` eV/Å.
    Frames come back ordered by molecule, then perturbed before MD, then step; frames whose SCF failed are
    skipped and counted in one ``RuntimeWarning``. ``source`` names the molecules' origin in errors.
    Returns ``list[ase.Atoms]``.
    """
    s = Settings(
        n_perturbed=n_perturbed,
        n_md=n_md,
        md_temperature=md_temperature,
        md_timestep=md_timestep,
        md_interval=md_interval,
        md_warmup=md_warmup,
        md_friction=md_friction,
        perturb_sigma=perturb_sigma,
        method=method,
        optimize=optimize,
        fmax=fmax,
        max_scf_iterations=max_scf_iterations,
    )
    check_settings(s)
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if not molecules:
        raise ConfigError("no molecules given")
    names = [n for n, _ in molecules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"molecule name(s) given twice: {', '.join(dup)}")
    mols = [embed(i, name, smi, seed, source) for i, (name, smi) in enumerate(molecules)]

    from tqdm.auto import tqdm

    total = len(mols) * (s.n_perturbed + s.n_md)
    results: list[dict[str, Any]] = []
    with tqdm(
        total=total, unit="frame", desc=f"{s.method} labels", disable=not progress, dynamic_ncols=True
    ) as bar:
        if workers == 1 or len(mols) == 1:
            if "tblite" not in sys.modules:  # OpenMP reads this when tblite's library loads
                os.environ.setdefault("OMP_NUM_THREADS", "1")
            for mol in mols:
                results.append(label_molecule(mol, s, seed, on_frame=bar.update))
        else:
            results = _run_pool(mols, s, seed, min(workers, len(mols)), bar)

    results.sort(key=lambda r: r["index"])
    skipped = sum(r["skipped"] for r in results)
    notes = [f"{mols[r['index']].name}: {n}" for r in results for n in r["notes"]]
    if skipped or notes:
        warnings.warn(
            f"skipped {skipped} of {total} frame(s) after xTB SCF failures"
            + ("".join(f"\n  {n}" for n in notes)),
            RuntimeWarning,
            stacklevel=2,
        )
    return [to_atoms(mols[r["index"]], f, s.method) for r in results for f in r["frames"]]


def _run_pool(mols: list[Molecule], s: Settings, seed: int, workers: int, bar) -> list[dict[str, Any]]:
    import multiprocessing as mp

    # Spawned children inherit os.environ at start: set the thread limits before they exist, so they hold
    # before numpy's BLAS and tblite's OpenMP load in the child (the initializer alone runs too late).
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update(_THREAD_ENV)
    try:
        ctx = mp.get_context("spawn")  # fork after torch/OpenMP initialised can deadlock
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            out = []
            for res in pool.imap_unordered(_worker, [(m, s, seed) for m in mols]):
                out.append(res)
                bar.update(s.n_perturbed + s.n_md)
            return out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def to_atoms(mol: Molecule, frame: dict[str, Any], method: str):
    """One labelled frame as ``ase.Atoms`` (energy/forces in a SinglePointCalculator, see module doc)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=mol.numbers, positions=frame["positions"], pbc=False)
    atoms.calc = SinglePointCalculator(atoms, energy=frame["energy"], forces=frame["forces"])
    atoms.arrays["charges"] = frame["charges"]
    atoms.info.update(
        {
            "dipole": frame["dipole"],
            "charge": mol.charge,
            "traj_id": 2 * mol.index + SOURCES.index(frame["source"]),
            "step": frame["step"],
            "molecule": mol.name,
            "smiles": mol.smiles,
            "level_of_theory": method,
            "source": frame["source"],
        }
    )
    return atoms


# ----------------------------------------------------------------------------------------------------------
# files


def write(path: str | Path, frames: list, attrs: dict[str, Any] | None = None) -> Path:
    """Write ``frames`` to ``.extxyz`` (ASE, atomic replace) or ``.h5`` (``scifm.core.data.atomistic``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".h5":
        try:
            from scifm.core.data.atomistic import write_frames
        except ModuleNotFoundError:
            raise ConfigError(
                f"{path}: HDF5 output needs scifm.core.data.atomistic, which this install "
                "lacks; write .extxyz instead"
            ) from None
        write_frames(path, frames, attrs=attrs or {})
        return path
    if suffix not in (".extxyz", ".xyz"):
        raise ConfigError(f"--out {path}: unknown output format {suffix!r}; use .extxyz or .h5")
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        ase.io.write(tmp, frames, format="extxyz")
        umask = os.umask(0)  # mkstemp makes the file 0600; give it the mode a plain open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: str | Path) -> list:
    """Read frames written by :func:`write` (``.extxyz``) back into the in-memory convention.

    ASE's extxyz reader moves the ``charges`` column and the ``dipole`` key into the calculator results;
    this puts them back into ``arrays["charges"]`` and ``info["dipole"]``, leaving energy and forces in a
    ``SinglePointCalculator``.
    """
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    frames = ase.io.read(path, index=":", format="extxyz")
    for i, atoms in enumerate(frames):
        res = dict(atoms.calc.results) if atoms.calc is not None else {}
        if "energy" not in res or "forces" not in res:
            raise DataError(path, "frame has no energy or forces", record=i)
        if "charges" in res:
            atoms.arrays["charges"] = np.asarray(res["charges"], dtype=np.float64)
        if "dipole" in res:
            atoms.info["dipole"] = np.asarray(res["dipole"], dtype=np.float64)
        atoms.calc = SinglePointCalculator(atoms, energy=res["energy"], forces=res["forces"])
    return frames


# ----------------------------------------------------------------------------------------------------------
# CLI (the lead registers these in scifm.mlip.cli)


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``sci-fm generate mlip-data`` (dest names are the YAML keys)."""
    d = Settings()
    src = parser.add_argument_group("molecules (one of; default: the bundled list)")
    src.add_argument("--smiles", nargs="+", metavar="SMILES", help="SMILES strings")
    src.add_argument(
        "--molecules",
        nargs="+",
        metavar="NAME",
        help="names from the bundled list (scifm.mlip.data.molecules)",
    )
    src.add_argument(
        "--molecule-file",
        metavar="FILE",
        help="text file, one 'SMILES [name]' per line; '#' starts a comment",
    )
    g = parser.add_argument_group("sampling")
    g.add_argument("--n-perturbed", type=int, default=d.n_perturbed, help="perturbed frames per molecule")
    g.add_argument("--n-md", type=int, default=d.n_md, help="MD frames per molecule")
    g.add_argument("--md-temperature", type=float, default=d.md_temperature, help="Langevin temperature, K")
    g.add_argument("--md-timestep", type=float, default=d.md_timestep, help="MD time step, fs")
    g.add_argument("--md-interval", type=int, default=d.md_interval, help="MD steps between saved frames")
    g.add_argument("--md-warmup", type=int, default=d.md_warmup, help="MD steps before the first frame")
    g.add_argument("--md-friction", type=float, default=d.md_friction, help="Langevin friction, 1/fs")
    g.add_argument(
        "--perturb-sigma",
        type=float,
        default=d.perturb_sigma,
        help="std of Gaussian displacements per coordinate, Å",
    )
    g.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="sample around the RDKit geometry instead of the xTB minimum",
    )
    lab = parser.add_argument_group("labels and run")
    lab.add_argument("--method", choices=METHODS, default=d.method, help="xTB Hamiltonian (tblite)")
    lab.add_argument("--max-scf-iterations", type=int, default=d.max_scf_iterations)
    lab.add_argument("--workers", type=int, default=1, help="processes (one thread each)")
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--out", default="mlip_data.extxyz", help="output file, .extxyz or .h5")
    lab.add_argument("--no-progress", dest="progress", action="store_false")


def read_molecule_file(path: str | Path) -> list[tuple[str, str]]:
    """``(name, smiles)`` from a text file of 'SMILES [name]' lines (name defaults to 'line<N>')."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "molecule file not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        out.append((parts[1].strip() if len(parts) > 1 else f"line{n}", parts[0]))
    if not out:
        raise DataError(path, "no SMILES in file")
    return out


def select_molecules(args: argparse.Namespace) -> tuple[list[tuple[str, str]], str]:
    """The molecules the CLI options ask for, and a label for errors."""
    from scifm.mlip.data.molecules import MOLECULES, bundled_names, lookup

    given = [k for k in ("smiles", "molecules", "molecule_file") if getattr(args, k, None)]
    if len(given) > 1:
        raise ConfigError(
            "give only one of --smiles, --molecules, --molecule-file (got "
            + ", ".join("--" + k.replace("_", "-") for k in given)
            + ")"
        )
    if args.smiles:
        return [(smi, smi) for smi in args.smiles], "--smiles"
    if args.molecules:
        try:
            return lookup(args.molecules), "--molecules"
        except KeyError as exc:
            raise ConfigError(
                f"--molecules: unknown molecule {exc.args[0]!r}; bundled: {', '.join(bundled_names())}"
            ) from None
    if args.molecule_file:
        return read_molecule_file(args.molecule_file), str(args.molecule_file)
    return list(MOLECULES), "bundled molecules"


def run(args: argparse.Namespace) -> None:
    """Generate and write the data set, then print a one-line summary."""
    out = Path(args.out)
    if out.suffix.lower() not in (".extxyz", ".xyz", ".h5"):
        raise ConfigError(f"--out {out}: unknown output format {out.suffix!r}; use .extxyz or .h5")
    molecules, source = select_molecules(args)
    s = Settings(
        n_perturbed=args.n_perturbed,
        n_md=args.n_md,
        md_temperature=args.md_temperature,
        md_timestep=args.md_timestep,
        md_interval=args.md_interval,
        md_warmup=args.md_warmup,
        md_friction=args.md_friction,
        perturb_sigma=args.perturb_sigma,
        method=args.method,
        optimize=args.optimize,
        max_scf_iterations=args.max_scf_iterations,
    )
    frames = generate(
        molecules, seed=args.seed, workers=args.workers, progress=args.progress, source=source, **asdict(s)
    )
    attrs = {
        "level_of_theory": s.method,
        "seed": args.seed,
        "generator": "scifm.mlip.data.generate",
        "settings": repr(asdict(s)),
        "units": "energy eV, forces eV/A, charges e, dipole e*A",
    }
    write(out, frames, attrs=attrs)
    n_atoms = sum(len(a) for a in frames)
    print(f"wrote {len(frames)} frames ({n_atoms} atoms, {len(molecules)} molecules) to {out}")


def main(argv: list[str] | None = None) -> int:
    """``python -m scifm.mlip.data.generate ...``: the same options as the ``sci-fm`` command."""
    from scifm.core.errors import SciFMError

    parser = argparse.ArgumentParser(
        prog="python -m scifm.mlip.data.generate", description=__doc__.split("\n")[0]
    )
    configure(parser)
    try:
        run(parser.parse_args(argv))
    except SciFMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
