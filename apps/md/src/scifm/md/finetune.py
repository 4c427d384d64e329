"""Shared pieces of distillation and density alignment: only the energy readout is trained.

The readout is the last MLP that maps node features to per-atom energies: ``energy_mlp`` (BAMBOO) or
``readout`` (PaiNN, SchNet, NequIP). Charges, Coulomb, χ/η, the message-passing layers and the Potential's
buffers (atom_ref, scale, shift) stay bit-identical.

Virial convention: W = -V σ (eV, 3×3), σ the ASE stress; for a pair potential W = Σ_pairs r ⊗ f.
The NN part of the pressure from a subset of edges (e.g. intermolecular ones):
    P_sub = -(1/3V) Σ_{e ∈ sub} r_e · ∂E_NN/∂r_e      (r_e the edge vector; E_NN = scale·Σ node_energy)
(for the full edge set this is the NN part of -tr(σ)/3).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase import units

from scifm.core.errors import ConfigError
from scifm.core.graph import atomic_graph, batch_graphs, edge_vectors

READOUT_NAMES = ("energy_mlp", "readout")


def readout_name(potential) -> str:
    for name in READOUT_NAMES:
        if isinstance(getattr(potential.model, name, None), torch.nn.Module):
            return name
    raise ConfigError(
        f"model {type(potential.model).__name__} has no energy readout "
        f"({' or '.join(READOUT_NAMES)}); cannot fine-tune only the readout"
    )


def freeze_to_readout(potential) -> list[torch.nn.Parameter]:
    """requires_grad only on the readout's parameters; returns them."""
    name = readout_name(potential)
    for p in potential.parameters():
        p.requires_grad_(False)
    params = list(getattr(potential.model, name).parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def frame_graph(atoms, cutoff: float, dtype: torch.dtype):
    """One frame as a batched graph (positions, cell, pbc, total charge from ``info["charge"]``)."""
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    g = atomic_graph(
        atoms.numbers,
        atoms.positions,
        cutoff,
        cell=np.asarray(atoms.cell) if pbc.any() else None,
        pbc=pbc,
        total_charge=float(atoms.info.get("charge", 0.0)),
        dtype=dtype,
    )
    return batch_graphs([g])


def predict(potential, graph, periodic: bool) -> dict[str, torch.Tensor]:
    """energy [B], forces [N,3], virial [B,3,3] (eV; periodic only) — differentiable in the weights when
    the potential is in training mode."""
    out = potential(graph, forces=True, stress=periodic)
    res = {"energy": out["energy"], "forces": out["forces"]}
    if periodic:
        vol = torch.linalg.det(graph.cell.reshape(-1, 3, 3)).abs().view(-1, 1, 1)
        res["virial"] = -out["stress"] * vol
    return res


def cluster_virial(pos: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
    """Virial of a finite cluster W = Σ_i r_i ⊗ F_i [3,3] (eV; origin-independent when Σ F = 0)."""
    return torch.einsum("ni,nj->ij", pos, forces)


def nn_edge_pressure_bar(
    potential, graph, edge_mask: torch.Tensor | None = None, create_graph: bool = True
) -> torch.Tensor:
    """NN pressure (bar) of the edges in ``edge_mask`` [E] (all edges if None) for a single periodic graph.
    Differentiable in the weights when ``create_graph``."""
    batch = torch.zeros(graph.z.shape[0], dtype=torch.long)
    cell = graph.cell.reshape(-1, 3, 3)
    with torch.enable_grad():
        ev = (
            edge_vectors(graph.pos, cell, graph.shifts, graph.edge_index, batch).detach().requires_grad_(True)
        )
        g = copy.copy(graph)
        g.edge_vec, g.batch, g.num_graphs = ev, batch, 1
        out = potential.model(g)
        e_nn = (potential.scale * out["node_energy"]).sum()
        (de,) = torch.autograd.grad(e_nn, ev, create_graph=create_graph)
    rdot = (ev.detach() * de).sum(-1)
    if edge_mask is not None:
        rdot = rdot[edge_mask]
    volume = torch.linalg.det(cell[0]).abs()
    return -rdot.sum() / (3.0 * volume) / units.bar


def intermolecular_edges(graph, mol_ids: np.ndarray) -> torch.Tensor:
    """Boolean mask [E] of edges joining two different molecules."""
    j, i = graph.edge_index
    m = torch.as_tensor(np.asarray(mol_ids, dtype=np.int64))
    return m[j] != m[i]


def readout_state(potential) -> dict[str, torch.Tensor]:
    name = readout_name(potential)
    return {
        k: v.detach().clone() for k, v in potential.state_dict().items() if k.startswith(f"model.{name}.")
    }


def changed_keys(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """State-dict keys whose tensors are not bit-identical."""
    return sorted(k for k in a if k not in b or a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k]))


def plot_epoch_curves(
    path, epochs: list, series: dict[str, list], ylabel: str, log_y: bool = False, zero_line: bool = False
) -> None:
    """One line per series (label -> values per epoch) against the epoch; PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, values in series.items():
        ax.plot(epochs, values, marker="o", ms=3, label=label)
    if zero_line:
        ax.axhline(0, color="0.6", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
