"""Potential: an energy model plus reference energies and scale/shift; forces and stress by autograd.

    E_i = scale * node_energy_i + shift + atom_ref[Z_i] + physics_node_energy_i [+ ZBL_i]      (eV)
    E   = sum_i E_i + graph_energy,   F = -dE/dr,   sigma = (1/V) dE/d(eps)   (ASE sign, eV/Å^3)

where eps is a symmetric displacement gradient applied to positions and cell (``scifm.core.graph.strained``).

Physics hook: a model may return, besides ``node_energy`` (scaled), the *unscaled* terms
``physics_node_energy`` [N] (eV, e.g. per-atom Coulomb and charge-equilibration energies; keeps
``node_energy`` summing to the energy) and/or ``graph_energy`` [B] (eV, added to the graph energies only).
Physical terms must not be scaled by the statistics fitted to the short-range network.

``zbl``: an optional ZBL nuclear-repulsion prior (``scifm.mlip.physics.zbl``) at distances shorter than any
bond, so that a network trained on near-equilibrium frames cannot collapse atoms in relaxations or hot MD.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from scifm.core.graph import edge_vectors, strained
from scifm.core.nn import scatter_sum

N_ELEMENTS = 119  # index 0 unused; Z = 1..118


def _graph_index(data) -> tuple[torch.Tensor, int]:
    """Atom -> graph index [N] and the number of graphs, for a PyG Batch or a single Data."""
    b = getattr(data, "batch", None)
    if b is None:
        return torch.zeros(data.z.shape[0], dtype=torch.long, device=data.z.device), 1
    return b, int(data.num_graphs)


def _frames(data, energies=None, forces=None) -> Iterable[tuple[np.ndarray, float, np.ndarray | None]]:
    """Yield (numbers [N], energy, forces [N,3] or None) per frame from graphs or from arrays."""
    if energies is not None:
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        numbers = list(data)
        if len(numbers) != len(energies):
            raise ValueError(f"{len(numbers)} frames of atomic numbers but {len(energies)} energies")
        if forces is not None and len(forces) != len(numbers):
            raise ValueError(f"{len(numbers)} frames of atomic numbers but {len(forces)} force arrays")
        for k, (z, e) in enumerate(zip(numbers, energies, strict=True)):
            f = None if forces is None else np.asarray(forces[k], dtype=np.float64)
            yield np.asarray(z, dtype=np.int64).reshape(-1), float(e), f
        return
    for g in data:
        if getattr(g, "energy", None) is None:
            raise ValueError("every graph needs an energy label to fit reference energies")
        idx, n_graphs = _graph_index(g)
        z = g.z.cpu().numpy()
        idx = idx.cpu().numpy()
        e = g.energy.detach().double().cpu().numpy().reshape(-1)
        f = getattr(g, "forces", None)
        f = None if f is None else f.detach().double().cpu().numpy()
        for k in range(n_graphs):
            mask = idx == k
            yield z[mask], float(e[k]), (None if f is None else f[mask])


class Potential(nn.Module):
    """Wraps a registry model (``model(data)["node_energy"]``). Buffers: ``atom_ref`` [119] eV,
    ``scale`` and ``shift`` (scalars, eV). Moves with ``.to(dtype/device)`` and is saved in the state dict."""

    def __init__(
        self,
        model: nn.Module,
        atom_ref: torch.Tensor | Sequence[float] | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
        zbl: bool = False,
    ):
        super().__init__()
        self.model = model
        self.zbl = None
        if zbl:
            from scifm.mlip.physics.zbl import ZBLRepulsion

            self.zbl = ZBLRepulsion()
        ref = torch.zeros(N_ELEMENTS) if atom_ref is None else torch.as_tensor(atom_ref, dtype=torch.float64)
        if ref.shape != (N_ELEMENTS,):
            raise ValueError(f"atom_ref must have {N_ELEMENTS} entries (index = Z), got {tuple(ref.shape)}")
        dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
        self.register_buffer("atom_ref", ref.to(dtype))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=dtype))
        self.register_buffer("shift", torch.tensor(float(shift), dtype=dtype))

    @property
    def cutoff(self) -> float:
        return float(self.model.cutoff)

    @property
    def elements(self) -> list[int]:
        return list(self.model.elements)

    # -- statistics ------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_atom_ref(self, data, energies=None) -> dict[int, float]:
        """Least-squares reference energies: E_total ≈ sum_Z n_Z e_Z (float64).

        ``data``: an iterable of graphs (Data or Batch with ``z`` and ``energy``), or, with ``energies``
        given, a sequence of atomic-number arrays (one per frame). Elements never seen get 0. When the
        compositions are linearly dependent the minimum-norm solution is taken. Returns {Z: e_Z}.
        """
        rows, rhs = [], []
        for z, e, _ in _frames(data, energies):
            rows.append(np.bincount(z, minlength=N_ELEMENTS)[:N_ELEMENTS].astype(np.float64))
            rhs.append(e)
        if not rows:
            raise ValueError("no frames to fit reference energies on")
        counts, target = np.stack(rows), np.asarray(rhs)
        present = np.flatnonzero(counts.sum(axis=0) > 0)
        sol, *_ = np.linalg.lstsq(counts[:, present], target, rcond=None)
        ref = np.zeros(N_ELEMENTS)
        ref[present] = sol
        self.atom_ref.copy_(torch.as_tensor(ref, dtype=self.atom_ref.dtype))
        return {int(zz): float(v) for zz, v in zip(present, sol, strict=True)}

    @torch.no_grad()
    def fit_scale_shift(self, data, energies=None, forces=None) -> tuple[float, float]:
        """shift = mean per-atom energy left after the reference energies; scale = RMS of the force
        components (1 when no forces are given). Call after ``fit_atom_ref``. Returns (scale, shift)."""
        ref = self.atom_ref.double().cpu().numpy()
        per_atom, f_sq, f_n = [], 0.0, 0
        for z, e, f in _frames(data, energies, forces):
            per_atom.append((e - ref[z].sum()) / max(len(z), 1))
            if f is not None:
                f_sq += float((f**2).sum())
                f_n += f.size
        if not per_atom:
            raise ValueError("no frames to fit the energy scale and shift on")
        shift = float(np.mean(per_atom))
        scale = float(np.sqrt(f_sq / f_n)) if f_n and f_sq > 0 else 1.0
        self.scale.fill_(scale)
        self.shift.fill_(shift)
        return scale, shift

    def fit_statistics(self, data, energies=None, forces=None) -> dict:
        """``fit_atom_ref`` then ``fit_scale_shift`` on the same frames; returns what was fitted."""
        ref = self.fit_atom_ref(data, energies)
        scale, shift = self.fit_scale_shift(data, energies, forces)
        return {"atom_ref": ref, "scale": scale, "shift": shift}

    # -- evaluation ------------------------------------------------------------------------------
    def forward(self, data, forces: bool = True, stress: bool = False) -> dict[str, torch.Tensor]:
        """data: graph(s) from ``scifm.core.graph`` (z, pos, cell, shifts, edge_index[, batch]).

        Returns energy [B], node_energy [N] (sums to energy), forces [N,3] if ``forces``, stress [B,3,3]
        if ``stress`` (every graph must have a cell of non-zero volume), plus any extra model outputs.
        Gradients keep their graph in training mode so that force and stress losses can be trained.
        """
        batch, n_graphs = _graph_index(data)
        pos, cell = data.pos, data.cell.reshape(-1, 3, 3)
        volume = None
        if stress:
            volume = torch.linalg.det(cell).abs()
            if bool((volume < 1e-12).any()):
                raise ValueError(
                    "stress requested for a graph without a periodic cell (zero volume): "
                    "stress is only defined for periodic systems"
                )
        with torch.enable_grad():
            inputs = []
            if forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            if forces:
                inputs.append(pos)
            if stress:
                eps = torch.zeros(n_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
                inputs.append(eps)
                pos_s, cell_s = strained(pos, cell, batch, eps)
            else:
                pos_s, cell_s = pos, cell
            graph = copy.copy(data)
            # models that need positions or the cell (long-range terms, dipoles) see the (strained,
            # differentiable) ones, so their energy contributes to forces and stress as well
            graph.pos = pos_s
            graph.cell = cell_s
            graph.edge_vec = edge_vectors(pos_s, cell_s, data.shifts, data.edge_index, batch)
            graph.batch = batch
            graph.num_graphs = n_graphs
            out = dict(self.model(graph))
            node_energy = self.scale * out.pop("node_energy") + self.shift + self.atom_ref[data.z]
            physics = out.pop("physics_node_energy", None)
            if physics is not None:
                node_energy = node_energy + physics
            if self.zbl is not None:
                node_energy = node_energy + self.zbl(data.z, data.edge_index, graph.edge_vec)
            energy = scatter_sum(node_energy, batch, dim=0, dim_size=n_graphs)
            graph_energy = out.pop("graph_energy", None)
            if graph_energy is not None:
                energy = energy + graph_energy
            result = {"energy": energy, "node_energy": node_energy, **out}
            if inputs:
                grads = self._grad(energy, inputs)
                if forces:
                    result["forces"] = -grads[0]
                if stress:
                    result["stress"] = grads[-1] / volume.view(-1, 1, 1)
        return result

    def _grad(self, energy: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if not energy.requires_grad:  # e.g. isolated atoms and frozen weights: no dependence on positions
            return [torch.zeros_like(x) for x in inputs]
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training, allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]
