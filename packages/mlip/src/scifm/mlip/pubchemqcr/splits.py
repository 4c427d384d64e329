"""PubChemQCR splits by trajectory (CID): the paper's seeded shuffle, or a split file of CID lists.

The paper (TDN §4.1 and code) shuffles trajectory indices with Python's ``random`` seeded with 42 and cuts
the shuffled list contiguously: 60/20/20 for the subset, 80/10/10 for the full set. We shuffle the CIDs in
the order the shards are read (shards by name, keys in LMDB order); cut sizes are ``int(f * n)`` for train
and valid, the rest is test. Every snapshot of a trajectory follows its CID, so splits never share a molecule.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

from scifm.core.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")
PAPER_FRACTIONS = {True: (0.6, 0.2, 0.2), False: (0.8, 0.1, 0.1)}  # subset -> fractions
_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}


def paper_split(
    cids, subset: bool, seed: int = 42, fractions: tuple[float, float, float] | None = None
) -> dict[str, np.ndarray]:
    """CIDs [M] (reading order) -> {"train", "valid", "test"}: CID arrays, disjoint, reproducible."""
    cids = np.asarray(cids, dtype=np.int64)
    if len(np.unique(cids)) != len(cids):
        raise ValueError("duplicate CIDs: a trajectory must appear once before splitting")
    f = fractions or PAPER_FRACTIONS[bool(subset)]
    idx = list(range(len(cids)))
    random.Random(seed).shuffle(idx)  # == random.seed(seed); random.shuffle(idx)
    n = len(idx)
    n_train, n_valid = int(f[0] * n), int(f[1] * n)
    cuts = {
        "train": idx[:n_train],
        "valid": idx[n_train : n_train + n_valid],
        "test": idx[n_train + n_valid :],
    }
    return {k: cids[np.asarray(v, dtype=np.int64)] for k, v in cuts.items()}


def _as_cid(value, path, name) -> int:
    try:
        cid = int(str(value).strip())
    except ValueError:
        raise DataError(path, f"split {name!r} holds {value!r}, which is not a CID") from None
    if cid < 0:
        raise DataError(path, f"split {name!r} holds a negative CID {cid}")
    return cid


def read_split_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """JSON ``{"train": [cid, ...], "valid"|"val": [...], "test": [...]}`` (ints or zero-padded strings).

    Missing splits come back empty. Overlapping splits are an error (a molecule in two splits leaks).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(path, f"cannot read split file: {exc}") from None
    except ValueError as exc:
        raise DataError(path, f"split file is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(path, "split file must be a JSON object {train: [...], valid: [...], test: [...]}")
    out = {k: np.zeros(0, dtype=np.int64) for k in SPLIT_NAMES}
    for key, values in data.items():
        name = _ALIASES.get(str(key).lower())
        if name is None:
            raise DataError(path, f"unknown split {key!r}; expected train, valid (or val) and test")
        if not isinstance(values, list):
            raise DataError(path, f"split {key!r} must be a list of CIDs")
        out[name] = np.asarray([_as_cid(v, path, key) for v in values], dtype=np.int64)
    for a in range(3):
        for b in range(a + 1, 3):
            both = np.intersect1d(out[SPLIT_NAMES[a]], out[SPLIT_NAMES[b]])
            if len(both):
                raise DataError(
                    path,
                    f"splits {SPLIT_NAMES[a]} and {SPLIT_NAMES[b]} share {len(both)} CID(s), "
                    f"e.g. {int(both[0])}",
                )
    return out


def write_split_file(path: str | os.PathLike, parts: dict[str, np.ndarray]) -> Path:
    """Write CID lists as JSON (ints), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({k: [int(c) for c in parts.get(k, [])] for k in SPLIT_NAMES}))
    os.replace(tmp, path)
    return path
