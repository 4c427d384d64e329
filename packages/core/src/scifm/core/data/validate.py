"""Checks every frame must pass before any work starts (clear errors naming file, frame, problem)."""

from __future__ import annotations

import numpy as np

from scifm.core.errors import DataError

MIN_DISTANCE_A = 0.1
MAX_Z = 118


def check_frame(
    path,
    index: int,
    numbers: np.ndarray,
    positions: np.ndarray,
    labels: dict,
    require: tuple[str, ...] = ("energy", "forces"),
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    min_distance: float = MIN_DISTANCE_A,
) -> None:
    """Raise DataError(path, problem, record=f"frame {index}") on the first problem found."""
    rec = f"frame {index}"
    n = len(numbers)
    if n == 0:
        raise DataError(path, "frame has no atoms", rec)
    bad = [int(z) for z in numbers if z < 1 or z > MAX_Z]
    if bad:
        raise DataError(path, f"unknown element (atomic number {bad[0]})", rec)
    if positions.shape != (n, 3):
        raise DataError(path, f"positions have shape {positions.shape}, expected ({n}, 3)", rec)
    if not np.isfinite(positions).all():
        raise DataError(path, "positions contain NaN or inf", rec)
    for key in require:
        if key not in labels:
            raise DataError(path, f"missing label '{key}'", rec)
    shapes = {"energy": (), "forces": (n, 3), "charges": (n,), "dipole": (3,)}
    for key, value in labels.items():
        arr = np.asarray(value, dtype=np.float64)
        want = shapes.get(key)
        if key == "stress":
            if arr.shape not in ((6,), (3, 3)):
                raise DataError(path, f"stress has shape {arr.shape}, expected (6,) or (3, 3)", rec)
        elif want is not None and arr.shape != want:
            raise DataError(path, f"{key} has shape {arr.shape}, expected {want}", rec)
        if not np.isfinite(arr).all():
            raise DataError(path, f"{key} contains NaN or inf", rec)
    if n > 1:
        from scifm.core.neighbors import neighbor_list

        i, j, S = neighbor_list(positions, min_distance, cell, pbc)
        if len(i):
            raise DataError(
                path,
                f"atoms {int(i[0])} and {int(j[0])} are closer than {min_distance} Å",
                rec,
            )
