"""Neighbour lists within a cutoff (vesin), periodic or not, triclinic, tiny cells included."""

from __future__ import annotations

import numpy as np
import vesin


def neighbor_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | list[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list (each pair in both directions) of atoms closer than ``cutoff``.

    positions [N,3] Å, cell [3,3] Å (rows are lattice vectors), pbc [3] bool.
    Returns ``i [E], j [E], S [E,3]`` (int64) such that ``r_ij = positions[j] - positions[i] + S @ cell``.
    An atom sees its own periodic images when the cell is smaller than twice the cutoff.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    pbc_arr = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if pbc_arr.any() and abs(np.linalg.det(box)) < 1e-12:
        raise ValueError("periodic system with a degenerate cell (zero volume)")
    if not pbc_arr.any():
        box = np.zeros((3, 3))
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    periodic = [bool(p) for p in pbc_arr]
    i, j, S = calc.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)
