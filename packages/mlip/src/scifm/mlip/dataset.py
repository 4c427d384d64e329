"""Frames (extxyz, atomistic HDF5) → graph datasets and loaders for MLIP training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.loader import DataLoader

from scifm.core.data.atomistic import AtomisticH5
from scifm.core.data.extxyz import read_extxyz
from scifm.core.errors import DataError
from scifm.core.graph import graph_from_atoms

OPTIONAL_LABELS = ("stress", "charges", "dipole")


def open_frames(path: str | Path) -> list:
    """Read a training file: ``.extxyz``/``.xyz`` through ASE, an atomistic ``.h5``, or a PubChemQCR
    LMDB spec ``pubchemqcr:PATH?stage=1st&split=train`` (see ``scifm/mlip/pubchemqcr/README.md``).
    Validated."""
    if str(path).startswith("pubchemqcr:"):
        from scifm.mlip.pubchemqcr.reader import open_pubchemqcr

        return open_pubchemqcr(str(path))
    path = Path(str(path))
    if path.suffix in (".h5", ".hdf5"):
        ds = AtomisticH5(path)
        return [ds.to_atoms(k) for k in range(len(ds))]
    if path.suffix in (".extxyz", ".xyz"):
        return read_extxyz(path)
    raise DataError(path, f"unknown file type '{path.suffix}' (expected .extxyz, .xyz or .h5)")


class GraphDataset(Dataset):
    """In-memory graphs built once from ``ase.Atoms`` frames (neighbour lists precomputed)."""

    def __init__(self, frames, cutoff: float, dtype: torch.dtype = torch.float32):
        self.frames = list(frames)
        self.cutoff = float(cutoff)
        self.graphs = [graph_from_atoms(a, cutoff, dtype=dtype) for a in self.frames]
        # A label is used only when every frame carries it (mixed sets would bias the loss).
        self.labels = {k for k in ("energy", "forces", *OPTIONAL_LABELS) if all(k in g for g in self.graphs)}
        for g in self.graphs:
            for k in OPTIONAL_LABELS:
                if k in g and k not in self.labels:
                    del g[k]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, k: int):
        return self.graphs[k]

    @property
    def traj_ids(self) -> np.ndarray:
        return np.array([int(a.info.get("traj_id", k)) for k, a in enumerate(self.frames)])


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
