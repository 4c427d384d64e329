"""Density alignment (BAMBOO §4): shift each mixture's pressure by fine-tuning only the energy readout.

Pressure target per mixture. If the model's NPT density ρ_MD differs from experiment ρ_exp, adding ΔP to
the model's pressure at fixed configurations moves the NPT density by δρ/ρ = κ_T ΔP (to first order), so

    ΔP = (ρ_MD - ρ_exp) / (ρ_MD · κ_T)          (bar; κ_T in 1/bar)

with κ_T = ⟨δV²⟩ / (k_B T ⟨V⟩) from the NPT volume fluctuations (``summary.json`` of ``sci-fm md``
writes it as ``isothermal_compressibility_per_bar``). A too dense model (ρ_MD > ρ_exp) gets ΔP > 0: more
internal pressure, the box expands. The anchor leaves ΔP to the user; this formula is our choice.

The at-density rule (``--at-density-from ROUND``) needs no κ_T: the last frame is scaled to ρ_exp
(molecules moved rigidly with their centres of mass), NVT runs there, and

    ΔP = P_ext - ⟨P⟩_NVT(ρ_exp)

is fitted on that run's frames: a model whose mean pressure at ρ_exp equals P_ext has its NPT density at
ρ_exp. The formula above fits the shift at the model's own density and extrapolates; a shift that is right
there can be wrong at ρ_exp (the fine-tune changes the slope of P(V) too), and with several systems
sharing one readout the errors of the extrapolation add up (see ``at_density_systems``).

Loss per fixed frame (NN intermolecular pressure, ``scifm.md.finetune.nn_edge_pressure_bar`` over edges
joining different molecules; charges, Coulomb and dispersion are not touched):

    L = ((P_inter(θ) - P_inter(θ₀) - ΔP) / p_scale)² + w_E (E-E₀)²/N + w_F mean|F-F₀|² + w_W mean((W-W₀)²)/N

E₀, F₀, W₀: the unaligned model on the same frame (anchor terms). Defaults (p_scale = 100 bar, w_E = 5.3,
w_F = 5.3e4, w_W = 160, eV units) are the anchor's weights 1e2 / 1e6 / 3e3 (kcal/mol, atm²) converted to
eV and divided by p_scale². Then, when labelled clusters are given, one cluster step as in distillation
(0.3 E + 1.0 F + 0.1 W). Adam, lr 1e-4, γ = 0.99, ≤ 30 frames per mixture, every 3rd held out. (Measured
on a 384-atom DMC box, ΔP = -4 kbar, 4 epochs with cluster steps: lr 1e-5 reaches 18 % of the shift, 1e-4
78 %, 3e-4 80 %; the cluster steps pull towards the cluster labels, so the residual is not zero.)

``--systems FILE.yaml``::

    systems:
      - name: EC_DMC_LiPF6_0.5M
        density_exp: 1.235                # g/cm³
        md: runs/npt_ec_dmc               # NPT output of `sci-fm md` (summary.json, traj, mol_id arrays)
        # optional: frames (file), density_md, kappa_T_per_bar, delta_p_bar (overrides the formula)

After training, ``--npt-steps N`` re-runs NPT from each mixture's last frame with the aligned model and
reports the new density (with the dispersion tail when the system's NPT run had it, ``sci-fm md
--dispersion-tail``; the tail is a fixed function of the volume, so the NN's ΔP target is unchanged by it).
Outputs: ``model/``, ``metrics.json`` (per mixture ΔP target, residual before and after, densities),
``history.csv``, ``alignment.png``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from scifm.core.errors import ConfigError, DataError

from .clusters import molecule_ids
from .committee import resolve_model_dir
from .finetune import (
    changed_keys,
    frame_graph,
    freeze_to_readout,
    intermolecular_edges,
    nn_edge_pressure_bar,
    plot_epoch_curves,
    predict,
)
from .thermo import is_periodic

SYSTEM_KEYS = {
    "name",
    "density_exp",
    "md",
    "frames",
    "density_md",
    "kappa_T_per_bar",
    "delta_p_bar",
    "composition",
}
DEFAULT_W = {"p_scale": 100.0, "energy": 5.3, "forces": 5.3e4, "virial": 160.0}


def delta_p_bar(rho_md: float, rho_exp: float, kappa_T_per_bar: float) -> float:
    """ΔP = (ρ_MD - ρ_exp) / (ρ_MD κ_T) in bar (module docstring)."""
    if not kappa_T_per_bar > 0:
        raise ConfigError(
            f"κ_T must be > 0 (got {kappa_T_per_bar}); run a longer NPT or give kappa_T_per_bar"
        )
    return (rho_md - rho_exp) / (rho_md * kappa_T_per_bar)


def load_systems(path: str | Path, max_frames: int = 30) -> list[dict]:
    """Validated systems with ``frames`` (ase.Atoms list), ``mol`` (molecule ids), ``delta_p_bar``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "systems file not found")
    data = yaml.safe_load(path.read_text()) or {}
    systems = data.get("systems") if isinstance(data, dict) else None
    if not isinstance(systems, list) or not systems:
        raise DataError(path, "expected a top-level 'systems:' list")
    out = []
    for k, s in enumerate(systems):
        rec = s.get("name", k) if isinstance(s, dict) else k
        if not isinstance(s, dict):
            raise DataError(path, "each system must be a mapping", record=rec)
        unknown = set(s) - SYSTEM_KEYS
        if unknown:
            raise DataError(
                path, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(SYSTEM_KEYS)}", record=rec
            )
        base = path.parent
        md = Path(base, s["md"]) if s.get("md") else None
        summary = {}
        if md is not None:
            if not (md / "summary.json").is_file():
                raise DataError(md, "no summary.json (not a `sci-fm md` output directory)", record=rec)
            summary = json.loads((md / "summary.json").read_text())
        frames_path = (
            Path(base, s["frames"])
            if s.get("frames")
            else (md / summary.get("trajectory", "traj.extxyz") if md else None)
        )
        if frames_path is None:
            raise DataError(path, "give 'md' (a sci-fm md directory) or 'frames'", record=rec)
        if "delta_p_bar" in s:
            dp = float(s["delta_p_bar"])
            rho_md = s.get("density_md", summary.get("density_g_cm3_mean"))
        else:
            if "density_exp" not in s:
                raise DataError(path, "missing 'density_exp' (g/cm³)", record=rec)
            rho_md = s.get("density_md", summary.get("density_g_cm3_mean"))
            kappa = s.get("kappa_T_per_bar", summary.get("isothermal_compressibility_per_bar"))
            if rho_md is None or kappa is None:
                raise DataError(path, "need density_md and kappa_T_per_bar (or an NPT 'md' run)", record=rec)
            if not 1e-6 <= float(kappa) <= 1e-3:  # liquids: ~3e-5 .. 2e-4 1/bar
                warnings.warn(
                    f"{path} [{rec}]: κ_T = {float(kappa):.3g} 1/bar is implausible for a liquid (NPT too "
                    "short?); ΔP will be off — give kappa_T_per_bar or delta_p_bar",
                    stacklevel=2,
                )
            dp = delta_p_bar(float(rho_md), float(s["density_exp"]), float(kappa))
        frames = alignment_frames(frames_path, max_frames)
        out.append(
            {
                "name": str(s.get("name", f"system{k}")),
                "frames": frames,
                "mol": molecule_ids(frames[0]),
                "delta_p_bar": dp,
                "delta_p_rule": "given" if "delta_p_bar" in s else "kappa_T",
                "density_md": None if rho_md is None else float(rho_md),
                "density_exp": s.get("density_exp"),
                "kappa_T_per_bar": s.get(
                    "kappa_T_per_bar", summary.get("isothermal_compressibility_per_bar")
                ),
                "kappa_T_measured": summary.get("isothermal_compressibility_per_bar"),
                "md_dir": md,
                "md_settings": summary.get("settings", {}),
                "dispersion_tail": bool(summary.get("dispersion_tail", False)),
            }
        )
    return out


def alignment_frames(path: Path, max_frames: int) -> list:
    """At most ``max_frames`` periodic frames of an NPT trajectory, evenly spaced over its second half when
    it is long (the first half is equilibration)."""
    from .trajectory import read_trajectory

    frames = read_trajectory(path)
    frames = frames[len(frames) // 2 :] if len(frames) > 2 * max_frames else frames  # skip equilibration
    if len(frames) > max_frames:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    if not frames:
        raise DataError(path, "no frames to align on")
    for j, a in enumerate(frames):
        if not is_periodic(a):
            raise DataError(path, "frames must be periodic", record=f"frame {j}")
    return frames


def next_delta_p(
    rho_exp: float,
    rho: float,
    kappa_T_per_bar: float | None,
    previous: dict | None = None,
    sem: float | None = None,
    max_growth: float = 3.0,
    kappa_now: float | None = None,
) -> tuple[float, str]:
    """ΔP (bar) for the next alignment round of one system and the rule that gave it.

    ``previous``: ``{"density": ρ before the last round, "delta_p_bar": the NN pressure shift that round
    achieved on its frames, optionally "kappa_T_per_bar": κ_T measured at that density}``; ``kappa_now``: κ_T
    measured in the NPT run that gave ``rho``. When the last round moved the density by more than twice its
    SEM and in the direction a pressure shift should (dρ/dΔP < 0):

    - if the two densities bracket ρ_exp and both κ_T are known: ln ρ as a monotone cubic Hermite curve of
      the shift through both points with slopes -κ_T at each (Fritsch-Carlson limited), solved for ρ_exp
      ("hermite"). A liquid far below its density is much softer than near it, so the straight secant
      misplaces the crossing; the measured compressibilities give the curvature;
    - otherwise the secant through the two densities, ΔP = (ρ_exp - ρ)/(dρ/dΔP) ("secant").

    Either is capped at ``max_growth`` times the last shift. Without a usable last round (the first round,
    or a move lost in the noise) the linear-response formula ΔP = (ρ - ρ_exp)/(ρ κ_T) ("kappa_T")."""
    if previous is not None and previous.get("delta_p_bar"):
        h = float(previous["delta_p_bar"])
        rho0 = float(previous["density"])
        moved = rho - rho0
        slope = moved / h
        if abs(moved) > 2.0 * float(sem or 0.0) and slope < 0:
            cap = max_growth * abs(h)
            k0, k1 = previous.get("kappa_T_per_bar"), kappa_now
            between = min(rho0, rho) < rho_exp < max(rho0, rho)
            if between and k0 is not None and k1 is not None and float(k0) > 0 and float(k1) > 0:
                s = h * _hermite_crossing(
                    np.log(rho0), np.log(rho), -float(k0) * h, -float(k1) * h, np.log(rho_exp)
                )
                return float(np.clip(s - h, -cap, cap)), "hermite"
            dp = (rho_exp - rho) / slope
            return float(np.clip(dp, -cap, cap)), "secant"
    if kappa_T_per_bar is None:
        raise ConfigError("no κ_T for the linear-response ΔP: give kappa_T_per_bar")
    return delta_p_bar(rho, rho_exp, float(kappa_T_per_bar)), "kappa_T"


def _hermite_crossing(u0: float, u1: float, m0: float, m1: float, target: float) -> float:
    """t in [0, 1] where the cubic Hermite u(t) (u(0)=u0, u(1)=u1, u'(0)=m0, u'(1)=m1) equals ``target``
    (between u0 and u1). Slopes of the wrong sign are set to 0 and the pair is scaled into the
    Fritsch-Carlson circle α²+β² ≤ 9, so u(t) is monotone and the crossing unique (bisection)."""
    du = u1 - u0
    a, b = max(m0 / du, 0.0), max(m1 / du, 0.0)
    r = np.hypot(a, b)
    if r > 3.0:
        a, b = 3.0 * a / r, 3.0 * b / r

    def u(t):
        return (
            (2 * t**3 - 3 * t**2 + 1) * u0
            + (t**3 - 2 * t**2 + t) * a * du
            + (-2 * t**3 + 3 * t**2) * u1
            + (t**3 - t**2) * b * du
        )

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (u(mid) - target) * du < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def align(
    model: str | Path,
    systems: list[dict],
    out: str | Path,
    epochs: int = 30,
    lr: float = 1e-4,
    gamma: float = 0.99,
    weights: dict | None = None,
    cluster_frames=None,
    cluster_batch: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fine-tune the readout of ``model`` towards each system's ΔP; returns the metrics (also written)."""
    from tqdm.auto import tqdm

    from scifm.mlip.export import export_potential, load_potential

    from .distill import CLUSTER_W, _write_history, cluster_step
    from .md import _write_json

    t0 = time.perf_counter()
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be >= 1")
    w = {**DEFAULT_W, **(weights or {})}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model_dir = resolve_model_dir(model)
    pot = load_potential(model_dir)
    dtype = pot.atom_ref.dtype
    before = {k: v.detach().clone() for k, v in pot.state_dict().items()}
    items = []  # (system index, graph, inter mask, P0, E0, F0, W0, n_atoms, valid?)
    for si, s in enumerate(systems):
        for j, a in enumerate(s["frames"]):
            mol = molecule_ids(a) if "mol_id" in a.arrays else s["mol"]
            g = frame_graph(a, pot.cutoff, dtype)
            mask = intermolecular_edges(g, mol)
            p0 = float(nn_edge_pressure_bar(pot, g, mask, create_graph=False))
            ref = {k: v.detach() for k, v in predict(pot, g, periodic=True).items()}
            items.append(
                {
                    "sys": si,
                    "graph": g,
                    "mask": mask,
                    "p0": p0,
                    "ref": ref,
                    "n": len(a),
                    "valid": len(s["frames"]) >= 3 and j % 3 == 2,
                }
            )
    if not items:
        raise ConfigError("no frames to align on")
    params = freeze_to_readout(pot)
    pot.train()
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    clusters = list(cluster_frames or [])
    from .finetune import frame_graph as fg

    cgraphs = [fg(a, pot.cutoff, dtype) for a in clusters]
    cw = dict(CLUSTER_W)

    def frame_loss(it):
        dp = nn_edge_pressure_bar(pot, it["graph"], it["mask"]) - it["p0"]
        target = systems[it["sys"]]["delta_p_bar"]
        pred = predict(pot, it["graph"], periodic=True)
        ref, n = it["ref"], it["n"]
        loss = ((dp - target) / w["p_scale"]) ** 2
        loss = loss + w["energy"] * (pred["energy"][0] - ref["energy"][0]) ** 2 / n
        loss = loss + w["forces"] * ((pred["forces"] - ref["forces"]) ** 2).mean()
        loss = loss + w["virial"] * ((pred["virial"] - ref["virial"]) ** 2).mean() / n
        return loss, float(dp.detach()) - target

    def residuals(valid_only: bool = True) -> dict[str, float]:
        res = {}
        for si, s in enumerate(systems):
            sel = [it for it in items if it["sys"] == si and (it["valid"] or not valid_only)]
            sel = sel or [it for it in items if it["sys"] == si]
            res[s["name"]] = float(
                np.mean(
                    [
                        float(nn_edge_pressure_bar(pot, it["graph"], it["mask"], create_graph=False))
                        - it["p0"]
                        - s["delta_p_bar"]
                        for it in sel
                    ]
                )
            )
        return res

    train = [it for it in items if not it["valid"]] or items
    history = [{"epoch": 0, "loss": float("nan"), **{f"residual_bar/{k}": v for k, v in residuals().items()}}]
    c_ptr = 0
    for epoch in tqdm(range(1, epochs + 1), desc="align", unit="epoch", disable=not progress):
        losses = []
        for k in rng.permutation(len(train)):
            opt.zero_grad()
            loss, _ = frame_loss(train[k])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if clusters:
                c_ptr = cluster_step(pot, opt, clusters, cgraphs, c_ptr, cluster_batch, cw, dtype)
        sched.step()
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                **{f"residual_bar/{k}": v for k, v in residuals().items()},
            }
        )
    pot.eval()
    changed = changed_keys(before, pot.state_dict())
    out = Path(out)
    export_potential(
        pot,
        out / "model",
        meta={
            "aligned_from": str(model_dir),
            "epochs": epochs,
            "delta_p_bar": {s["name"]: s["delta_p_bar"] for s in systems},
        },
    )
    _write_history(out / "history.csv", history)
    _plot(out / "alignment.png", history, [s["name"] for s in systems])
    per = {}
    for s in systems:
        per[s["name"]] = {
            "delta_p_target_bar": s["delta_p_bar"],
            "density_md_g_cm3": s["density_md"],
            "density_exp_g_cm3": s["density_exp"],
            "n_frames": len(s["frames"]),
            "residual_before_bar": history[0][f"residual_bar/{s['name']}"],
            "residual_after_bar": history[-1][f"residual_bar/{s['name']}"],
        }
    after_res = [v["residual_after_bar"] for v in per.values()]
    metrics = {
        "systems": per,
        "epochs": epochs,
        "residual_mean_bar": float(np.mean(after_res)),
        "residual_std_bar": float(np.std(after_res)),
        "changed_parameters": changed,
        "n_cluster_frames": len(clusters),
        "wall_time_s": time.perf_counter() - t0,
    }
    _write_json(out / "metrics.json", metrics)
    return metrics


def rerun_npt(
    model_dir: Path,
    systems: list[dict],
    out: Path,
    steps: int,
    progress: bool,
    equilibration_ps: float = 0.0,
    jobs: int = 1,
    resume: bool = False,
    ensemble: str = "npt",
) -> dict[str, dict]:
    """NPT of each system from its last frame (or its ``start`` Atoms when given) with the aligned model
    (the settings of the system's own NPT run); density before/after. ``equilibration_ps`` is left out of
    the new averages. ``jobs`` > 1 runs that many systems at once, each in its own process (set
    OMP_NUM_THREADS=1 so they do not fight), largest first. ``resume``: a system whose OUT/name/summary.json
    exists, and is newer than the model, is read, not re-run. ``ensemble="nvt"``: the same run at fixed
    volume (Langevin), for the pressure at a given density (``at_density_systems``)."""
    tasks = []
    for s in systems:
        st = s["md_settings"] or {}
        settings = dict(
            ensemble=ensemble,
            temperature=st.get("temperature", 300.0),
            pressure=st.get("pressure", 1.0),
            timestep=st.get("timestep", 1.0),
            equilibration_ps=float(equilibration_ps),
            steps=steps,
            save_every=st.get("save_every", max(1, steps // 20)),
            thermo_every=st.get("thermo_every", max(1, min(10, steps // 10))),
            barostat=st.get("barostat", "mtk"),
            tdamp=st.get("tdamp", 100.0),
            pdamp=st.get("pdamp", 1000.0),
            progress=progress and jobs <= 1,
        )
        if ensemble == "nvt":  # the NPT runs' thermostat (MTK carries a Nosé-Hoover chain): Langevin at
            # 1 fs runs a few % cold with C-H stretches, and P(ρ) would come from another temperature
            settings["thermostat"] = "nose-hoover"
        # the same energy model as the NPT run that set the target (dispersion tail included or not)
        tail = bool(s.get("dispersion_tail", False))
        start = s.get("start") if s.get("start") is not None else s["frames"][-1]
        tasks.append((str(model_dir), start.copy(), settings, tail, str(out / s["name"])))
    summaries: list[dict | None] = [None] * len(tasks)
    if resume:  # a finished run of an earlier, interrupted call (run_md writes summary.json last) ...
        model_json = Path(model_dir) / "model.json"
        born = model_json.stat().st_mtime if model_json.is_file() else float("inf")
        for i, t in enumerate(tasks):
            done = Path(t[-1]) / "summary.json"
            if done.is_file() and done.stat().st_mtime >= born:  # ... with this model, not an older one
                summaries[i] = json.loads(done.read_text())
    todo = [i for i in range(len(tasks)) if summaries[i] is None]
    todo.sort(key=lambda i: -len(tasks[i][1]))  # largest first: the pool's last job is a short one
    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as ex:
            for i, summary in zip(todo, ex.map(_npt_task, [tasks[i] for i in todo]), strict=True):
                summaries[i] = summary
    else:
        for i in todo:
            summaries[i] = _npt_task(tasks[i])
    res = {}
    for s, t, summary in zip(systems, tasks, summaries, strict=True):
        res[s["name"]] = {
            "md_dir": t[-1],
            "density_before_g_cm3": s["density_md"],
            "density_after_g_cm3": summary.get("density_g_cm3_mean"),
            "density_after_sem_g_cm3": summary.get("density_g_cm3_sem"),
            "density_exp_g_cm3": s["density_exp"],
            "kappa_T_after_per_bar": summary.get("isothermal_compressibility_per_bar"),
            "pressure_bar_mean": summary.get("pressure_bar_mean"),
            "pressure_bar_sem": summary.get("pressure_bar_sem"),
            "stopped": summary["stopped"],
        }
    return res


def _run_frames(md: Path, max_frames: int) -> tuple[list, dict]:
    """The alignment frames of a `sci-fm md` run directory and its summary."""
    summary = json.loads((md / "summary.json").read_text())
    return alignment_frames(md / summary["trajectory"], max_frames), summary


# what at_density_systems adds to a system for one round only
AT_DENSITY_KEYS = ("start", "pressure_at_exp_bar", "pressure_at_exp_sem_bar", "nvt_dir")


def scale_to_density(atoms, rho_g_cm3: float, mol: np.ndarray | None = None):
    """A copy of periodic ``atoms`` with the cell scaled isotropically to density ``rho_g_cm3`` and every
    molecule (``mol`` ids; bonded atoms by default) moved rigidly with its centre of mass, so bonds keep
    their lengths."""
    from .clusters import whole_molecules
    from .thermo import density_g_cm3

    if not is_periodic(atoms):
        raise ConfigError("scale_to_density needs a periodic cell")
    if not rho_g_cm3 > 0:
        raise ConfigError(f"density {rho_g_cm3}: must be > 0")
    mol = molecule_ids(atoms) if mol is None else np.asarray(mol)
    f = (density_g_cm3(atoms) / float(rho_g_cm3)) ** (1.0 / 3.0)
    pos, m = whole_molecules(atoms, mol), atoms.get_masses()
    for k in np.unique(mol):
        idx = np.flatnonzero(mol == k)
        com = (m[idx, None] * pos[idx]).sum(0) / m[idx].sum()
        pos[idx] += (f - 1.0) * com
    new = atoms.copy()
    new.set_cell(np.asarray(atoms.cell) * f, scale_atoms=False)
    new.positions = pos
    new.wrap()
    return new


def at_density_systems(
    model_dir: Path,
    systems: list[dict],
    out: Path,
    steps: int,
    max_frames: int,
    progress: bool,
    equilibration_ps: float = 0.0,
    jobs: int = 1,
    resume: bool = False,
) -> list[dict]:
    """The "nvt_at_exp" rule: each system's last frame scaled to its experimental density
    (``scale_to_density``), NVT there with ``model_dir`` (``equilibration_ps`` left out), and

        ΔP = P_ext - ⟨P⟩_NVT(ρ_exp)

    on frames of that NVT run. A model whose mean pressure at ρ_exp is P_ext has its NPT density at ρ_exp,
    so the pressure shift is fitted where it matters, with no κ_T and no extrapolation from the model's own
    density; the shift the fine-tune makes at other densities (which moves a soft liquid far) does not
    enter. The systems come back with those frames and ΔP, ``start`` = the frame the next NPT re-run
    begins from (the old last frame, not the scaled one, so an NPT too short to relax leans to the old
    density, not to experiment), and ``pressure_at_exp_bar`` / ``pressure_at_exp_sem_bar``."""
    missing = [s["name"] for s in systems if s.get("density_exp") is None]
    if missing:
        raise ConfigError(f"the at-density rule needs density_exp for every system; missing: {missing}")
    scaled = [
        {**s, "start": scale_to_density(s["frames"][-1], float(s["density_exp"]), s["mol"])} for s in systems
    ]
    res = rerun_npt(model_dir, scaled, out, steps, progress, equilibration_ps, jobs, resume, ensemble="nvt")
    new = []
    for s in systems:
        r = res[s["name"]]
        if r["stopped"] or r["pressure_bar_mean"] is None:
            raise ConfigError(f"{s['name']}: the NVT run at ρ_exp stopped or has no pressure ({r['md_dir']})")
        frames, summary = _run_frames(Path(r["md_dir"]), max_frames)
        p_ext = float(summary["settings"]["pressure"])  # the pressure the runs were set up with
        new.append(
            {
                **s,
                "frames": frames,
                "start": s["frames"][-1],
                "delta_p_bar": p_ext - float(r["pressure_bar_mean"]),
                "pressure_at_exp_bar": float(r["pressure_bar_mean"]),
                "pressure_at_exp_sem_bar": r["pressure_bar_sem"],
                "nvt_dir": r["md_dir"],
            }
        )
    return new


def _npt_task(task) -> dict:
    """One NPT re-run (a top-level function, so that worker processes can run it); returns its summary."""
    from .committee import make_member
    from .md import MDSettings, run_md

    model_dir, atoms, settings, tail, out = task
    calc = make_member(Path(model_dir), dispersion="auto", dispersion_tail=tail)
    return run_md(atoms, calc, MDSettings(**settings), Path(out), meta={"dispersion_tail": tail})


def _plot(path: Path, history: list[dict], names: list[str]) -> None:
    series = {n: [h[f"residual_bar/{n}"] for h in history] for n in names}
    ylabel = "ΔP_pred - ΔP_target (bar)"
    plot_epoch_curves(path, [h["epoch"] for h in history], series, ylabel, zero_line=True)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run or model directory to align")
    p.add_argument(
        "--systems", required=True, help="YAML listing mixtures, NPT runs and experimental densities"
    )
    p.add_argument("--clusters", default=None, help="labelled clusters (.extxyz/.h5) for the cluster steps")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--max-frames", type=int, default=30, help="frames per mixture")
    p.add_argument("--pressure-scale", type=float, default=DEFAULT_W["p_scale"], help="bar")
    p.add_argument("--energy-anchor", type=float, default=DEFAULT_W["energy"])
    p.add_argument("--forces-anchor", type=float, default=DEFAULT_W["forces"])
    p.add_argument("--virial-anchor", type=float, default=DEFAULT_W["virial"])
    p.add_argument("--npt-steps", type=int, default=0, help="re-run NPT with the aligned model (0: skip)")
    p.add_argument(
        "--npt-equilibration",
        type=float,
        default=0.0,
        metavar="PS",
        help="ps of each NPT re-run left out of its density average",
    )
    p.add_argument("--jobs", type=int, default=1, help="NPT re-runs at a time (one process each)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="align, re-run NPT, take the next ΔP from the new density (Hermite curve through the last "
        "two with their κ_T, or the secant), at most this many times (needs --npt-steps and density_exp)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="g/cm³: stop the rounds when every system's NPT density is this close to experiment",
    )
    p.add_argument(
        "--at-density-from",
        type=int,
        default=0,
        metavar="ROUND",
        help="from this round on, take ΔP from an NVT run at the experimental density (P_ext - <P>) and "
        "align on its frames, instead of extrapolating from the model's own density (0: never)",
    )
    p.add_argument(
        "--at-density-steps",
        type=int,
        default=0,
        help="steps of each NVT run at the experimental density (0: --npt-steps); the first "
        "--npt-equilibration ps are left out of its pressure",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the rounds an interrupted call with the same arguments left in OUT (trained models, "
        "finished NPT re-runs)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/align")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args) -> int:
    from .md import _write_json

    if args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: must be >= 1")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be >= 1")
    if args.rounds > 1 and args.npt_steps <= 0:
        raise ConfigError("--rounds > 1 re-runs NPT after every round: give --npt-steps")
    systems = load_systems(args.systems, args.max_frames)
    if args.at_density_from < 0:
        raise ConfigError(f"--at-density-from {args.at_density_from}: must be >= 0")
    if args.at_density_from and args.npt_steps <= 0 and args.at_density_steps <= 0:
        raise ConfigError("--at-density-from runs NVT at the experimental density: give --at-density-steps")
    if args.rounds > 1 or args.at_density_from:
        missing = [s["name"] for s in systems if s.get("density_exp") is None]
        if missing:
            why = "--rounds > 1" if args.rounds > 1 else "--at-density-from"
            raise DataError(args.systems, f"{why} needs density_exp for every system; missing: {missing}")
    clusters = None
    if args.clusters:
        from scifm.mlip.dataset import open_frames

        clusters = open_frames(args.clusters)
    weights = {
        "p_scale": args.pressure_scale,
        "energy": args.energy_anchor,
        "forces": args.forces_anchor,
        "virial": args.virial_anchor,
    }
    out = Path(args.out)
    model, first, rounds, resumed = args.model, systems, [], []
    rules = {s["name"]: s["delta_p_rule"] for s in systems}
    for k in range(1, args.rounds + 1):
        rdir = out if args.rounds == 1 else out / f"round{k}"
        if args.at_density_from and k >= args.at_density_from:
            systems = at_density_systems(
                resolve_model_dir(model),
                systems,
                rdir / "nvt",
                args.at_density_steps or args.npt_steps,
                args.max_frames,
                args.progress,
                args.npt_equilibration,
                jobs=args.jobs,
                resume=args.resume,
            )
            rules = {s["name"]: "nvt_at_exp" for s in systems}
            for s in systems:
                print(
                    f"round {k} {s['name']}: <P> at ρ_exp = {s['density_exp']} g/cm³: "
                    f"{s['pressure_at_exp_bar']:.1f} ± {s['pressure_at_exp_sem_bar'] or float('nan'):.1f} bar"
                )
        m = _finished_round(rdir, systems) if args.resume else None
        if m is None:
            m = align(
                model,
                systems,
                rdir,
                epochs=args.epochs,
                lr=args.lr,
                gamma=args.gamma,
                weights=weights,
                cluster_frames=clusters,
                seed=args.seed,
                progress=args.progress,
            )
        else:
            print(f"round {k}: reusing the trained model in {rdir}")
            resumed.append(k)
        if args.npt_steps > 0 and "npt" not in m:
            m["npt"] = rerun_npt(
                rdir / "model",
                systems,
                rdir / "npt",
                args.npt_steps,
                args.progress,
                args.npt_equilibration,
                jobs=args.jobs,
                resume=args.resume,
            )
            _write_json(rdir / "metrics.json", m)
        rounds.append(_round_record(k, systems, m, rules))
        for name, v in rounds[-1]["systems"].items():
            after = v.get("density_after_g_cm3")
            print(
                f"round {k} {name}: ΔP target {v['delta_p_target_bar']:.1f} bar ({v['rule']}), residual "
                f"{v['residual_after_bar']:.1f} bar"
                + ("" if after is None else f", NPT density {v['density_md_g_cm3']} -> {after:.4f} g/cm³")
            )
        model = rdir / "model"
        if args.rounds == 1:
            return 0
        if all(abs(v["error_after_g_cm3"]) <= args.tolerance for v in rounds[-1]["systems"].values()):
            print(f"every density within {args.tolerance} g/cm³ of experiment after round {k}")
            break
        if k < args.rounds:
            systems, rules = _next_round(systems, m, args.max_frames)
    _finish_rounds(out, args.model, model, first, rounds, args.tolerance, resumed)
    return 0


def _finished_round(rdir: Path, systems: list[dict]) -> dict | None:
    """The metrics of a round an earlier call already trained (``--resume``): its model and metrics.json
    exist and name the same systems; None otherwise (the round is trained again)."""
    mj = rdir / "metrics.json"
    if not ((rdir / "model" / "model.json").is_file() and mj.is_file()):
        return None
    m = json.loads(mj.read_text())
    if set(m.get("systems", {})) != {s["name"] for s in systems}:
        return None
    if "npt" in m and set(m["npt"]) != {s["name"] for s in systems}:
        m.pop("npt")
    return m


def _round_record(k: int, systems: list[dict], m: dict, rules: dict[str, str]) -> dict:
    per = {}
    for s in systems:
        v = dict(m["systems"][s["name"]], rule=rules[s["name"]])
        if "pressure_at_exp_bar" in s:  # the at-density rule: the NVT run that set ΔP
            v.update(
                pressure_at_exp_bar=s["pressure_at_exp_bar"],
                pressure_at_exp_sem_bar=s["pressure_at_exp_sem_bar"],
                nvt_dir=s["nvt_dir"],
            )
        npt = (m.get("npt") or {}).get(s["name"])
        if npt is not None:
            v.update(
                density_after_g_cm3=npt["density_after_g_cm3"],
                density_after_sem_g_cm3=npt["density_after_sem_g_cm3"],
                kappa_T_after_per_bar=npt.get("kappa_T_after_per_bar"),
                md_dir=npt["md_dir"],
                stopped=npt["stopped"],
            )
            if npt["density_after_g_cm3"] is not None and s.get("density_exp") is not None:
                v["error_after_g_cm3"] = npt["density_after_g_cm3"] - float(s["density_exp"])
        per[s["name"]] = v
    return {"round": k, "systems": per}


def _next_round(systems: list[dict], m: dict, max_frames: int) -> tuple[list[dict], dict[str, str]]:
    """Each system again, from the frames and density of the NPT run of the round just done, with the ΔP of
    ``next_delta_p`` (secant through the last two densities when it can be trusted)."""
    new, rules = [], {}
    for s in systems:
        npt = m["npt"][s["name"]]
        if npt["stopped"] or npt["density_after_g_cm3"] is None:
            raise ConfigError(f"{s['name']}: the NPT re-run stopped ({npt['md_dir']}); no further round")
        achieved = s["delta_p_bar"] + m["systems"][s["name"]]["residual_after_bar"]
        dp, rule = next_delta_p(
            float(s["density_exp"]),
            float(npt["density_after_g_cm3"]),
            s.get("kappa_T_per_bar"),
            previous=None
            if s["density_md"] is None
            else {
                "density": s["density_md"],
                "delta_p_bar": achieved,
                "kappa_T_per_bar": s.get("kappa_T_measured"),
            },
            sem=npt["density_after_sem_g_cm3"],
            kappa_now=npt.get("kappa_T_after_per_bar"),
        )
        frames, _ = _run_frames(Path(npt["md_dir"]), max_frames)
        rest = {k: v for k, v in s.items() if k not in AT_DENSITY_KEYS}
        new.append(
            {
                **rest,
                "frames": frames,
                "mol": molecule_ids(frames[0]),
                "delta_p_bar": dp,
                "density_md": float(npt["density_after_g_cm3"]),
                "kappa_T_measured": npt.get("kappa_T_after_per_bar"),
            }
        )
        rules[s["name"]] = rule
    return new, rules


def _finish_rounds(
    out: Path,
    original,
    final: Path,
    systems: list[dict],
    rounds: list[dict],
    tol: float,
    resumed: list[int] | None = None,
):
    """OUT/model = the last round's model; OUT/metrics.json: every round, and first vs final density."""
    import shutil

    from scifm.mlip.export import load_potential

    from .md import _write_json

    if (out / "model").exists():
        shutil.rmtree(out / "model")
    shutil.copytree(final, out / "model")
    last = rounds[-1]["systems"]
    npt = {
        s["name"]: {
            "density_exp_g_cm3": s["density_exp"],
            "density_before_g_cm3": s["density_md"],
            "density_after_g_cm3": last[s["name"]]["density_after_g_cm3"],
            "density_after_sem_g_cm3": last[s["name"]]["density_after_sem_g_cm3"],
            "md_dir": last[s["name"]]["md_dir"],
            "stopped": last[s["name"]]["stopped"],
        }
        for s in systems
    }
    before = load_potential(resolve_model_dir(original)).state_dict()
    metrics = {
        "n_rounds": len(rounds),
        "tolerance_g_cm3": tol,
        "converged": all(abs(v["error_after_g_cm3"]) <= tol for v in last.values()),
        "resumed_rounds": resumed or [],
        "rounds": rounds,
        "npt": npt,
        "changed_parameters": changed_keys(before, load_potential(out / "model").state_dict()),
    }
    _write_json(out / "metrics.json", metrics)
