"""Read PubChemQCR's original format: LMDB shards of gzip-compressed pickled relaxation trajectories.

Layout (anchor §1.2). Each shard ``DataNN.lmdb`` is a single-file LMDB (``subdir=False``). A key is the
PubChem CID as a zero-padded 9-digit byte string (``b"000015111"``); its value is
``gzip(pickle(record))`` with ``record = {"pm3": [...], "hf": [...], "DFT_1st": [...] | None,
"DFT_2nd": [...]}``, one step dict per optimizer step, in order::

    {"coordinates": [{"atom": "C", "charge": q, "x": .., "y": .., "z": ..}, ...],   # Å, e (Mulliken)
     "energy": E,                                                                 # Hartree
     "gradient": [{"atom": "C", "charge": q, "dx": .., "dy": .., "dz": ..}, ...]}  # Hartree/Bohr

Values are decoded with a restricted unpickler: plain containers, numbers and strings only, so a value
that asks for any global (a class, a function) is refused with a ``DataError`` naming the shard, the CID
and the global. Nothing in a shard is ever executed.

Quirks of the real data, handled and counted in a :class:`SkipReport` (never silently):

* a stage that is ``None`` (HF results were copied into the DFT_1st file upstream), absent or empty;
* steps without ``energy``, ``gradient`` or ``coordinates``; steps without per-atom ``charge`` (SMASH
  computed part of DFT_1st and writes none: such steps are *kept*, with no charges, and counted);
* steps whose atoms differ from the trajectory's composition (reference = the most common symbol list
  of the trajectory) or whose gradient has another length than the coordinates;
* non-finite coordinates, energy or gradient; atoms closer than 0.1 Å; malformed entries.

Stages (``stage=``): ``pm3``, ``hf``, ``1st`` (DFT_1st), ``1st_smash`` (only the DFT_1st trajectories
computed with SMASH, recognised by their missing charges), ``2nd`` (DFT_2nd), ``mixing`` (DFT_1st followed
by DFT_2nd, one trajectory whose relaxed reference is the last valid DFT_2nd step, or DFT_1st's last one
when DFT_2nd has none).

Units on output (ASE's): Å, eV, eV/Å. Energy = total electronic energy x 27.2114; forces = -gradient x
27.2114 x 1.8897. The paper's target, the per-atom referenced energy
``(E - sum_i E_atom(Z_i)) x 27.2114 / N`` (eV/atom), is given alongside when every element has a reference.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scifm.core.errors import ConfigError, DataError

from .units import ATOM_REFS_B3LYP_631GS, HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV

STAGES = ("pm3", "hf", "1st", "1st_smash", "2nd", "mixing")
# which raw keys of a record each stage option reads, in order
RAW_STAGES: dict[str, tuple[str, ...]] = {
    "pm3": ("pm3",),
    "hf": ("hf",),
    "1st": ("DFT_1st",),
    "1st_smash": ("DFT_1st",),
    "2nd": ("DFT_2nd",),
    "mixing": ("DFT_1st", "DFT_2nd"),
}
RAW_KEYS = ("pm3", "hf", "DFT_1st", "DFT_2nd")
ENERGY_KINDS = ("total", "referenced")
MIN_DISTANCE_A = 0.1
MAX_READERS = 512  # the dataset notes report "MAX readers limit reached" below 256
KEY_DIGITS = 9

# every reason a step or molecule can be dropped (or, for step_no_charge, flagged)
REASONS = (
    "bad_key",
    "stage_none",
    "stage_missing",
    "stage_empty",
    "not_smash",
    "step_malformed",
    "step_no_coordinates",
    "step_no_energy",
    "step_no_gradient",
    "step_atom_mismatch",
    "step_non_finite",
    "step_atoms_too_close",
    "step_no_charge",
    "molecule_no_valid_steps",
    "molecule_unknown_reference",
)
_MAX_EXAMPLES = 5


# ----------------------------------------------------------------------------------------------------------
# bookkeeping of what was skipped


@dataclass
class SkipReport:
    """Counts of everything skipped (or flagged), with a few (cid, stage, step) examples per reason.

    ``step_no_charge`` steps are kept (without charges); every other reason drops the step or molecule.
    """

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list] = field(default_factory=dict)
    molecules_read: int = 0
    molecules_kept: int = 0
    steps_read: int = 0
    steps_kept: int = 0

    def add(self, reason: str, cid: int | None = None, stage: str | None = None, step: int | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _MAX_EXAMPLES:
            ex.append([cid, stage, step])

    def merge(self, other: SkipReport) -> None:
        self.counts.update(other.counts)
        for reason, ex in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ex[: max(0, _MAX_EXAMPLES - len(mine))])
        self.molecules_read += other.molecules_read
        self.molecules_kept += other.molecules_kept
        self.steps_read += other.steps_read
        self.steps_kept += other.steps_kept

    def as_dict(self) -> dict:
        return {
            "molecules_read": self.molecules_read,
            "molecules_kept": self.molecules_kept,
            "steps_read": self.steps_read,
            "steps_kept": self.steps_kept,
            "counts": {r: int(self.counts.get(r, 0)) for r in REASONS},
            "examples_cid_stage_step": {r: ex for r, ex in self.examples.items() if ex},
        }

    def summary(self) -> str:
        """A few human-readable lines (what the commands print)."""
        lines = [
            f"PubChemQCR: kept {self.steps_kept}/{self.steps_read} steps of "
            f"{self.molecules_kept}/{self.molecules_read} molecules"
        ]
        nonzero = [(r, self.counts[r]) for r in REASONS if self.counts.get(r)]
        if nonzero:
            lines.append("  skipped/flagged: " + ", ".join(f"{r}={n}" for r, n in nonzero))
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``as_dict()`` as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.as_dict(), indent=1))
        os.replace(tmp, path)
        return path


# ----------------------------------------------------------------------------------------------------------
# one record -> trajectories


@dataclass
class Step:
    """One kept optimizer step, ASE units. ``index`` is its position in the raw stage list (for ``mixing``,
    DFT_2nd indices continue after DFT_1st's)."""

    numbers: np.ndarray  # [N] atomic numbers
    positions: np.ndarray  # [N,3] Å
    energy: float  # total energy, eV
    forces: np.ndarray  # [N,3] eV/Å (= -gradient)
    charges: np.ndarray | None  # [N] e (Mulliken), None when the step has none (SMASH)
    raw_stage: str  # "pm3" | "hf" | "DFT_1st" | "DFT_2nd"
    index: int


@dataclass
class Trajectory:
    """The kept steps of one molecule's chosen stage, plus its relaxed reference (last valid step)."""

    cid: int
    stage: str
    steps: list[Step]
    relaxed: Step
    total_charge: float  # e; from the Mulliken charges when any step has them, else 0
    atom_ref_energy: float | None  # sum of isolated-atom energies, eV; None if an element has no reference

    @property
    def numbers(self) -> np.ndarray:
        return self.steps[0].numbers

    @property
    def start(self) -> Step:
        """The first kept geometry: where an MLIP relaxation starts."""
        return self.steps[0]

    def energy_per_atom(self, step: Step) -> float | None:
        """The paper's target: (E - sum of atom references) / N, eV/atom."""
        if self.atom_ref_energy is None:
            return None
        return (step.energy - self.atom_ref_energy) / len(step.numbers)


def _symbol_table() -> dict[str, int]:
    from ase.data import atomic_numbers

    return atomic_numbers


def atom_ref_table(atom_refs: str | os.PathLike | dict | None) -> dict[str, float]:
    """Isolated-atom references (Hartree by symbol): the built-in B3LYP/6-31G* table, a dict, a JSON file."""
    if atom_refs is None or atom_refs == "b3lyp":
        return dict(ATOM_REFS_B3LYP_631GS)
    if isinstance(atom_refs, dict):
        return {str(k): float(v) for k, v in atom_refs.items()}
    path = Path(atom_refs)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            path, f"cannot read atom reference energies (JSON symbol -> Hartree): {exc}"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):  # noqa
        raise DataError(path, "atom reference energies must be a JSON object {symbol: Hartree}")
    return {str(k): float(v) for k, v in data.items()}


ATOM_REFS_FILE = "atom_refs.json"


def resolve_atom_refs(atom_refs, path: str | os.PathLike, stage: str) -> dict[str, float]:
    """The reference table for ``stage``: ``atom_refs`` if given; else ``atom_refs.json`` beside the shards
    (our generator writes one per raw stage, for its xTB methods); else the built-in B3LYP/6-31G* table."""
    if atom_refs is None:
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        if (folder / ATOM_REFS_FILE).is_file():
            atom_refs = folder / ATOM_REFS_FILE
    table = atom_ref_table(atom_refs) if not isinstance(atom_refs, str | os.PathLike) else None
    if table is None:
        path = Path(atom_refs)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(
                path, f"cannot read atom reference energies (JSON symbol -> Hartree): {exc}"
            ) from None
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            raw = RAW_STAGES[stage][-1]  # per-stage tables: mixing is referenced like its relaxed stage
            if raw not in data:
                raise DataError(path, f"no reference energies for stage {raw}")
            data = data[raw]
        table = atom_ref_table(data)
    return table


def decode_value(raw: bytes, source: object, key: object) -> dict:
    """gzip + restricted unpickle of one LMDB value. Any problem is a DataError naming file and CID."""
    from scifm.core.io import BUILTIN_GLOBALS, safe_pickle_loads

    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(source, f"value is not gzip data ({exc})", record=f"CID {key}") from None
    # Only builtin containers may be named (set, OrderedDict, protocol-2 bytes): the format is plain dicts,
    # lists, str and floats, so any other global (a class, a function, numpy) is refused.
    record = safe_pickle_loads(data, allowed=BUILTIN_GLOBALS, source=source, record=f"CID {key}")
    if not isinstance(record, dict):
        raise DataError(
            source, f"value is a {type(record).__name__}, expected a dict of stages", record=f"CID {key}"
        )
    return record


def _finite(*xs) -> bool:
    return all(np.isfinite(np.asarray(x, dtype=np.float64)).all() for x in xs)


def _parse_step(step, k: int, raw_stage: str, cid: int, report: SkipReport):
    """-> (symbols tuple, Step) or None (counted). Composition is checked by the caller."""
    table = _symbol_table()
    if not isinstance(step, dict):
        report.add("step_malformed", cid, raw_stage, k)
        return None
    coords = step.get("coordinates")
    if not coords:
        report.add("step_no_coordinates", cid, raw_stage, k)
        return None
    if step.get("energy") is None:
        report.add("step_no_energy", cid, raw_stage, k)
        return None
    grad = step.get("gradient")
    if not grad:
        report.add("step_no_gradient", cid, raw_stage, k)
        return None
    try:
        symbols = tuple(str(a["atom"]) for a in coords)
        pos = np.array([[a["x"], a["y"], a["z"]] for a in coords], dtype=np.float64)
        g = np.array([[a["dx"], a["dy"], a["dz"]] for a in grad], dtype=np.float64)
        energy = float(step["energy"])
        numbers = np.array([table[s] for s in symbols], dtype=np.int64)
        charges = None
        if all(isinstance(a, dict) and a.get("charge") is not None for a in coords):
            charges = np.array([a["charge"] for a in coords], dtype=np.float64)
        gsym = tuple(str(a.get("atom", s)) for a, s in zip(grad, symbols, strict=False))
    except (KeyError, TypeError, ValueError, AttributeError):
        report.add("step_malformed", cid, raw_stage, k)
        return None
    if g.shape != pos.shape or gsym != symbols[: len(gsym)]:
        report.add("step_atom_mismatch", cid, raw_stage, k)
        return None
    if not _finite(pos, g, energy) or (charges is not None and not _finite(charges)):
        report.add("step_non_finite", cid, raw_stage, k)
        return None
    if len(pos) > 1:
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        if d.min() < MIN_DISTANCE_A:
            report.add("step_atoms_too_close", cid, raw_stage, k)
            return None
    return symbols, Step(
        numbers, pos, energy * HARTREE_TO_EV, -g * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, charges, raw_stage, k
    )


def _has_charges(steps) -> bool:
    if not isinstance(steps, list | tuple):
        return False
    for step in steps:
        coords = step.get("coordinates") if isinstance(step, dict) else None
        if coords and any(isinstance(a, dict) and a.get("charge") is not None for a in coords):
            return True
    return False


def extract_trajectory(
    record: dict, stage: str, cid: int, report: SkipReport, atom_refs: dict[str, float] | None = None
) -> Trajectory | None:
    """The kept steps of ``stage`` in one decoded record, or None (reason counted in ``report``).

    ``atom_refs`` (symbol -> Hartree) gives ``Trajectory.atom_ref_energy``; None for a molecule with an
    element the table lacks (counted as ``molecule_unknown_reference``, molecule kept).
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown PubChemQCR stage {stage!r}; choose one of {', '.join(STAGES)}")
    report.molecules_read += 1
    parsed: list[tuple[tuple, Step]] = []
    offset = 0
    present = 0
    if stage == "1st_smash" and _has_charges(record.get("DFT_1st")):
        # SMASH writes no charges: a DFT_1st run with charges on any step came from Firefly.
        report.add("not_smash", cid, stage)
        return None
    for raw_stage in RAW_STAGES[stage]:
        if raw_stage not in record:
            report.add("stage_missing", cid, raw_stage)
            continue
        steps = record[raw_stage]
        if steps is None:
            report.add("stage_none", cid, raw_stage)
            continue
        if not isinstance(steps, list | tuple) or len(steps) == 0:
            report.add("stage_empty", cid, raw_stage)
            continue
        present += 1
        report.steps_read += len(steps)
        for k, step in enumerate(steps):
            out = _parse_step(step, offset + k, raw_stage, cid, report)
            if out is not None:
                parsed.append(out)
        offset += len(steps)
    if not parsed:
        if present:
            report.add("molecule_no_valid_steps", cid, stage)
        return None
    # Reference composition: the most common symbol list (a bad first step must not reject the rest).
    ref = Counter(s for s, _ in parsed).most_common(1)[0][0]
    kept: list[Step] = []
    for symbols, st in parsed:
        if symbols != ref:
            report.add("step_atom_mismatch", cid, st.raw_stage, st.index)
            continue
        kept.append(st)
    for st in kept:
        if st.charges is None:
            report.add("step_no_charge", cid, st.raw_stage, st.index)
    relaxed = kept[-1]
    if stage == "mixing":
        second = [st for st in kept if st.raw_stage == "DFT_2nd"]
        relaxed = second[-1] if second else kept[-1]
    with_q = [st for st in kept if st.charges is not None]
    total_charge = float(np.round(with_q[0].charges.sum())) + 0.0 if with_q else 0.0  # no -0.0
    ref_energy = None
    table = ATOM_REFS_B3LYP_631GS if atom_refs is None else atom_refs
    if all(s in table for s in ref):
        ref_energy = float(sum(table[s] for s in ref)) * HARTREE_TO_EV
    else:
        report.add("molecule_unknown_reference", cid, stage)
    report.molecules_kept += 1
    report.steps_kept += len(kept)
    return Trajectory(cid, stage, kept, relaxed, total_charge, ref_energy)


# ----------------------------------------------------------------------------------------------------------
# shards


def find_shards(
    path: str | os.PathLike, subset: bool = False, shards: Sequence[str] | None = None
) -> list[Path]:
    """Shard files under ``path`` (a ``.lmdb`` file or a folder of them), sorted by name.

    ``subset``: PubChemQCR-S is exactly the shard ``Data06.lmdb``; in a folder without it (our generated
    sets) the first shard stands in. ``shards``: explicit names (with or without ``.lmdb``).
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "no such PubChemQCR file or folder (expected DataNN.lmdb shards)")
    found = sorted(p for p in path.glob("*.lmdb") if p.is_file())
    if not found:
        raise DataError(path, "folder holds no *.lmdb shards")
    if shards:
        names = {s if s.endswith(".lmdb") else s + ".lmdb" for s in shards}
        missing = sorted(names - {p.name for p in found})
        if missing:
            raise DataError(path, f"shard(s) not found: {', '.join(missing)}")
        found = [p for p in found if p.name in names]
    if subset:
        s = [p for p in found if p.name == "Data06.lmdb"]
        found = s or found[:1]
    return found


# One read-only environment per shard and process (py-lmdb refuses to open one file twice in a process;
# after fork or spawn the child must open its own handles, hence the pid check).
_ENVS: dict[str, object] = {}
_ENVS_PID: list[int] = [os.getpid()]


def _open_env(path: Path):
    import lmdb

    if _ENVS_PID[0] != os.getpid():
        _ENVS.clear()
        _ENVS_PID[0] = os.getpid()
    key = str(path.resolve())
    env = _ENVS.get(key)
    if env is None:
        try:
            env = lmdb.open(
                key,
                subdir=False,
                readonly=True,
                lock=False,
                readahead=False,
                meminit=False,
                max_readers=MAX_READERS,
            )
        except lmdb.Error as exc:
            raise DataError(path, f"cannot open as LMDB (corrupt or not an LMDB file?): {exc}") from None
        _ENVS[key] = env
    return env


def _cid_of(key: bytes) -> int | None:
    if len(key) != KEY_DIGITS or not key.isdigit():
        return None
    return int(key)


class ShardSet:
    """Random access over many read-only LMDB shards without loading them.

    Only the keys are scanned at construction (``cids [M]``, ``shard_of [M]``). Environments are opened
    lazily, read-only and lock-free, once per process: the object can be pickled into DataLoader workers and
    DDP ranks (each re-opens its own handles after fork/spawn).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], report: SkipReport | None = None):
        self.paths = [Path(p) for p in paths]
        cids, shard_of = [], []
        report = report if report is not None else SkipReport()
        for s, p in enumerate(self.paths):
            env = self._env(s)
            with env.begin(buffers=False) as txn:
                for key in txn.cursor().iternext(keys=True, values=False):
                    cid = _cid_of(bytes(key))
                    if cid is None:
                        report.add("bad_key", None, p.name, None)
                        continue
                    cids.append(cid)
                    shard_of.append(s)
        self.cids = np.asarray(cids, dtype=np.int64)
        self.shard_of = np.asarray(shard_of, dtype=np.int32)
        if len(self.cids) == 0:
            raise DataError(
                self.paths[0] if len(self.paths) == 1 else self.paths[0].parent,
                "no 9-digit CID keys found: not PubChemQCR shards?",
            )

    def _env(self, s: int):
        return _open_env(self.paths[s])

    def __len__(self) -> int:
        return len(self.cids)

    def raw(self, i: int) -> bytes:
        s, cid = int(self.shard_of[i]), int(self.cids[i])
        key = f"{cid:0{KEY_DIGITS}d}".encode()
        with self._env(s).begin(buffers=False) as txn:
            value = txn.get(key)
        if value is None:
            raise DataError(
                self.paths[s], "key vanished while reading (shard changed?)", record=f"CID {key.decode()}"
            )
        return value

    def record(self, i: int) -> dict:
        s = int(self.shard_of[i])
        return decode_value(self.raw(i), self.paths[s], f"{int(self.cids[i]):0{KEY_DIGITS}d}")

    def close(self) -> None:
        for p in self.paths:
            env = _ENVS.pop(str(p.resolve()), None)
            if env is not None:
                env.close()


# ----------------------------------------------------------------------------------------------------------
# molecule-level and frame-level datasets


def _check_options(stage: str, energy: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"unknown PubChemQCR stage {stage!r}; choose one of {', '.join(STAGES)}")
    if energy not in ENERGY_KINDS:
        raise ConfigError(f"unknown energy kind {energy!r}; choose one of {', '.join(ENERGY_KINDS)}")


class PubChemQCR:
    """Molecule-level access: ``len(ds)`` molecules (CIDs), ``ds.trajectory(i)`` decodes one lazily.

    ``path``: a shard or a folder of shards. ``cids``: keep only these CIDs (a split), in this object's order.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        stage: str = "1st",
        subset: bool = False,
        shards: Sequence[str] | None = None,
        cids: Iterable[int] | None = None,
        atom_refs: str | os.PathLike | dict | None = None,
        max_molecules: int | None = None,
    ):
        _check_options(stage, "total")
        self.path = Path(path)
        self.stage = stage
        self.subset = bool(subset)
        self.report = SkipReport()
        self.shardset = ShardSet(find_shards(path, subset, shards), self.report)
        self.atom_refs = resolve_atom_refs(atom_refs, path, stage)
        order = np.arange(len(self.shardset))
        if cids is not None:
            wanted = np.asarray(sorted({int(c) for c in cids}), dtype=np.int64)
            order = order[np.isin(self.shardset.cids, wanted)]
        if max_molecules is not None:
            order = order[: int(max_molecules)]
        self.order = order

    @property
    def cids(self) -> np.ndarray:
        return self.shardset.cids[self.order]

    def __len__(self) -> int:
        return len(self.order)

    def record(self, i: int) -> dict:
        return self.shardset.record(int(self.order[i]))

    def trajectory(self, i: int, report: SkipReport | None = None) -> Trajectory | None:
        """Molecule ``i``'s kept steps, or None. Counts go to ``report`` (default: a throw-away one)."""
        j = int(self.order[i])
        return extract_trajectory(
            self.shardset.record(j),
            self.stage,
            int(self.shardset.cids[j]),
            report if report is not None else SkipReport(),
            self.atom_refs,
        )

    def trajectories(self, progress: bool = False):
        """Yield every kept trajectory in order; fills ``self.report`` (a fresh count each call)."""
        self.report = SkipReport(Counter(self.report.counts), dict(self.report.examples))
        it = range(len(self))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="reading PubChemQCR", unit="mol", mininterval=1.0)
        for i in it:
            t = self.trajectory(i, self.report)
            if t is not None:
                yield t


def frame_atoms(traj: Trajectory, step: Step, energy: str = "total"):
    """One step as ``ase.Atoms`` with a SinglePointCalculator (energy eV, forces eV/Å).

    info: ``traj_id`` = ``cid`` (int), ``step``, ``stage`` (raw stage name), ``charge`` (total, e),
    ``relaxed_energy`` (eV, same kind as ``energy``), ``energy_per_atom`` (paper target, eV/atom, when
    references exist); arrays: ``charges`` (when present), ``relaxed_positions`` [N,3] Å.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    shift = 0.0
    if energy == "referenced":
        if traj.atom_ref_energy is None:
            raise DataError(f"CID {traj.cid}", "no isolated-atom reference for an element of this molecule")
        shift = traj.atom_ref_energy
    atoms = Atoms(numbers=step.numbers, positions=step.positions)
    atoms.calc = SinglePointCalculator(atoms, energy=step.energy - shift, forces=step.forces)
    if step.charges is not None:
        atoms.arrays["charges"] = step.charges.copy()
    atoms.arrays["relaxed_positions"] = traj.relaxed.positions.copy()
    atoms.info.update(
        traj_id=int(traj.cid),
        cid=int(traj.cid),
        step=int(step.index),
        stage=step.raw_stage,
        charge=traj.total_charge,
        relaxed_energy=traj.relaxed.energy - shift,
    )
    epa = traj.energy_per_atom(step)
    if epa is not None:
        atoms.info["energy_per_atom"] = epa
    return atoms


class PubChemQCRFrames:
    """Frame-level lazy dataset: ``ds[k]`` is one snapshot as ``ase.Atoms`` (see :func:`frame_atoms`).

    The frame index (molecule, step) needs every record decoded once; it is built at construction (with a
    progress bar for big sets) and can be cached in ``index_cache`` (.npz; rebuilt when the shards'
    sizes/mtimes or the options change). Frames of one molecule are contiguous; the last decoded molecule
    is kept, so sequential reads decode each record once. Safe in DataLoader workers and DDP ranks.
    """

    def __init__(
        self,
        molecules: PubChemQCR,
        energy: str = "total",
        index_cache: str | os.PathLike | None = None,
        progress: bool | None = None,
    ):
        _check_options(molecules.stage, energy)
        self.molecules = molecules
        self.energy = energy
        self._cache: tuple[int, Trajectory] | None = None
        if progress is None:
            progress = len(molecules) > 2000
        loaded = self._load_index(index_cache)
        if loaded is None:
            mol, step = [], []
            for i, t in self._scan(progress):
                mol.extend([i] * len(t.steps))
                step.extend(range(len(t.steps)))
            self.mol_index = np.asarray(mol, dtype=np.int64)
            self.step_index = np.asarray(step, dtype=np.int32)
            if index_cache is not None:
                self._save_index(index_cache)
        self.report = molecules.report

    def _scan(self, progress: bool):
        m = self.molecules
        m.report = SkipReport(Counter(m.report.counts), dict(m.report.examples))
        it = range(len(m))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="indexing PubChemQCR", unit="mol", mininterval=1.0)
        for i in it:
            t = m.trajectory(i, m.report)
            if t is not None:
                yield i, t

    def _fingerprint(self) -> str:
        m = self.molecules
        parts = [m.stage, str(m.subset), str(len(m)), str(int(m.cids.sum()) if len(m) else 0)]
        for p in m.shardset.paths:
            st = p.stat()
            parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
        parts.append(json.dumps(m.atom_refs, sort_keys=True))
        return "|".join(parts)

    def _load_index(self, cache) -> bool | None:
        if cache is None or not Path(cache).is_file():
            return None
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) != self._fingerprint():
                    return None
                self.mol_index, self.step_index = z["mol_index"], z["step_index"]
                report = json.loads(str(z["report"]))
        except (OSError, KeyError, ValueError):
            return None
        r = self.molecules.report
        r.counts.update(report["counts"])
        r.examples.update(report["examples_cid_stage_step"])
        for k in ("molecules_read", "molecules_kept", "steps_read", "steps_kept"):
            setattr(r, k, report[k])
        return True

    def _save_index(self, cache) -> None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + f".tmp{os.getpid()}.npz")
        np.savez(
            tmp,
            mol_index=self.mol_index,
            step_index=self.step_index,
            fingerprint=np.array(self._fingerprint()),
            report=np.array(json.dumps(self.molecules.report.as_dict())),
        )
        os.replace(tmp, cache)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def __len__(self) -> int:
        return len(self.mol_index)

    @property
    def traj_ids(self) -> np.ndarray:
        """CID of every frame [F] (for splitting by trajectory)."""
        return self.molecules.cids[self.mol_index]

    def _trajectory(self, i: int) -> Trajectory:
        if self._cache is None or self._cache[0] != i:
            t = self.molecules.trajectory(i)
            if t is None:  # the shard changed under us after indexing
                raise DataError(
                    self.molecules.path,
                    "molecule no longer has valid steps (shard changed?)",
                    record=f"CID {int(self.molecules.cids[i])}",
                )
            self._cache = (i, t)
        return self._cache[1]

    def __getitem__(self, k: int):
        if k < 0:
            k += len(self)
        t = self._trajectory(int(self.mol_index[k]))
        return frame_atoms(t, t.steps[int(self.step_index[k])], self.energy)


# ----------------------------------------------------------------------------------------------------------
# the ``pubchemqcr:PATH?key=value&...`` spec

SPEC_PREFIX = "pubchemqcr:"
SPEC_KEYS = {
    "stage": "1st",
    "subset": "0",
    "split": "all",  # all | train | valid | test
    "split_file": None,  # JSON {train: [cid...], valid: [...], test: [...]} (else the paper's seed-42 split)
    "seed": "42",
    "energy": "total",  # total | referenced
    "max_molecules": None,
    "shards": None,  # comma-separated shard names
    "atom_refs": None,  # JSON file symbol -> Hartree
    "index_cache": None,
}


def parse_spec(spec: str) -> tuple[Path, dict]:
    """``pubchemqcr:PATH?stage=1st&subset=1`` -> (PATH, options with defaults). Unknown keys are errors."""
    from urllib.parse import parse_qsl

    text = spec[len(SPEC_PREFIX) :] if spec.startswith(SPEC_PREFIX) else spec
    path, _, query = text.partition("?")
    if not path:
        raise ConfigError(f"{spec!r}: missing the path (pubchemqcr:PATH[?stage=1st&subset=1])")
    opts = dict(SPEC_KEYS)
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        key = key.replace("-", "_")
        if key not in SPEC_KEYS:
            raise ConfigError(f"{spec!r}: unknown option {key!r}; known: {', '.join(SPEC_KEYS)}")
        opts[key] = value
    if opts["split"] not in ("all", "train", "valid", "test"):
        raise ConfigError(f"{spec!r}: split must be all, train, valid or test, got {opts['split']!r}")
    _check_options(opts["stage"], opts["energy"])
    return Path(path), opts


def open_spec(spec: str, progress: bool | None = None) -> PubChemQCRFrames:
    """The lazy frame dataset a ``pubchemqcr:`` spec names (split applied by CID)."""
    from .splits import paper_split, read_split_file

    path, o = parse_spec(spec)
    subset = o["subset"] not in ("0", "false", "False", "")
    shards = o["shards"].split(",") if o["shards"] else None
    max_mol = int(o["max_molecules"]) if o["max_molecules"] else None
    cids = None
    if o["split"] != "all":
        if o["split_file"]:
            parts = read_split_file(o["split_file"])
        else:
            every = ShardSet(find_shards(path, subset, shards)).cids
            if max_mol is not None:
                every = every[:max_mol]
            parts = paper_split(every, subset=subset, seed=int(o["seed"]))
        cids = parts[o["split"]]
    mols = PubChemQCR(
        path,
        stage=o["stage"],
        subset=subset,
        shards=shards,
        cids=cids,
        atom_refs=o["atom_refs"],
        max_molecules=max_mol if cids is None else None,
    )
    return PubChemQCRFrames(mols, energy=o["energy"], index_cache=o["index_cache"], progress=progress)


def open_pubchemqcr(spec: str) -> list:
    """All frames a ``pubchemqcr:PATH[?options]`` spec names, as ``ase.Atoms`` (see :func:`frame_atoms`).

    For ``sci-fm train mlip --train pubchemqcr:...``: loads every frame into memory; use
    :func:`open_spec` for the lazy dataset.
    """
    ds = open_spec(spec)
    frames = [ds[k] for k in range(len(ds))]
    if not frames:
        raise DataError(spec, "no valid frames (see the skip summary)\n" + ds.report.summary())
    return frames
