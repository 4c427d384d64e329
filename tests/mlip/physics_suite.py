"""Reusable physics conformance suite for every model in the MLIP registry.

A model takes part by being registered (``@register_model``) and providing ``tiny_config()``. Tests run in
float64 on randomly initialised (and perturbed) weights, so a model passes by construction, not by
training. Helpers here build small molecules and periodic cells from the model's own element list.
"""

from __future__ import annotations

import numpy as np
import torch

from scifm.core.graph import atomic_graph, batch_graphs
from scifm.mlip.models.registry import available_models, build_model, model_class
from scifm.mlip.potential import Potential

DT = torch.float64
MODELS = available_models()


def tiny_config(name: str) -> dict:
    """The model's own tiny config (the hook every registered model provides)."""
    return dict(model_class(name).tiny_config())


def make_potential(name: str, seed: int = 0, perturb: float = 0.1) -> Potential:
    """A float64 Potential in eval mode with random weights, perturbed so that no layer is left at
    a trivial initial value (zero-initialised outputs would make every invariance test vacuous)."""
    torch.manual_seed(seed)
    model = build_model(name, **tiny_config(name))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    pot = Potential(model, scale=1.3, shift=-0.2)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        pot.atom_ref[model.elements] = torch.as_tensor(
            rng.normal(-5, 1, len(model.elements)), dtype=pot.atom_ref.dtype
        )
    return pot.to(DT).eval()


def evaluate(pot: Potential, numbers, positions, cell=None, pbc=None, stress=False) -> dict[str, np.ndarray]:
    """Energy (float), forces [N,3], node_energy [N] and, if asked, stress [3,3] of one structure."""
    g = atomic_graph(numbers, positions, pot.cutoff, cell=cell, pbc=pbc, dtype=DT)
    out = pot(batch_graphs([g]), forces=True, stress=stress)
    res = {
        "energy": float(out["energy"][0].detach()),
        "forces": out["forces"].detach().numpy(),
        "node_energy": out["node_energy"].detach().numpy(),
    }
    if stress:
        res["stress"] = out["stress"][0].detach().numpy()
    return res


def random_molecule(elements, n: int, rng: np.random.Generator, box: float = 2.6, min_dist: float = 1.0):
    """n atoms of the model's elements in a box, no pair closer than ``min_dist`` Å."""
    pos: list[np.ndarray] = []
    while len(pos) < n:
        x = rng.uniform(0, box, 3)
        if all(np.linalg.norm(x - p) >= min_dist for p in pos):
            pos.append(x)
    numbers = rng.choice(np.asarray(elements), size=n)
    numbers[:2] = [elements[0], elements[-1]]  # at least two species
    return numbers, np.array(pos)


def periodic_cell(elements, rng: np.random.Generator):
    """A 2-atom triclinic (distorted fcc-primitive, diamond-like basis) cell much smaller than the
    cutoff, so every atom sees many of its own periodic images."""
    a = 3.2
    cell = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    cell = cell @ (np.eye(3) + 0.05 * rng.normal(size=(3, 3)))  # generic triclinic
    frac = np.array([[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]) + 0.03 * rng.normal(size=(2, 3))
    numbers = np.array([elements[0], elements[-1]])
    return numbers, frac @ cell, cell


def random_rotation(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def central_difference_forces(energy, positions, h: float = 1e-5) -> np.ndarray:
    """-dE/dx by central differences of `energy(positions [N, 3]) -> float` (for checks of F = -dE/dx)."""
    x = np.asarray(positions, dtype=float)
    f = np.zeros_like(x)
    for a in range(len(x)):
        for k in range(3):
            xp, xm = x.copy(), x.copy()
            xp[a, k] += h
            xm[a, k] -= h
            f[a, k] = -(energy(xp) - energy(xm)) / (2 * h)
    return f


def central_difference_strain_derivative(energy, positions, cell, h: float = 1e-5) -> np.ndarray:
    """dE/dε [3, 3] by central differences of `energy(positions, cell) -> float` under the symmetric strain
    ε (positions and cell scaled together: x -> x (1 + ε)); equals the virial -W, and the stress times the
    volume."""
    x, c = np.asarray(positions, dtype=float), np.asarray(cell, dtype=float)
    out = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            d = np.zeros((3, 3))
            d[a, b] += h / 2
            d[b, a] += h / 2
            up, down = np.eye(3) + d, np.eye(3) - d
            out[a, b] = (energy(x @ up, c @ up) - energy(x @ down, c @ down)) / (2 * h)
    return out


def fd_forces(pot: Potential, numbers, positions, cell=None, pbc=None, h: float = 1e-5) -> np.ndarray:
    """Forces of a Potential by central differences of its energy."""
    return central_difference_forces(lambda x: evaluate(pot, numbers, x, cell, pbc)["energy"], positions, h)
