"""The ``atomistic`` HDF5 spec (version 1): ragged frames concatenated along the atom axis.

Layout (see ``data_specs/atomistic/README.md``): per-frame datasets ``n_atoms [F]``, ``cell [F,3,3]``,
``pbc [F,3]``, ``energy [F]``, ``total_charge [F]``, ``traj_id [F]``, ``step [F]``,
optional ``stress [F,3,3]``,
``dipole [F,3]``; per-atom datasets ``numbers [A]``, ``positions [A,3]``, ``forces [A,3]``, optional
``charges [A]``. Root attributes: ``spec``, ``spec_version``, ``energy_unit``, ``length_unit``,
``level_of_theory``. Frame ``k`` owns atoms ``offsets[k]:offsets[k+1]`` with offsets = cumsum(n_atoms).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from scifm.core.data.labels import atoms_labels
from scifm.core.data.validate import check_frame
from scifm.core.errors import DataError

SPEC = "scifm-atomistic"
SPEC_VERSION = 1
FRAME_KEYS = ("n_atoms", "cell", "pbc", "energy", "total_charge", "traj_id", "step")
ATOM_KEYS = ("numbers", "positions", "forces")
OPTIONAL_FRAME = ("stress", "dipole")
OPTIONAL_ATOM = ("charges",)
UNITS = {
    "energy_unit": "eV",
    "length_unit": "Angstrom",
    "forces_unit": "eV/Angstrom",
    "stress_unit": "eV/Angstrom^3",
    "charge_unit": "e",
    "dipole_unit": "e*Angstrom",
}


def _frame_record(atoms, index: int, path, require=("energy", "forces")) -> dict:
    from scifm.core.graph import voigt_to_matrix

    labels = atoms_labels(atoms)
    numbers = np.asarray(atoms.get_atomic_numbers())
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    cell = np.asarray(atoms.get_cell(), dtype=np.float64)
    check_frame(path, index, numbers, positions, labels, require, cell if pbc.any() else None, pbc)
    rec = {
        "numbers": numbers,
        "positions": positions,
        "cell": cell,
        "pbc": pbc,
        "energy": labels.get("energy", np.nan),
        "forces": labels.get("forces", np.full((len(numbers), 3), np.nan)),
        "total_charge": float(atoms.info.get("charge", 0.0)),
        "traj_id": int(atoms.info.get("traj_id", index)),
        "step": int(atoms.info.get("step", 0)),
    }
    if "stress" in labels:
        rec["stress"] = voigt_to_matrix(labels["stress"])
    if "dipole" in labels:
        rec["dipole"] = labels["dipole"]
    if "charges" in labels:
        rec["charges"] = labels["charges"]
    return rec


def write_frames(
    path: str | Path,
    frames: Sequence,
    attrs: dict | None = None,
    require: tuple[str, ...] = ("energy", "forces"),
    source: str | Path | None = None,
) -> Path:
    """Validate every ``ase.Atoms`` frame, then write the file atomically (temp file + rename).

    ``traj_id``/``step`` come from ``atoms.info`` (defaults: frame index / 0). An optional label is stored
    only when every frame has it. ``source`` names the file errors refer to (default: ``path``).
    """
    path = Path(path)
    where = source or path
    if len(frames) == 0:
        raise DataError(where, "no frames to write")
    records = [_frame_record(a, k, where, require) for k, a in enumerate(frames)]
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(suffix=".h5.tmp", dir=path.parent)
        os.close(fd)
        with h5py.File(temp, "w") as h5:
            h5.attrs.update(
                {"spec": SPEC, "spec_version": SPEC_VERSION, "level_of_theory": "unknown", **UNITS}
            )
            for k, v in (attrs or {}).items():
                h5.attrs[k] = v
            per_frame = {
                "n_atoms": np.array([len(r["numbers"]) for r in records], dtype=np.int64),
                "cell": np.stack([r["cell"] for r in records]),
                "pbc": np.stack([r["pbc"] for r in records]),
                "energy": np.array([r["energy"] for r in records], dtype=np.float64),
                "total_charge": np.array([r["total_charge"] for r in records], dtype=np.float64),
                "traj_id": np.array([r["traj_id"] for r in records], dtype=np.int64),
                "step": np.array([r["step"] for r in records], dtype=np.int64),
            }
            per_atom = {
                "numbers": np.concatenate([r["numbers"] for r in records]).astype(np.int16),
                "positions": np.concatenate([r["positions"] for r in records]),
                "forces": np.concatenate([r["forces"] for r in records]),
            }
            for key in OPTIONAL_FRAME:
                if all(key in r for r in records):
                    per_frame[key] = np.stack([r[key] for r in records])
            for key in OPTIONAL_ATOM:
                if all(key in r for r in records):
                    per_atom[key] = np.concatenate([r[key] for r in records])
            for key, arr in {**per_frame, **per_atom}.items():
                chunks = (min(len(arr), 4096),) + arr.shape[1:]
                h5.create_dataset(key, data=arr, chunks=chunks, compression="gzip", compression_opts=4)
        os.replace(temp, path)
        temp = None
    finally:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
    return path


class AtomisticH5:
    """Lazy reader: the file is opened on first access in each process (safe for DataLoader workers)."""

    def __init__(self, path: str | Path, validate: bool = True):
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._pid = None
        if not self.path.is_file():
            raise DataError(self.path, "file not found")
        with self._open_checked() as h5:
            self.attrs = dict(h5.attrs)
            n_atoms = h5["n_atoms"][:]
            self.keys = set(h5.keys())
            self.traj_id = h5["traj_id"][:]
        self.n_atoms = n_atoms
        self.offsets = np.concatenate([[0], np.cumsum(n_atoms)])
        if validate:
            validate_file(self.path)

    def _open_checked(self) -> h5py.File:
        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(self.path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        if h5.attrs.get("spec") != SPEC:
            h5.close()
            raise DataError(
                self.path, f"not an atomistic spec file (spec attribute {h5.attrs.get('spec')!r})"
            )
        version = int(h5.attrs.get("spec_version", -1))
        if version > SPEC_VERSION or version < 1:
            h5.close()
            raise DataError(
                self.path, f"spec_version {version} not supported (this sci-fm reads {SPEC_VERSION})"
            )
        return h5

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def __len__(self) -> int:
        return len(self.n_atoms)

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        if k < 0:
            k += len(self)
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        h5 = self.h5
        out = {key: h5[key][k] for key in FRAME_KEYS + OPTIONAL_FRAME if key in self.keys}
        out.update({key: h5[key][a:b] for key in ATOM_KEYS + OPTIONAL_ATOM if key in self.keys})
        return out

    def to_atoms(self, k: int):
        """Frame ``k`` as ``ase.Atoms`` with a SinglePointCalculator holding the labels."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        r = self[k]
        atoms = Atoms(numbers=r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"])
        results = {"energy": float(r["energy"]), "forces": r["forces"]}
        if "stress" in r:
            s = r["stress"]
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        atoms.calc = SinglePointCalculator(atoms, **results)
        if "charges" in r:
            atoms.arrays["charges"] = np.asarray(r["charges"], dtype=np.float64)
        if "dipole" in r:
            atoms.info["dipole"] = np.asarray(r["dipole"])
        atoms.info.update(charge=float(r["total_charge"]), traj_id=int(r["traj_id"]), step=int(r["step"]))
        return atoms

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def validate_file(path: str | Path, require: tuple[str, ...] = ("energy", "forces")) -> None:
    """Check the whole file against the spec; DataError names the dataset/frame of the first problem."""
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None
    with h5:
        if h5.attrs.get("spec") != SPEC:
            raise DataError(path, f"not an atomistic spec file (spec attribute {h5.attrs.get('spec')!r})")
        for key in FRAME_KEYS + ATOM_KEYS:
            if key not in h5:
                raise DataError(path, f"missing dataset '{key}'")
        try:
            n_atoms = h5["n_atoms"][:]
            F, A = len(n_atoms), int(n_atoms.sum())
            for key in FRAME_KEYS + OPTIONAL_FRAME:
                if key in h5 and h5[key].shape[0] != F:
                    raise DataError(path, f"dataset '{key}' has {h5[key].shape[0]} rows, expected {F} frames")
            for key in ATOM_KEYS + OPTIONAL_ATOM:
                if key in h5 and h5[key].shape[0] != A:
                    raise DataError(path, f"dataset '{key}' has {h5[key].shape[0]} rows, expected {A} atoms")
            offsets = np.concatenate([[0], np.cumsum(n_atoms)])
            numbers = h5["numbers"][:]
            arrays = {k: h5[k][:] for k in ("positions", "forces", "energy", "cell", "pbc") if k in h5}
            optional = {k: h5[k][:] for k in OPTIONAL_FRAME + OPTIONAL_ATOM if k in h5}
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(path, f"corrupt dataset: {exc}") from None
    for k in range(F):
        a, b = offsets[k], offsets[k + 1]
        # energy and forces are always stored; all-NaN means "no label", which is fine unless required
        labels = {
            key: value
            for key, value in (("energy", arrays["energy"][k]), ("forces", arrays["forces"][a:b]))
            if key in require or not np.isnan(value).all()
        }
        labels.update({key: arr[a:b] if key in OPTIONAL_ATOM else arr[k] for key, arr in optional.items()})
        pbc = arrays["pbc"][k]
        check_frame(
            path,
            k,
            numbers[a:b],
            arrays["positions"][a:b],
            labels,
            require,
            arrays["cell"][k] if pbc.any() else None,
            pbc,
        )
