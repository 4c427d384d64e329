"""The `data_specs/peptide_md` HDF5 format (writer, validator, reader) and training batches for the flow.

File layout (spec `scifm-peptide-md`, version 1.0; see data_specs/peptide_md/README.md):

    /                          attrs spec, spec_version, generator
    /systems/<name>/coordinates   float32 [F, N, 3], nm
    /systems/<name>/atom_names    str [N]          Amber atom names
    /systems/<name>/elements      str [N]
    /systems/<name>/residue_names str [R]
    /systems/<name>/atom_residue  int32 [N]        0-based residue of each atom
    /systems/<name>/bonds         int32 [M, 2]
    /systems/<name> attrs: sequence, capped, force_field, force_field_files, nonbonded, cutoff_nm,
        temperature_K, timestep_fs, friction_per_ps, frame_interval_ps, warmup_steps, seed, platform,
        topology_pdb (PDB text of the topology, used to rebuild the OpenMM system)

Training batches (`collate`): coordinates standardised (centroid removed, divided by `std_nm`), padded to
the longest molecule of the batch; `mask` [B, N] marks real atoms; orderings [B, K, N] with the pad
indices appended after the real ordering (anchor §1.5).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from scifm.core.errors import DataError
from scifm.core.io import atomic_output

__all__ = [
    "SPEC",
    "SPEC_VERSION",
    "FrameDataset",
    "PeptideMDFile",
    "SystemRecord",
    "collate",
    "merge_peptide_md",
    "read_peptide_md",
    "validate_peptide_md",
    "write_peptide_md",
]

SPEC = "scifm-peptide-md"
SPEC_VERSION = "1.0"
_REQUIRED_ATTRS = ("sequence", "capped", "force_field", "temperature_K", "frame_interval_ps", "topology_pdb")
_REQUIRED_SETS = ("coordinates", "atom_names", "elements", "residue_names", "atom_residue", "bonds")


@dataclass
class SystemRecord:
    """One trajectory to write: topology, frames (nm) and the MD settings that made them."""

    name: str
    coordinates: np.ndarray  # [F, N, 3] nm
    atom_names: list[str]
    elements: list[str]
    residue_names: list[str]
    atom_residue: np.ndarray  # [N]
    bonds: np.ndarray  # [M, 2]
    attrs: dict


def record_from_topology(
    name: str, topology, coordinates: np.ndarray, pdb_text: str, attrs: dict
) -> SystemRecord:
    atoms = list(topology.atoms())
    return SystemRecord(
        name=name,
        coordinates=np.asarray(coordinates, dtype=np.float32),
        atom_names=[a.name for a in atoms],
        elements=[a.element.symbol if a.element is not None else "" for a in atoms],
        residue_names=[r.name for r in topology.residues()],
        atom_residue=np.asarray([a.residue.index for a in atoms], dtype=np.int32),
        bonds=np.asarray([[b[0].index, b[1].index] for b in topology.bonds()], dtype=np.int32).reshape(-1, 2),
        attrs=dict(attrs, topology_pdb=pdb_text),
    )


def _check_record(path, rec: SystemRecord) -> None:
    x = rec.coordinates
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1:
        raise DataError(path, f"coordinates must be [F>=1, N, 3], got {x.shape}", record=rec.name)
    n = x.shape[1]
    for key, val in (
        ("atom_names", rec.atom_names),
        ("elements", rec.elements),
        ("atom_residue", rec.atom_residue),
    ):
        if len(val) != n:
            raise DataError(path, f"{key} has {len(val)} entries for {n} atoms", record=rec.name)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))[0])
        raise DataError(path, f"non-finite coordinates in frame {bad}", record=rec.name)
    missing = [k for k in _REQUIRED_ATTRS if k not in rec.attrs]
    if missing:
        raise DataError(path, f"missing attributes {missing}", record=rec.name)


def write_peptide_md(
    path: str | os.PathLike, records: list[SystemRecord], generator: str = "scifm-prose-md/1"
) -> Path:
    """Validate and write `records` to a new HDF5 file atomically (temporary file, then rename)."""
    import h5py

    path = Path(path)
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        raise DataError(path, "two systems with the same name")
    for r in records:
        _check_record(path, r)
    path.parent.mkdir(parents=True, exist_ok=True)
    str_dt = h5py.string_dtype()
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(spec=SPEC, spec_version=SPEC_VERSION, generator=generator)
            root = f.create_group("systems")
            for r in records:
                g = root.create_group(r.name)
                g.create_dataset(
                    "coordinates",
                    data=r.coordinates.astype(np.float32),
                    chunks=(min(256, len(r.coordinates)),) + r.coordinates.shape[1:],
                    compression="gzip",
                    compression_opts=4,
                )
                g.create_dataset("atom_names", data=np.asarray(r.atom_names, dtype=object), dtype=str_dt)
                g.create_dataset("elements", data=np.asarray(r.elements, dtype=object), dtype=str_dt)
                g.create_dataset(
                    "residue_names", data=np.asarray(r.residue_names, dtype=object), dtype=str_dt
                )
                g.create_dataset("atom_residue", data=np.asarray(r.atom_residue, dtype=np.int32))
                g.create_dataset("bonds", data=np.asarray(r.bonds, dtype=np.int32).reshape(-1, 2))
                for k, v in r.attrs.items():
                    g.attrs[k] = json.dumps(v) if isinstance(v, list | dict) else ("" if v is None else v)
    return path


def _attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def validate_peptide_md(path: str | os.PathLike) -> dict[str, dict]:
    """Check a file against the spec; returns {system name: {"n_frames", "n_atoms", attrs...}}.

    Raises `DataError(path, problem, record=system)` for the first problem found.
    """
    import h5py

    from scifm.prose.peptides import FORCE_FIELDS

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"not a readable HDF5 file ({exc})") from None
    out: dict[str, dict] = {}
    with f:
        if _attr(f.attrs.get("spec")) != SPEC:
            raise DataError(path, f"not a {SPEC} file (spec attribute {_attr(f.attrs.get('spec'))!r})")
        version = str(_attr(f.attrs.get("spec_version", "")))
        if version.split(".")[0] != SPEC_VERSION.split(".")[0]:
            raise DataError(path, f"spec_version {version!r} not readable (this code reads {SPEC_VERSION})")
        if "systems" not in f or len(f["systems"]) == 0:
            raise DataError(path, "no systems in /systems")
        for name, g in f["systems"].items():
            missing = [k for k in _REQUIRED_SETS if k not in g]
            if missing:
                raise DataError(path, f"missing datasets {missing}", record=name)
            miss_attr = [k for k in _REQUIRED_ATTRS if k not in g.attrs]
            if miss_attr:
                raise DataError(path, f"missing attributes {miss_attr}", record=name)
            x = g["coordinates"]
            if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1:
                raise DataError(path, f"coordinates must be [F>=1, N, 3], got {x.shape}", record=name)
            n = x.shape[1]
            for k in ("atom_names", "elements", "atom_residue"):
                if g[k].shape != (n,):
                    raise DataError(path, f"{k} has shape {g[k].shape}, expected ({n},)", record=name)
            ar = g["atom_residue"][()]
            if n and (ar.min() < 0 or ar.max() >= g["residue_names"].shape[0]):
                raise DataError(path, "atom_residue points outside residue_names", record=name)
            bonds = g["bonds"][()]
            if bonds.size and (bonds.min() < 0 or bonds.max() >= n):
                raise DataError(path, "bond index outside the atoms", record=name)
            attrs = {k: _attr(v) for k, v in g.attrs.items()}
            if attrs["force_field"] not in FORCE_FIELDS:
                raise DataError(path, f"unknown force_field {attrs['force_field']!r}", record=name)
            for k in ("temperature_K", "frame_interval_ps"):
                if not float(attrs[k]) > 0:
                    raise DataError(path, f"{k} must be > 0, got {attrs[k]}", record=name)
            for start in range(0, x.shape[0], 4096):
                block = x[start : start + 4096]
                ok = np.isfinite(block).all(axis=(1, 2))
                if not ok.all():
                    raise DataError(
                        path,
                        f"non-finite coordinates in frame {start + int(np.flatnonzero(~ok)[0])}",
                        record=name,
                    )
            out[name] = dict(attrs, n_frames=int(x.shape[0]), n_atoms=int(n))
    return out


class PeptideSystem:
    """One system of a file: topology, encodings, orderings (built lazily) and the metadata."""

    def __init__(self, name: str, attrs: dict):
        self.name = name
        self.attrs = attrs

    @property
    def sequence(self) -> str:
        return str(self.attrs["sequence"])

    @property
    def capped(self) -> bool:
        return bool(self.attrs["capped"])

    @property
    def temperature_K(self) -> float:
        return float(self.attrs["temperature_K"])

    @property
    def force_field(self) -> str:
        return str(self.attrs["force_field"])

    @cached_property
    def topology(self):
        from scifm.prose.peptides import topology_from_pdb

        return topology_from_pdb(self.attrs["topology_pdb"])[0]

    @cached_property
    def encodings(self) -> dict[str, np.ndarray]:
        from scifm.prose.encoding import encode_topology

        return encode_topology(self.topology)

    @cached_property
    def orderings(self) -> np.ndarray:
        from scifm.prose.encoding import block_orderings

        return block_orderings(self.topology)

    def create_system(self):
        from scifm.prose.peptides import create_system

        return create_system(self.topology, self.force_field)


class PeptideMDFile:
    """Read access to a validated `peptide_md` file (the HDF5 file is opened per call, so it is safe
    to use from DataLoader workers)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.info = validate_peptide_md(self.path)

    @property
    def names(self) -> list[str]:
        return list(self.info)

    def system(self, name: str) -> PeptideSystem:
        if name not in self.info:
            raise DataError(self.path, f"no system {name!r} (systems: {', '.join(self.names[:20])})")
        return PeptideSystem(name, self.info[name])

    def coordinates(self, name: str, start: int = 0, stop: int | None = None, stride: int = 1) -> np.ndarray:
        import h5py

        self.system(name)
        with h5py.File(self.path, "r") as f:
            return np.asarray(f["systems"][name]["coordinates"][start:stop:stride], dtype=np.float64)


def read_peptide_md(path: str | os.PathLike) -> list[SystemRecord]:
    """Every system of a (validated) file as a `SystemRecord`, attributes as written (list/dict attributes,
    stored as JSON text, decoded again): the inverse of `write_peptide_md`."""
    import h5py

    src = PeptideMDFile(path)
    records: list[SystemRecord] = []
    with h5py.File(src.path, "r") as f:
        for name in src.names:
            g = f["systems"][name]
            attrs = {k: _attr(v) for k, v in g.attrs.items()}
            for k, v in attrs.items():
                if isinstance(v, str) and v[:1] in "[{":
                    try:
                        attrs[k] = json.loads(v)
                    except ValueError:
                        pass
            records.append(
                SystemRecord(
                    name=name,
                    coordinates=g["coordinates"][()],
                    atom_names=[_attr(a) for a in g["atom_names"][()]],
                    elements=[_attr(a) for a in g["elements"][()]],
                    residue_names=[_attr(a) for a in g["residue_names"][()]],
                    atom_residue=g["atom_residue"][()],
                    bonds=g["bonds"][()],
                    attrs=attrs,
                )
            )
    return records


def merge_peptide_md(inputs: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the systems of several peptide_md files into one new file (every input validated first; a
    system name found twice is an error)."""
    return write_peptide_md(out, [r for p in inputs for r in read_peptide_md(p)])


def centre(x: np.ndarray | torch.Tensor):
    """Remove the centroid (unweighted mean position) of each conformation [..., N, 3]."""
    return (
        x - x.mean(axis=-2, keepdims=True) if isinstance(x, np.ndarray) else x - x.mean(dim=-2, keepdim=True)
    )


def coordinate_std(frames: list[np.ndarray]) -> float:
    """One scalar std (nm) of centroid-free coordinates over all frames, atoms and axes."""
    sq, n = 0.0, 0
    for x in frames:
        c = centre(x)
        sq += float((c**2).sum())
        n += c.size
    return float(np.sqrt(sq / max(n, 1)))


class FrameDataset(torch.utils.data.Dataset):
    """Frames of several systems held in memory; item = standardised, centred frame + conditioning.

    Args:
        source: a `PeptideMDFile`.
        ranges: {system name: (start, stop)} frame ranges (split by system or by time, never shuffled frames).
        std_nm: the coordinate scale.
        stride: take every `stride`-th frame.
    """

    def __init__(
        self, source: PeptideMDFile, ranges: dict[str, tuple[int, int | None]], std_nm: float, stride: int = 1
    ):
        self.std_nm = float(std_nm)
        self.systems: list[dict] = []
        index = []
        for s_i, (name, (lo, hi)) in enumerate(ranges.items()):
            sysm = source.system(name)
            x = centre(source.coordinates(name, lo, hi, stride)) / self.std_nm
            enc = {k: torch.as_tensor(v) for k, v in sysm.encodings.items()}
            self.systems.append(
                dict(
                    name=name,
                    x=torch.as_tensor(x, dtype=torch.float32),
                    enc=enc,
                    perms=torch.as_tensor(sysm.orderings),
                )
            )
            index += [(s_i, j) for j in range(x.shape[0])]
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, j = self.index[i]
        sysm = self.systems[s]
        return {"x": sysm["x"][j], "perms": sysm["perms"], **sysm["enc"]}


COND_KEYS = ("atom_type", "residue_type", "residue_index", "seq_len")


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of items to the longest molecule: x [B, N, 3], mask [B, N], perms [B, K, N], cond [B, N]."""
    n_max = max(it["x"].shape[0] for it in items)
    B = len(items)
    K = items[0]["perms"].shape[0]
    x = torch.zeros(B, n_max, 3, dtype=items[0]["x"].dtype)
    mask = torch.zeros(B, n_max, dtype=torch.bool)
    perms = torch.empty(B, K, n_max, dtype=torch.long)
    cond = {k: torch.zeros(B, n_max, dtype=torch.long) for k in COND_KEYS}
    for b, it in enumerate(items):
        n = it["x"].shape[0]
        x[b, :n] = it["x"]
        mask[b, :n] = True
        perms[b, :, :n] = it["perms"]
        perms[b, :, n:] = torch.arange(n, n_max)  # pads after the real ordering in every block
        for k in COND_KEYS:
            cond[k][b, :n] = it[k]
    return {"x": x, "mask": mask, "perms": perms, **cond}


def cond_of(batch: dict) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in COND_KEYS}
