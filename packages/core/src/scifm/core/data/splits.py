"""Splits by trajectory id (never by frame), reproducible with a seed."""

from __future__ import annotations

import numpy as np


def split_by_trajectory(
    traj_ids: np.ndarray, fractions: dict[str, float], seed: int = 42
) -> dict[str, np.ndarray]:
    """Assign whole trajectories to splits; returns frame indices per split (sorted).

    ``fractions`` like {"train": 0.8, "valid": 0.1, "test": 0.1} (normalised). Each split with a positive
    fraction gets at least one trajectory when there are enough trajectories.
    """
    traj_ids = np.asarray(traj_ids)
    unique = np.unique(traj_ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(unique)
    names = list(fractions)
    frac = np.array([max(float(fractions[k]), 0.0) for k in names])
    if frac.sum() <= 0:
        raise ValueError("split fractions must sum to a positive number")
    frac = frac / frac.sum()
    n = len(order)
    positive = frac > 0
    # Every split with a positive fraction gets one trajectory first (when there are enough), then the
    # rest go one by one to the split furthest below its share.
    counts = positive.astype(int) if n >= positive.sum() else np.zeros(len(names), dtype=int)
    while counts.sum() < n:
        counts[int(np.argmax(frac * n - counts))] += 1
    out, start = {}, 0
    for name, c in zip(names, counts, strict=True):
        chosen = order[start : start + c]
        start += c
        out[name] = np.sort(np.flatnonzero(np.isin(traj_ids, chosen)))
    return out
