"""Atomic graphs: numbers, positions, cell, pbc and edges within a cutoff, batched as PyG ``Batch``.

Edge convention: ``edge_index[0]`` = neighbour ``j`` (source), ``edge_index[1]`` = centre ``i`` (receiver);
``edge_vec = pos[j] - pos[i] + shifts @ cell``. Edge vectors are recomputed from positions (and an optional
strain) inside the autograd graph so that forces and stress come from one backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from scifm.core.neighbors import neighbor_list

LABEL_KEYS = ("energy", "forces", "stress", "charges", "dipole")


def _tensor(x, dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


def atomic_graph(
    numbers: Sequence[int] | np.ndarray,
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: Sequence[bool] | np.ndarray | None = None,
    energy: float | None = None,
    forces: np.ndarray | None = None,
    stress: np.ndarray | None = None,
    charges: np.ndarray | None = None,
    dipole: np.ndarray | None = None,
    total_charge: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """One frame as a PyG ``Data``. Shapes: pos [N,3] Å, cell [1,3,3], pbc [1,3], stress [1,3,3] eV/Å³
    (ASE sign, full 3×3), dipole [1,3] e·Å, charges [N] e, energy [1] eV, forces [N,3] eV/Å."""
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(numbers) != len(positions):
        raise ValueError(f"{len(numbers)} atomic numbers but {len(positions)} positions")
    pbc_arr = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    cell_arr = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    i, j, S = neighbor_list(positions, cutoff, cell_arr, pbc_arr)
    data = Data(
        z=torch.as_tensor(numbers),
        pos=_tensor(positions, dtype),
        cell=_tensor(cell_arr, dtype).unsqueeze(0),
        pbc=torch.as_tensor(pbc_arr).unsqueeze(0),
        edge_index=torch.stack([torch.as_tensor(j), torch.as_tensor(i)]),
        shifts=torch.as_tensor(S).to(dtype),
        n_atoms=torch.tensor([len(numbers)]),
        total_charge=torch.tensor([float(total_charge)], dtype=dtype),
    )
    if energy is not None:
        data.energy = torch.tensor([float(energy)], dtype=dtype)
    if forces is not None:
        data.forces = _tensor(forces, dtype).reshape(-1, 3)
    if stress is not None:
        data.stress = _tensor(voigt_to_matrix(stress), dtype).unsqueeze(0)
    if charges is not None:
        data.charges = _tensor(charges, dtype).reshape(-1)
    if dipole is not None:
        data.dipole = _tensor(dipole, dtype).reshape(1, 3)
    return data


def voigt_to_matrix(stress) -> np.ndarray:
    """ASE Voigt order (xx, yy, zz, yz, xz, xy) or a 3×3 matrix → 3×3 matrix."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (3, 3):
        return s
    if s.shape != (6,):
        raise ValueError(f"stress must be 6 Voigt components or 3x3, got shape {s.shape}")
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def graph_from_atoms(atoms, cutoff: float, dtype: torch.dtype = torch.float32, labels: bool = True) -> Data:
    """``ase.Atoms`` → graph. Labels come from ``atoms.calc`` results (energy, forces, stress), then
    ``info``/``arrays`` (``energy``/``REF_energy``, ``forces``/``REF_forces``, ``charges``, ``dipole``).
    The total charge is ``atoms.info["charge"]`` (default 0)."""
    from scifm.core.data.labels import atoms_labels  # local: keeps graph importable without ase data helpers

    lab = atoms_labels(atoms) if labels else {}
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    cell = np.asarray(atoms.get_cell(), dtype=np.float64) if pbc.any() else None
    return atomic_graph(
        atoms.get_atomic_numbers(),
        atoms.get_positions(),
        cutoff,
        cell=cell,
        pbc=pbc,
        total_charge=float(atoms.info.get("charge", 0.0)),
        dtype=dtype,
        **lab,
    )


def batch_graphs(graphs: Sequence[Data]) -> Batch:
    """Concatenate graphs; ``edge_index`` is offset per graph and ``batch`` maps atoms to graphs."""
    return Batch.from_data_list(list(graphs))


def edge_vectors(
    pos: torch.Tensor, cell: torch.Tensor, shifts: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
) -> torch.Tensor:
    """Edge vectors [E,3] = pos[j] - pos[i] + shifts @ cell[graph of i]; differentiable in pos and cell."""
    j, i = edge_index[0], edge_index[1]
    offset = torch.einsum("ek,ekl->el", shifts.to(pos.dtype), cell[batch[i]])
    return pos[j] - pos[i] + offset


def strained(
    pos: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a symmetric displacement gradient ``eps`` [B,3,3] to positions and cell:
    r → r (I + ε), h → h (I + ε). Then (1/V) ∂E/∂ε is the stress in ASE's sign convention."""
    eye = torch.eye(3, dtype=pos.dtype, device=pos.device)
    sym = 0.5 * (eps + eps.transpose(-1, -2))
    deform = eye + sym
    pos2 = torch.einsum("nk,nkl->nl", pos, deform[batch])
    cell2 = torch.bmm(cell, deform)
    return pos2, cell2
