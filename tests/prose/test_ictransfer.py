"""Transferable internal-coordinate flow: force-field standardisation, exact densities, invertibility,
padding, and the chunked (resumable) peptide MD it trains on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scifm.core.errors import ConfigError
from scifm.prose.icflow import ic_from_cartesian
from scifm.prose.ictransfer import (
    GRAPH_KEYS,
    ICTransferConfig,
    ICTransferFlow,
    ReverseKL,
    collate_tokens,
    ic_to_tokens,
    molecule_graph,
    tokens_to_ic,
)
from scifm.prose.peptides import build_peptide, create_system, kT_kJ_per_mol
from scifm.prose.train import random_rotations

FF = "amber99sbildn-obc"


def _molecule(seq: str):
    pep = build_peptide(seq, False, seed=0)
    return pep, create_system(pep.topology, FF)


@pytest.fixture(scope="module")
def gg():
    return _molecule("GG")


@pytest.fixture(scope="module")
def ak():
    return _molecule("AK")


def _flow(seed=0, **kw) -> ICTransferFlow:
    torch.manual_seed(seed)
    cfg = dict(d_model=16, n_heads=2, n_couplings=4, layers_per_coupling=1, n_bins=4, std_nm=0.1) | kw
    flow = ICTransferFlow(ICTransferConfig(**cfg))
    with torch.no_grad():  # leave the identity initialisation so every coupling acts
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow.double()


def _frames(pep, n, sigma=0.002, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(pep.positions, dtype=torch.float64)
    return x[None] + sigma * torch.randn(n, *x.shape, generator=g, dtype=torch.float64)


def test_standardisation_comes_from_the_force_field(ak):
    import openmm as mm

    pep, system = ak
    g = molecule_graph(pep.topology, system, 310.0, 0.1, pep.positions)
    n = pep.n_atoms
    assert int(g["present"].sum()) == 3 * n - 6
    assert g["present"][0].sum() == 0 and g["present"][1].tolist() == [True, False, False]
    bond = next(f for f in system.getForces() if isinstance(f, mm.HarmonicBondForce))
    params = {}
    for b in range(bond.getNumBonds()):
        i, j, r0, k = bond.getBondParameters(b)
        params[frozenset((i, j))] = (r0._value, k._value)
    kT = kT_kJ_per_mol(310.0)
    for r, (i, j, _, _) in enumerate(g["zmatrix"][1:], start=1):
        r0, k = params[frozenset((i, j))]
        assert g["mean"][r, 0].item() == pytest.approx(r0 / 0.1, rel=1e-6)
        assert g["std"][r, 0].item() == pytest.approx(math.sqrt(kT / k) / 0.1, rel=1e-6)
    # standardised MD-like bond lengths are O(1): minimised geometry within a few sigma of r0
    x = torch.as_tensor(pep.positions)[None] / 0.1
    v = ic_to_tokens(ic_from_cartesian(x, g["zmatrix"]))
    zb = ((v[0, 1:, 0] - g["mean"][1:, 0]) / g["std"][1:, 0]).abs()
    assert zb.median() < 5
    assert g["dist"].shape == (n, n) and (g["dist"] == g["dist"].T).all()
    # torsions: proper ones stay circular; those relative to a sibling are standardised around the
    # minimised structure's value (about +-120 degrees on sp3 centres, 180 on planar ones)
    tors = g["present"][:, 2]
    sib = tors & ~g["circ"][:, 2]
    assert not (g["circ"] & ~g["present"]).any() and not g["circ"][:, :2].any()
    assert 0 < int(sib.sum()) < int(tors.sum())
    assert (g["mean"][sib, 2].abs() > 1.5).all() and (g["std"][sib, 2] == 0.25).all()


def test_stiff_torsions_are_rings_and_planar_groups_not_rotors():
    """The bonded-energy scan flags the peptide bond and the ring-internal torsions of Phe, and neither the
    backbone phi/psi nor the methyl, NH3+ and chi rotors; flagged torsions become unimodal (token kind 3)
    around the minimised structure, and 0 kT keeps the old all-circular graph."""
    pep, system = _molecule("AF")
    atoms = list(pep.topology.atoms())
    g = molecule_graph(pep.topology, system, 300.0, 0.1, pep.positions, stiff_torsion_kT=10.0)
    kind = g["tokens"][:, 7]
    rows = kind == 3
    names = [tuple(atoms[a].name for a in row) for row in g["zmatrix"]]
    stiff_axes = {frozenset(names[r][1:3]) for r in range(len(names)) if rows[r]}
    ring = {"CG", "CD1", "CD2", "CE1", "CE2", "CZ"}
    assert frozenset(("C", "N")) in stiff_axes  # the peptide bond (omega)
    assert any(ax <= ring for ax in stiff_axes)  # inside the aromatic ring
    assert all(ax == frozenset(("C", "N")) or ax <= ring for ax in stiff_axes), stiff_axes
    rotor_axes = {frozenset(names[r][1:3]) for r in range(len(names)) if g["circ"][r, 2]}
    assert frozenset(("CA", "CB")) in rotor_axes  # chi1 of Phe, the Ala methyl
    assert frozenset(("N", "CA")) in rotor_axes  # NH3+ / phi
    assert not g["circ"][rows, 2].any() and (g["std"][rows, 2] == 0.25).all()
    for r in range(len(names)):
        if rows[r] and set(names[r]) <= ring:  # planar ring: torsions near 0 or 180 degrees
            t = abs(float(g["mean"][r, 2]))
            assert min(t, math.pi - t) < 0.2, (names[r], t)
    old = molecule_graph(pep.topology, system, 300.0, 0.1, pep.positions, stiff_torsion_kT=0.0)
    assert not (old["tokens"][:, 7] == 3).any()
    assert int(old["circ"][:, 2].sum()) == int(g["circ"][:, 2].sum()) + int(rows.sum())
    # a model file from before stiff torsions keeps its all-circular graphs and loads into the old shapes
    legacy = ICTransferConfig(d_model=16, n_heads=2, n_couplings=4).to_dict()
    legacy.pop("stiff_torsion_kT")
    cfg = ICTransferConfig.from_dict(legacy)
    assert cfg.graph_options()["stiff_torsion_kT"] == 0.0
    assert ICTransferFlow(cfg).embed.tables[7].num_embeddings == 3


def test_missing_harmonic_term_is_refused(gg):
    import openmm as mm

    pep, system = gg
    bare = mm.System()
    for _ in range(pep.n_atoms):
        bare.addParticle(12.0)
    with pytest.raises(ConfigError, match="no harmonic bond term"):
        molecule_graph(pep.topology, bare, 310.0, 0.1, pep.positions)


def test_token_layout_round_trip(gg):
    pep, system = gg
    g = molecule_graph(pep.topology, system, 310.0, 0.1, pep.positions)
    ic = ic_from_cartesian(_frames(pep, 4) / 0.1, g["zmatrix"])
    v = ic_to_tokens(ic)
    assert torch.equal(tokens_to_ic(v), ic)
    assert (v[:, ~g["present"]] == 0).all()


def test_inverse_and_exact_log_determinant(gg):
    pep, system = gg
    flow = _flow()
    b = flow.bind(pep.topology, system, 310.0, pep.positions).double()
    g = {k: t[None] for k, t in b.graph().items()}
    v, lq = flow.sample_tokens(3, b.graph(), torch.Generator().manual_seed(1))
    z, ld = flow.forward_tokens(v, {k: t.expand(3, *t.shape[1:]) for k, t in g.items()})
    v2, ld_inv = flow.inverse_tokens(z, {k: t.expand(3, *t.shape[1:]) for k, t in g.items()})
    assert torch.allclose(v2, v, atol=1e-8)
    assert torch.allclose(ld, -ld_inv, atol=1e-8)
    pres = g["present"][0]

    def fmap(flat):
        vv = torch.zeros(1, *pres.shape, dtype=flat.dtype)
        vv[0][pres] = flat
        return flow.forward_tokens(vv, g)[0][0][pres]

    for s in range(3):
        J = torch.autograd.functional.jacobian(fmap, v[s][pres])
        assert torch.linalg.slogdet(J)[1].item() == pytest.approx(ld[s].item(), abs=1e-6)


def test_cartesian_density_matches_samples_and_is_rotation_invariant(ak):
    pep, system = ak
    b = _flow(seed=3).bind(pep.topology, system, 310.0, pep.positions).double()
    x, lq = b.sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(b.log_prob(x), lq, atol=1e-7)
    R = random_rotations(6, torch.float64, torch.Generator().manual_seed(2))
    c = x.mean(1, keepdim=True)
    xr = torch.einsum("bij,bnj->bni", R, x - c) + c
    assert torch.allclose(b.log_prob(xr), lq, atol=1e-7)
    # a colder base (std 0.7) is still an exact density: log_prob agrees with the sampler's log q (and is
    # not the unit-base density)
    cold = _flow(seed=3).bind(pep.topology, system, 310.0, pep.positions, base_scale=0.7).double()
    xc, lqc = cold.sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cold.log_prob(xc), lqc, atol=1e-7)
    assert not torch.allclose(b.log_prob(xc), lqc, atol=1e-3)
    with pytest.raises(ConfigError, match="base_scale"):
        _flow().bind(pep.topology, system, 310.0, pep.positions, base_scale=0.0)


def test_padding_does_not_change_a_molecule(gg, ak):
    flow = _flow(seed=5)
    items = []
    for pep, system in (gg, ak):
        g = molecule_graph(pep.topology, system, 310.0, 0.1, pep.positions)
        v = ic_to_tokens(ic_from_cartesian(_frames(pep, 1) / 0.1, g["zmatrix"]))[0].float()
        items.append({"v": v, **{k: g[k] for k in GRAPH_KEYS}})
    alone = [collate_tokens([it]) for it in items]
    both = collate_tokens(items)
    both = {k: t.double() if t.is_floating_point() else t for k, t in both.items()}
    lp_both = flow.log_prob_tokens(both["v"], both)
    for i, a in enumerate(alone):
        a = {k: t.double() if t.is_floating_point() else t for k, t in a.items()}
        assert flow.log_prob_tokens(a["v"], a).item() == pytest.approx(lp_both[i].item(), abs=1e-8)


def test_reverse_kl_is_energy_plus_exact_log_density_with_openmm_gradients(gg):
    from scifm.prose.energy import OpenMMEnergy, TargetEnergy
    from scifm.prose.icflow import LOG_8PI2

    pep, system = gg
    flow = _flow(seed=4)
    b = flow.bind(pep.topology, system, 310.0, pep.positions).double()
    target = TargetEnergy(OpenMMEnergy(system, 310.0, platform="Reference"), 0.1)
    seen = []

    def energy(x):
        seen.append(x.detach().clone())
        return target(x)

    mol = dict(name="GG", graph={**b.graph(), "zmatrix": b.zmatrix}, energy=energy, u_ref=-50.0)
    kl = ReverseKL([mol], n_systems=1, n_samples=5, cut_kT=1e9)
    loss, logs = kl(flow, torch.Generator().manual_seed(0))
    # per draw: [log q_ic - log J + u - u_ref] / D, with log q_ic - log J recovered from the *forward*
    # density of the canonical-frame conformation (Cartesian log q minus its centroid and rotation terms)
    x = seen[0]
    n = x.shape[1]
    c = x.mean(1)
    log_com = -(c**2).sum(-1) * n / 2 - 1.5 * math.log(2 * math.pi / n)
    lq_ic_minus_logj = b.log_prob(x) - log_com + LOG_8PI2
    dims = b.present.sum().double()
    expected = ((lq_ic_minus_logj + target(x) + 50.0) / dims).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-7)
    assert logs["kl_bad"] == 0
    # gradient through the sample (OpenMM forces) and log q: a directional derivative by central
    # differences over the weights, same base draws
    loss.backward()
    params = list(flow.parameters())
    gd = torch.Generator().manual_seed(1)
    d = [torch.randn(p.shape, generator=gd, dtype=p.dtype) for p in params]
    analytic = sum((p.grad * di).sum() for p, di in zip(params, d, strict=True)).item()
    eps, vals = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, di in zip(params, d, strict=True):
                p.add_(sign * eps * di)
        vals.append(kl(flow, torch.Generator().manual_seed(0))[0].item())
        with torch.no_grad():
            for p, di in zip(params, d, strict=True):
                p.sub_(sign * eps * di)
    assert analytic == pytest.approx((vals[0] - vals[1]) / (2 * eps), rel=1e-4)

    # a draw with a non-finite energy (a clash) is left out and counted
    def clash(x):
        u = target(x)
        return torch.cat([u[:1] * math.inf, u[1:]])

    bad = ReverseKL([{**mol, "energy": clash}], n_systems=1, n_samples=5, cut_kT=1e9)
    loss_bad, logs_bad = bad(flow, torch.Generator().manual_seed(0))
    assert logs_bad["kl_bad"] == 1 and math.isfinite(loss_bad.item())
    # softening: identity below the cut, continuous with slope 1 at it, logarithmic above
    dd = torch.tensor([-5.0, 99.0, 100.0, 100.0 + 1e-6, 1e12], dtype=torch.float64, requires_grad=True)
    s = ReverseKL.soften(dd, 100.0)
    assert s[:3].tolist() == [-5.0, 99.0, 100.0] and s[3].item() == pytest.approx(100.0 + 1e-6)
    assert s[4].item() == pytest.approx(100.0 + math.log1p(1e12 - 100.0))
    s.sum().backward()
    assert dd.grad.tolist()[:3] == [1.0, 1.0, 1.0] and dd.grad[4].item() < 1e-11
    with pytest.raises(ConfigError, match="positive"):
        ReverseKL([mol], n_samples=0)


def test_coupling_count_must_be_a_multiple_of_four():
    with pytest.raises(ConfigError, match="multiple of 4"):
        ICTransferFlow(ICTransferConfig(n_couplings=6))


def test_interrupted_md_resumes_from_part_files(tmp_path):
    from scifm.prose.data import PeptideMDFile, merge_peptide_md
    from scifm.prose.md import generate

    kw = dict(
        n_frames=3,
        seed=7,
        platform="Reference",
        progress=False,
        warmup_steps=20,
        frame_interval_steps=10,
        force_field=FF,
        parts_dir=tmp_path / "parts",
    )
    first = generate(["GG"], tmp_path / "a.h5", **kw)
    assert first["resumed"] == [] and (tmp_path / "parts" / "GG.h5").is_file()
    again = generate(["GG", "AG"], tmp_path / "b.h5", **kw)
    assert again["resumed"] == ["GG"]
    a, b = PeptideMDFile(tmp_path / "a.h5"), PeptideMDFile(tmp_path / "b.h5")
    assert np.array_equal(a.coordinates("GG"), b.coordinates("GG"))
    assert b.info["AG"]["force_field"] == FF and b.info["AG"]["platform"] == "Reference"
    other = generate(["GG"], tmp_path / "c.h5", **{**kw, "n_frames": 4})  # other settings: simulated again
    assert other["resumed"] == []
    merged = PeptideMDFile(
        merge_peptide_md([tmp_path / "c.h5", tmp_path / "parts" / "AG.h5"], tmp_path / "m.h5")
    )
    assert sorted(merged.names) == ["AG", "GG"] and merged.info["GG"]["n_frames"] == 4
    with pytest.raises(Exception, match="same name"):
        merge_peptide_md([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "dup.h5")
    assert not (tmp_path / "dup.h5").exists()


def test_multi_start_md_splits_frames_between_independent_runs(tmp_path):
    import json

    import h5py

    from scifm.prose.data import PeptideMDFile
    from scifm.prose.md import generate

    kw = dict(seed=3, platform="Reference", progress=False, warmup_steps=20, frame_interval_steps=10)
    kw["force_field"] = FF
    single = PeptideMDFile(generate(["GG", "AG"], tmp_path / "one.h5", n_frames=5, **kw)["out"])
    parts = tmp_path / "parts"
    multi = generate(
        ["GG", "AG"], tmp_path / "two.h5", n_frames=5, n_starts=2, starts_only=["AG"], parts_dir=parts, **kw
    )
    m = PeptideMDFile(multi["out"])
    assert m.info["AG"]["n_starts"] == 2 and json.loads(m.info["AG"]["start_frames"]) == [3, 2]
    assert m.info["GG"]["n_starts"] == 1 and json.loads(m.info["GG"]["start_frames"]) == [5]
    assert np.array_equal(m.coordinates("GG"), single.coordinates("GG"))  # not listed: one run, unchanged
    x1, x2 = single.coordinates("AG"), m.coordinates("AG")
    assert np.array_equal(x2[:3], x1[:3])  # start 0 is the single-start run
    assert not np.allclose(x2[3:], x1[3:], atol=1e-3)  # start 1: another structure, another run
    # a part file written before n_starts existed (no such attribute) still resumes at the default
    with h5py.File(parts / "GG.h5", "r+") as f:
        del f["systems/GG"].attrs["n_starts"]
    again = generate(["GG"], tmp_path / "three.h5", n_frames=5, parts_dir=parts, **kw)
    assert again["resumed"] == ["GG"]
    with pytest.raises(ConfigError, match="not simulated"):
        generate(["GG"], tmp_path / "x.h5", n_frames=5, n_starts=2, starts_only=["AG"], **kw)
    with pytest.raises(ConfigError, match="more than --frames"):
        generate(["GG"], tmp_path / "x.h5", n_frames=2, n_starts=3, **kw)
    assert not (tmp_path / "x.h5").exists()


def test_cli_trains_on_some_dipeptides_and_samples_an_unseen_one(tmp_path, capsys):
    import json

    from scifm.cli.main import main

    data = tmp_path / "d.h5"
    md = ["--frames", "40", "--warmup-steps", "100", "--interval-steps", "20", "--platform", "Reference"]
    assert (
        main(
            [
                "data",
                "peptides",
                "--sequences",
                "GG",
                "AG",
                "GA",
                *md,
                "--force-field",
                FF,
                "--out",
                str(data),
                "--no-progress",
            ]
        )
        == 0
    )
    run = tmp_path / "run"
    train = ["train", "prose", "--model", "ictransfer", "--data", str(data), "--systems", "GG", "AG"]
    small = ["--ic-hidden", "16", "--ic-layers", "4", "--max-epochs", "1", "--batch-size", "16"]
    assert main([*train, *small, "--run-dir", str(run), "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((run / "model" / "model.json").read_text())["name"] == "prose-ictransfer"
    # --init-from: starts from the finished run's weights and scale; a different architecture or model
    # kind is refused before any training
    from scifm.prose.train import load_run

    first, _ = load_run(run)
    again = [*train, *small, "--init-from", str(run), "--lr", "1e-9", "--weight-decay", "0"]
    assert main([*again, "--run-dir", str(tmp_path / "run2"), "--no-progress", "--device", "cpu"]) == 0
    second, _ = load_run(tmp_path / "run2")
    assert second.config.to_dict() == first.config.to_dict()
    for (k, v), w in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.allclose(v, w, atol=1e-5), k  # lr 1e-9: the weights it started from, kept
    # --kl-weight: every training step adds the reverse KL of 2 systems x 4 flow samples (OpenMM energies)
    kl = [*train, *small, "--kl-weight", "0.5", "--kl-systems", "2", "--kl-samples", "4", "--no-progress"]
    assert main([*kl, "--run-dir", str(tmp_path / "run_kl"), "--device", "cpu"]) == 0
    mk = json.loads((tmp_path / "run_kl" / "metrics.json").read_text())
    steps = mk["fit"]["global_step"]
    assert steps > 0 and mk["reverse_kl"]["energy_evaluations"] == steps * 2 * 4
    assert math.isfinite(mk["final"]["train/kl"]) and mk["final"]["train/kl_bad"] == 0
    tar_kl = ["train", "prose", "--model", "tarflow", "--data", str(data), "--kl-weight", "1"]
    assert main([*tar_kl, "--run-dir", str(tmp_path / "run_kl_tar"), "--no-progress"]) != 0
    assert "--kl-weight applies to the transferable IC flow" in capsys.readouterr().err
    wide = [*train, "--ic-hidden", "32", "--ic-layers", "4", "--init-from", str(run), "--no-progress"]
    assert main([*wide, "--run-dir", str(tmp_path / "run3")]) != 0
    assert "architecture differs (d_model: 16 there, 32 here)" in capsys.readouterr().err
    assert not (tmp_path / "run3" / "model").exists()
    tar = ["train", "prose", "--model", "tarflow", "--data", str(data), "--init-from", str(run)]
    assert main([*tar, "--run-dir", str(tmp_path / "run4"), "--no-progress"]) != 0
    assert "not --model tarflow" in capsys.readouterr().err
    sample = ["sample", "prose", "--model", str(run), "--sequence", "GA", "--reference", str(data)]
    common = ["--metric-points", "50", "--platform", "Reference"]
    assert main([*sample, "--n", "64", "--method", "snis", *common, "--out", str(tmp_path / "snis")]) == 0
    m = json.loads((tmp_path / "snis" / "metrics.json").read_text())
    assert m["com_correction"] == "gaussian" and 0 < m["ess"] <= 1 and m["energy_evaluations"] == 64
    assert (
        main(
            [
                *sample,
                "--n",
                "200",
                "--method",
                "md",
                "--md-interval",
                "10",
                *common,
                "--out",
                str(tmp_path / "md"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "md" / "metrics.json").read_text())
    assert m["method"] == "md" and m["n_samples"] == 20 and m["energy_evaluations"] == 200
    assert m["torus_w2"] >= 0 and m["ess"] is None
    bad = tmp_path / "bad"
    assert (
        main([*sample, "--n", "10", "--method", "md", "--md-interval", "10", *common, "--out", str(bad)]) != 0
    )
    assert "md: need" in capsys.readouterr().err and not bad.exists()
    # --symmetrise flips on an unseen Tyr dipeptide: ring and C-terminus (a group of 4), no extra energy calls
    sym = ["sample", "prose", "--model", str(run), "--sequence", "GY", "--n", "32", "--platform", "Reference"]
    assert main([*sym, "--symmetrise", "flips", "--out", str(tmp_path / "sym")]) == 0
    m = json.loads((tmp_path / "sym" / "metrics.json").read_text())
    assert m["symmetrise"] == "flips" and m["symmetry_group_size"] == 4 and m["energy_evaluations"] == 32
    assert 0 < m["ess"] <= 1
