"""Potential: reference energies by least squares, scale/shift statistics, training gradients, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_suite import DT, make_potential, periodic_cell

from scifm.core.errors import ConfigError
from scifm.core.graph import atomic_graph, batch_graphs
from scifm.mlip.models import PaiNN, available_models, build_model, register_model
from scifm.mlip.potential import Potential


def _frames(rng, e_ref, n_frames=12):
    elements = sorted(e_ref)
    numbers = [rng.choice(elements, size=rng.integers(2, 7)) for _ in range(n_frames)]
    energies = [sum(e_ref[z] for z in zz) for zz in numbers]
    return numbers, energies


def test_fit_atom_ref_recovers_exact_references():
    rng = np.random.default_rng(0)
    e_ref = {1: -13.6, 6: -1029.8, 8: -2041.3}
    numbers, energies = _frames(rng, e_ref)
    pot = Potential(PaiNN(**PaiNN.tiny_config()))
    fitted = pot.fit_atom_ref(numbers, energies)
    assert fitted == pytest.approx(e_ref, abs=1e-8)
    assert pot.atom_ref[[1, 6, 8]].tolist() == pytest.approx(
        [-13.6, -1029.8, -2041.3], abs=1e-3
    )  # float32 buffer
    others = torch.ones(119, dtype=torch.bool)
    others[[1, 6, 8]] = False
    assert (pot.atom_ref[others] == 0).all()  # absent elements -> 0


def test_fit_from_graphs_and_scale_shift():
    rng = np.random.default_rng(1)
    e_ref = {1: -0.5, 8: -75.0}
    numbers, energies = _frames(rng, e_ref, 8)
    graphs, forces = [], []
    for zz, e in zip(numbers, energies, strict=True):
        f = rng.normal(size=(len(zz), 3)) * 0.3
        forces.append(f)
        # +0.1 eV per atom on top of the references: the shift must find it
        graphs.append(
            atomic_graph(
                zz, rng.uniform(0, 3, (len(zz), 3)), 4.0, energy=e + 0.1 * len(zz), forces=f, dtype=DT
            )
        )
    pot = Potential(PaiNN(**PaiNN.tiny_config())).to(DT)
    # batched graphs are split back into frames
    stats = pot.fit_statistics([batch_graphs(graphs[:5]), batch_graphs(graphs[5:])])
    # references absorb the constant 0.1 eV/atom: least squares is exact, so the residual shift is ~0
    assert stats["atom_ref"][1] == pytest.approx(-0.4) and stats["atom_ref"][8] == pytest.approx(-74.9)
    assert stats["shift"] == pytest.approx(0.0, abs=1e-9)
    rms = np.sqrt(np.mean(np.concatenate(forces) ** 2))
    assert stats["scale"] == pytest.approx(rms)
    # with references fixed by hand, the shift is the mean per-atom residual
    pot.atom_ref.zero_()
    pot.atom_ref[[1, 8]] = torch.tensor([-0.5, -75.0], dtype=DT)
    _, shift = pot.fit_scale_shift(graphs)
    assert shift == pytest.approx(0.1)


def test_output_is_scale_times_model_plus_shift_plus_reference():
    pot = make_potential("painn")
    g = batch_graphs([atomic_graph([1, 8], [[0, 0, 0], [0.97, 0, 0]], pot.cutoff, dtype=DT)])
    out = pot(g, forces=False)
    g.edge_vec = g.pos[g.edge_index[0]] - g.pos[g.edge_index[1]]
    raw = pot.model(g)["node_energy"]
    expected = pot.scale * raw + pot.shift + pot.atom_ref[g.z]
    torch.testing.assert_close(out["node_energy"], expected)
    torch.testing.assert_close(out["energy"], expected.sum().reshape(1))


def test_stress_of_a_molecule_is_an_error():
    pot = make_potential("painn")
    g = batch_graphs([atomic_graph([1, 8], [[0, 0, 0], [0.97, 0, 0]], pot.cutoff, dtype=DT)])
    with pytest.raises(ValueError, match="periodic"):
        pot(g, stress=True)


def test_training_mode_force_and_stress_losses_have_weight_gradients():
    pot = make_potential("painn").train()
    z, x, cell = periodic_cell(pot.elements, np.random.default_rng(0))
    g = batch_graphs([atomic_graph(z, x, pot.cutoff, cell, [True] * 3, dtype=DT)])
    out = pot(g, forces=True, stress=True)
    loss = (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()
    loss.backward()
    grads = {n: p.grad for n, p in pot.model.named_parameters()}
    # every weight that shapes the energy surface gets a gradient (a constant bias of the readout cannot)
    missing = [n for n, gr in grads.items() if gr is None or not gr.abs().sum() > 0]
    assert set(missing) <= {"readout.2.bias"}, missing
    # eval mode: no graph through the gradients
    out = pot.eval()(g, forces=True)
    assert not out["forces"].requires_grad or out["forces"].grad_fn is None


def test_isolated_atom_has_zero_force_and_reference_energy():
    pot = make_potential("painn")
    g = batch_graphs([atomic_graph([8], [[0.0, 0.0, 0.0]], pot.cutoff, dtype=DT)])
    out = pot(g, forces=True)
    assert out["forces"].abs().max() == 0
    assert out["energy"].shape == (1,)


def test_registry():
    assert "painn" in available_models()
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("no-such-model")
    with pytest.raises(ConfigError, match="unknown config keys"):
        build_model("painn", cutoff=4.0, widht=3)
    with pytest.raises(ConfigError, match="elements"):
        build_model("painn", elements=[1, 1])
    with pytest.raises(ValueError, match="already registered"):
        register_model("painn")(type("Other", (PaiNN,), {}))
    m = build_model("painn", **PaiNN.tiny_config())
    with pytest.raises(ValueError, match="not in this model's element list"):
        m.species(torch.tensor([1, 26]))


def test_cluster_virial_loss_weighs_finite_frames_only():
    """The virial loss term: W = Σ (r_i - r̄) ⊗ F_i per graph, compared for finite clusters only (periodic
    frames carry stress labels instead), MSE per component over the atom count."""
    from scifm.mlip.train import MLIPTask, cluster_virial

    rng = np.random.default_rng(3)

    def graph(n, periodic):
        pos = rng.uniform(0, 4, (n, 3))
        kw = dict(cell=np.eye(3) * 6.0, pbc=[True] * 3) if periodic else {}
        f = rng.normal(size=(n, 3))
        return (
            atomic_graph(rng.choice([1, 6, 8], n), pos, 3.0, energy=-10.0 * n, forces=f, dtype=DT, **kw),
            pos,
            f,
        )

    (g1, p1, f1), (g2, p2, f2), (g3, _, _) = graph(5, False), graph(7, False), graph(6, True)
    batch = batch_graphs([g1, g2, g3])
    w = cluster_virial(batch, batch.forces)
    for k, (p, f) in enumerate(((p1, f1), (p2, f2))):
        assert w[k].numpy() == pytest.approx((p - p.mean(0)).T @ f, abs=1e-10)
    # forces that sum to zero: the virial does not depend on where the cluster sits
    f0 = f1 - f1.mean(0)
    shifted = batch_graphs([atomic_graph(g1.z.numpy(), p1 + 7.0, 3.0, forces=f0, dtype=DT)])
    moved = batch_graphs([atomic_graph(g1.z.numpy(), p1, 3.0, forces=f0, dtype=DT)])
    assert cluster_virial(shifted, shifted.forces) == pytest.approx(cluster_virial(moved, moved.forces))

    pot = make_potential("painn").train()
    periodic_only = batch_graphs([g3])
    base = MLIPTask(pot, {"energy": 1.0, "forces": 1.0})
    with_w = MLIPTask(pot, {"energy": 1.0, "forces": 1.0, "virial": 5.0})

    def value(task, b):
        return float(task.loss(b, "train")[0].detach())

    assert value(with_w, periodic_only) == pytest.approx(value(base, periodic_only))
    loss_v, logs = with_w.loss(batch, "train")
    loss_v.backward()  # differentiable in the weights (second order through the forces)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pot.parameters())
    out = pot(batch, forces=True)
    dw = (cluster_virial(batch, out["forces"]) - cluster_virial(batch, batch.forces))[:2].detach()
    n = batch.n_atoms[:2].to(DT)
    expect = value(base, batch) + 5.0 * float(((dw**2).mean(dim=(1, 2)) / n).mean())
    assert float(loss_v.detach()) == pytest.approx(expect, rel=1e-8)
    assert float(logs["virial_mae"]) == pytest.approx(float(dw.abs().mean()), rel=1e-8)
