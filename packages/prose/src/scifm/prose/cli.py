"""``sci-fm data peptides``, ``train prose``, ``sample prose``, ``finetune prose``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scifm.core.errors import ConfigError, DataError


def register(tree) -> None:
    tree.add(
        "data",
        "peptides",
        configure=_data_args,
        run=run_data,
        help="reference MD of peptides with OpenMM (data_specs/peptide_md HDF5)",
    )
    tree.add(
        "train",
        "prose",
        configure=_train_args,
        run=run_train,
        help="train a Prose flow (or, --model icflow, a single-molecule internal-coordinate flow) by maximum "
        "likelihood on peptide MD frames",
    )
    tree.add(
        "sample",
        "prose",
        configure=_sample_args,
        run=run_sample,
        help="sample a peptide with a Prose flow: proposal, SNIS or SMC, with metrics and plots",
    )
    tree.add(
        "finetune",
        "prose",
        configure=_finetune_args,
        run=run_finetune,
        help="self-improvement fine-tuning of a Prose flow on one (unseen) sequence",
    )


def write_json(path: str | Path, obj: dict) -> Path:
    from scifm.core.io import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _clean(d: dict) -> dict:
    """NaN/inf -> None so metrics.json is strict JSON."""
    import math

    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, dict):
            v = _clean(v)
        out[k] = v
    return out


def _threads(n: int = 1) -> None:
    import torch

    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------- data
def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sequences", nargs="*", default=[], help="e.g. AK GY Ace-A-Nme (capped alanine dipeptide)"
    )
    p.add_argument("--sequences-file", default=None, help="text file, one sequence per line")
    p.add_argument("--random", type=int, default=0, help="add this many random zwitterionic sequences")
    p.add_argument("--min-length", type=int, default=2)
    p.add_argument("--max-length", type=int, default=2)
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--frames", type=int, default=1000, help="frames per sequence (one per --interval-steps)")
    p.add_argument("--warmup-steps", type=int, default=50_000)
    p.add_argument(
        "--interval-steps", type=int, default=1_000, help="MD steps between frames (of --timestep-fs each)"
    )
    p.add_argument("--timestep-fs", type=float, default=1.0)
    p.add_argument(
        "--hydrogen-mass",
        type=float,
        default=0.0,
        help="amu; > 0 moves mass from each heavy atom onto its hydrogens (e.g. 3 with --timestep-fs 2; "
        "masses do not change the configurational ensemble). Default 0: natural masses",
    )
    p.add_argument(
        "--starts",
        type=int,
        default=1,
        help="independent runs per system, each from its own embedded structure and with its own warm-up; "
        "--frames are split between them. More starts cover side-chain rotamers that one short run stays "
        "in (their populations then follow the starts, not the Boltzmann weights: fine for training a "
        "proposal that is reweighted, not for a reference)",
    )
    p.add_argument(
        "--starts-only", nargs="*", default=None, help="give --starts to these systems only (others: 1 run)"
    )
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one sequence each)")
    p.add_argument("--platform", default="CPU", choices=["CPU", "Reference", "CUDA", "OpenCL", "auto"])
    p.add_argument(
        "--force-field",
        default=None,
        choices=["amber14-obc1", "amber99sbildn-obc"],
        help="default: amber14-obc1 for zwitterionic peptides (ManyPeptidesMD), amber99sbildn-obc for capped "
        "ones; amber99sbildn-obc (native GBSAOBCForce) runs ~14x faster on one core for zwitterions too",
    )
    p.add_argument(
        "--parts-dir",
        default=None,
        help="also write each finished sequence to DIR/<name>.h5 and reuse those found there (resume)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def random_sequences(n: int, min_len: int, max_len: int, seed: int, exclude=()) -> list[str]:
    import numpy as np

    from scifm.prose.peptides import AA1_TO_3

    letters = sorted(AA1_TO_3)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen = set(exclude)
    tries = 0
    while len(out) < n and tries < 100 * n + 100:
        tries += 1
        s = "".join(rng.choice(letters, int(rng.integers(min_len, max_len + 1))))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def run_data(args) -> int:
    from scifm.prose.md import generate

    names = list(args.sequences)
    if args.sequences_file:
        path = Path(args.sequences_file)
        if not path.is_file():
            raise DataError(path, "sequence file not found")
        names += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if args.random:
        if not 2 <= args.min_length <= args.max_length <= 8:
            raise ConfigError("--min-length/--max-length must satisfy 2 <= min <= max <= 8")
        names += random_sequences(args.random, args.min_length, args.max_length, args.seed, exclude=names)
    if not names:
        raise ConfigError("no sequences given (use --sequences, --sequences-file or --random)")
    summary = generate(
        names,
        args.out,
        n_frames=args.frames,
        seed=args.seed,
        workers=args.workers,
        platform=args.platform,
        progress=not args.no_progress,
        warmup_steps=args.warmup_steps,
        frame_interval_steps=args.interval_steps,
        timestep_fs=args.timestep_fs,
        hydrogen_mass_amu=args.hydrogen_mass,
        force_field=args.force_field,
        parts_dir=args.parts_dir,
        n_starts=args.starts,
        starts_only=args.starts_only,
    )
    summary["ns_per_day_per_worker"] = (
        summary["simulated_ns"] / max(sum(summary["per_system_wall_s"].values()), 1e-9) * 86400
    )
    write_json(Path(args.out).with_suffix(".json"), summary)
    print(
        f"wrote {args.out}: {len(names)} systems x {args.frames} frames, {summary['simulated_ns']:.3f} ns "
        f"in {summary['wall_time_s']:.1f} s"
    )
    return 0


# ------------------------------------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data_specs/peptide_md HDF5 file")
    p.add_argument("--out", "--run-dir", dest="run_dir", required=True, help="run directory")
    p.add_argument("--systems", nargs="*", default=None, help="train on these systems (default: all)")
    p.add_argument(
        "--val-systems",
        nargs="*",
        default=None,
        help="hold these systems out for validation (default: last --val-fraction of each trajectory)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--stride", type=int, default=1, help="use every stride-th frame")
    p.add_argument(
        "--model",
        default="tarflow",
        choices=["tarflow", "icflow", "ictransfer"],
        help="tarflow: transferable Prose flow on Cartesian tokens; icflow: single-system Boltzmann "
        "generator on internal coordinates (one training system); ictransfer: transferable flow on "
        "per-atom internal coordinates (force-field standardised, zero-shot on new sequences)",
    )
    p.add_argument(
        "--ic-layers",
        type=int,
        default=None,
        help="icflow: coupling layers (even, default 12); ictransfer: couplings (multiple of 4, default 12)",
    )
    p.add_argument(
        "--ic-hidden",
        type=int,
        default=None,
        help="icflow: conditioner width (default 256); ictransfer: transformer width (default 128)",
    )
    p.add_argument("--ic-bins", type=int, default=None, help="icflow/ictransfer: spline bins (default 8)")
    p.add_argument(
        "--ic-stiff-kT",
        dest="ic_stiff_kt",
        type=float,
        default=None,
        help="ictransfer: proper torsions with a bonded-energy barrier of at least this many kT on both "
        "sides (rings, amides, aromatic and guanidinium groups) get a unimodal base around the minimised "
        "structure; 0 keeps every proper torsion circular (default 10)",
    )
    p.add_argument(
        "--kl-weight",
        type=float,
        default=0.0,
        help="ictransfer: add this weight x the reverse KL to the Boltzmann distribution of the training "
        "systems (OpenMM energies of the flow's own samples) to every training step; 0: likelihood only",
    )
    p.add_argument("--kl-systems", type=int, default=8, help="ictransfer: training systems per KL step")
    p.add_argument("--kl-samples", type=int, default=16, help="ictransfer: flow draws per system per KL step")
    p.add_argument(
        "--kl-cut-kt",
        type=float,
        default=100.0,
        help="ictransfer: energies more than this many kT above the system's median data energy are "
        "softened logarithmically in the KL term",
    )
    p.add_argument("--size", default="tiny", help="tiny, small, base, medium, paper")
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--num-blocks", type=int, default=None)
    p.add_argument("--layers-per-block", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=None)
    p.add_argument(
        "--std-nm", type=float, default=None, help="coordinate scale (default: from training data)"
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="start from the weights of a finished run (its directory or model/): the same --model, "
        "architecture and coordinate scale (taken from it unless --std-nm is given); optimiser, schedule "
        "and epochs start afresh (to train longer, or to fine-tune on new systems)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=4e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--max-time-s", type=float, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for training")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--logger", default="csv", choices=["csv", "wandb"])
    p.add_argument("--no-progress", action="store_true")


def _load_init(model, init, args) -> None:
    """Copy init's weights into the freshly built model; another kind of flow or a different architecture
    is an error naming the difference (nothing is trained)."""
    source = args.init_from
    if type(init) is not type(model):
        raise ConfigError(
            f"--init-from {source}: its model is a {type(init).__name__}, not --model {args.model} "
            f"({type(model).__name__})"
        )
    a, b = init.config.to_dict(), model.config.to_dict()
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        pairs = ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in diff)
        raise ConfigError(f"--init-from {source}: its architecture differs ({pairs})")
    model.load_state_dict(init.state_dict())


def run_train(args) -> int:
    import torch

    from scifm.core.train import fit
    from scifm.prose.data import FrameDataset, PeptideMDFile, collate, coordinate_std
    from scifm.prose.tarflow import ProseFlow, make_config
    from scifm.prose.train import ProseTask, export_run, load_run

    _threads(args.threads)
    src = PeptideMDFile(args.data)  # validated before any work
    names = args.systems or src.names
    for n in names + (args.val_systems or []):
        src.system(n)
    if not 0 <= args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    train_r, val_r = {}, {}
    if args.val_systems:
        train_r = {n: (0, None) for n in names if n not in args.val_systems}
        val_r = {n: (0, None) for n in args.val_systems}
    else:
        for n in names:
            F = src.info[n]["n_frames"]
            cut = F - int(round(F * args.val_fraction))
            train_r[n] = (0, cut)
            if cut < F:
                val_r[n] = (cut, None)
    if not train_r:
        raise ConfigError("no training systems left after removing --val-systems")
    if args.kl_weight < 0:
        raise ConfigError(f"--kl-weight must be >= 0, got {args.kl_weight}")
    if args.kl_weight and args.model != "ictransfer":
        raise ConfigError("--kl-weight applies to the transferable IC flow (--model ictransfer) only")
    if args.kl_weight and min(args.kl_systems, args.kl_samples, args.kl_cut_kt) <= 0:
        raise ConfigError(
            f"--kl-systems, --kl-samples and --kl-cut-kt must be positive (got {args.kl_systems}, "
            f"{args.kl_samples}, {args.kl_cut_kt})"
        )
    if args.model == "icflow" and (len(train_r) != 1 or set(val_r) - set(train_r)):
        raise ConfigError(
            f"--model icflow is a single-system flow: give exactly one training system and no "
            f"--val-systems (got {sorted(train_r)}, validation {sorted(val_r)})"
        )
    init = load_run(args.init_from)[0] if args.init_from else None
    if init is not None and not args.std_nm:
        args.std_nm = init.config.std_nm
    std = args.std_nm or coordinate_std(
        [src.coordinates(n, lo, hi, args.stride) for n, (lo, hi) in train_r.items()]
    )
    torch.manual_seed(args.seed)
    collate_fn = collate
    task_extra = {}
    if args.model == "ictransfer":
        from scifm.prose.ictransfer import (
            ICTransferConfig,
            ICTransferFlow,
            ICTransferTask,
            TokenDataset,
            collate_tokens,
        )

        sizes = dict(d_model=args.ic_hidden, n_couplings=args.ic_layers, n_bins=args.ic_bins)
        sizes = {k: v for k, v in sizes.items() if v}
        if args.ic_stiff_kt is not None:
            sizes["stiff_torsion_kT"] = args.ic_stiff_kt
        model = ICTransferFlow(ICTransferConfig(std_nm=std, **sizes))
        opts = model.config.graph_options()
        train_ds = TokenDataset(src, train_r, std, stride=args.stride, graph_options=opts)
        val_ds = TokenDataset(src, val_r, std, stride=args.stride, graph_options=opts) if val_r else None
        cfg, task_cls, collate_fn = model.config, ICTransferTask, collate_tokens
        if args.kl_weight:
            from scifm.prose.ictransfer import ReverseKL

            kl = ReverseKL.from_dataset(
                train_ds, src, n_systems=args.kl_systems, n_samples=args.kl_samples, cut_kT=args.kl_cut_kt
            )
            task_extra = {"kl": kl, "kl_weight": args.kl_weight}
    else:
        train_ds = FrameDataset(src, train_r, std, stride=args.stride)
        val_ds = FrameDataset(src, val_r, std, stride=args.stride) if val_r else None
    if args.model == "icflow":
        from scifm.prose.icflow import ICFlowTask, make_icflow

        model = make_icflow(
            src.system(next(iter(train_r))).topology,
            train_ds.systems[0]["x"],
            std,
            n_layers=args.ic_layers,
            hidden=args.ic_hidden,
            n_bins=args.ic_bins,
        )
        cfg = model.config
        task_cls = ICFlowTask
    elif args.model == "tarflow":
        cfg = make_config(
            args.size,
            channels=args.channels,
            num_blocks=args.num_blocks,
            layers_per_block=args.layers_per_block,
            head_dim=args.head_dim,
            std_nm=std,
        )
        model = ProseFlow(cfg)
        task_cls = ProseTask
    if init is not None:
        _load_init(model, init, args)
    g = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=collate_fn,
        generator=g,
        drop_last=len(train_ds) > args.batch_size,
    )
    val_loader = (
        torch.utils.data.DataLoader(val_ds, batch_size=args.batch_size, collate_fn=collate_fn)
        if val_ds is not None and len(val_ds)
        else None
    )
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    task = task_cls(
        model,
        optimizer={"name": "adamw", "lr": args.lr, "weight_decay": args.weight_decay, "betas": [0.9, 0.95]},
        # a wall-time cap ends a run long before an epoch-based one-cycle warm-up would: anneal over the
        # time instead
        scheduler=(
            {
                "name": "cosine-time",
                "budget_s": args.max_time_s,
                "warmup_frac": 0.03,
                "eta_min": 0.01 * args.lr,
            }
            if args.max_time_s
            else {
                "name": "onecycle",
                "max_lr": args.lr,
                "pct_start": 0.05,
                "div_factor": 500,
                "final_div_factor": 1,
            }
        ),
        ema_decay=args.ema_decay if args.ema_decay else None,
        **task_extra,
    )
    run_dir = Path(args.run_dir)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # invertibility needs full fp32 matmuls
    trainer = fit(
        task,
        train_loader,
        val_loader,
        run_dir=run_dir,
        max_epochs=args.max_epochs,
        seed=args.seed,
        logger=args.logger,
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        progress=not args.no_progress,
        max_time_s=args.max_time_s,
        grad_clip=args.grad_clip,
        dtype=args.dtype,
    )
    avg = task.averaged_model().cpu().float().eval()
    meta = dict(
        data=str(args.data),
        systems=list(train_r),
        val_systems=list(val_r),
        std_nm=std,
        force_fields=sorted({src.info[n]["force_field"] for n in train_r}),
        fit=trainer.scifm_summary,
        model=args.model,
    )
    export_run(run_dir, avg, meta)
    from scifm.core.train import read_metrics_csv

    cols = read_metrics_csv(run_dir) if (run_dir / "logs" / "metrics.csv").is_file() else {}
    last = {k: v[-1] for k, v in cols.items() if v and k.startswith(("train/", "val/"))}
    metrics = dict(
        n_parameters=avg.n_parameters(),
        config=cfg.to_dict(),
        n_train_frames=len(train_ds),
        n_val_frames=len(val_ds) if val_ds is not None else 0,
        std_nm=std,
        fit=trainer.scifm_summary,
        final=last,
    )
    if args.init_from:
        metrics["init_from"] = str(args.init_from)
    if task_extra:
        kl = task_extra["kl"]
        metrics["reverse_kl"] = dict(
            weight=args.kl_weight,
            systems_per_step=kl.n_systems,
            samples_per_system=kl.n_samples,
            cut_kT=kl.cut_kT,
            energy_evaluations=sum(m["energy"].n_evaluations for m in kl.molecules),
        )
    write_json(run_dir / "metrics.json", _clean(metrics))
    label = {"tarflow": "Prose", "icflow": "IC flow", "ictransfer": "transferable IC flow"}[args.model]
    n_par = avg.n_parameters()
    print(f"trained {label} ({n_par:,} parameters) on {len(train_ds)} frames -> {run_dir / 'model'}")
    return 0


# ----------------------------------------------------------------------------------------------- sample
def _common_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory of `sci-fm train prose` (or its model/)")
    p.add_argument("--sequence", required=True, help="e.g. AK, or Ace-A-Nme for capped alanine dipeptide")
    p.add_argument("--reference", default=None, help="peptide_md HDF5 with a reference MD of this sequence")
    p.add_argument("--max-reference", type=int, default=10_000, help="reference frames used for metrics")
    p.add_argument("--metric-points", type=int, default=3000, help="points per side in the exact W2 problems")
    p.add_argument("--workers", type=int, default=1, help="processes for target energies")
    p.add_argument("--platform", default="CPU", choices=["CPU", "Reference", "CUDA", "OpenCL", "auto"])
    p.add_argument(
        "--com-correction",
        default=None,
        choices=["chi3", "gaussian", "none"],
        help="CoM term of the proposal energy (default: chi3 for a TarFlow, gaussian for an IC flow, "
        "the only exact choice there)",
    )
    p.add_argument("--clip", type=float, default=0.002, help="fraction of largest log-weights dropped")
    p.add_argument(
        "--base-scale",
        type=float,
        default=1.0,
        help="ictransfer: std of the Gaussian base entries (bonds, angles, unimodal torsions); < 1 is a "
        "colder proposal whose exact density enters the weights",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def _sample_args(p: argparse.ArgumentParser) -> None:
    _common_sample_args(p)
    p.add_argument("--n", type=int, required=True, help="number of proposals (particles for SMC)")
    p.add_argument(
        "--method",
        default="snis",
        choices=["proposal", "snis", "smc", "md"],
        help="md: plain Langevin MD (1 fs) from the minimised built structure with --n force evaluations, "
        "the baseline of equal cost (the flow is not used)",
    )
    p.add_argument("--md-interval", type=int, default=10, help="md: steps between kept frames")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--smc-steps", type=int, default=100)
    p.add_argument("--smc-kernel", default="ula", choices=["ula", "mala"])
    p.add_argument("--step-size", type=float, default=None, help="Langevin step (standardised units)")
    p.add_argument("--ess-threshold", type=float, default=1.0)
    p.add_argument(
        "--energy-cutoff", type=float, default=None, help="drop proposals with E_target >= this (kT)"
    )
    p.add_argument(
        "--symmetrise",
        default="none",
        choices=["none", "rings", "flips"],
        help="average the proposal density over 180-degree flips of symmetric groups, rings: Phe/Tyr; "
        "flips: also carboxylates (C-terminus, Asp, Glu) and Arg guanidinium (2^k flow evaluations per "
        "sample for k flips, no extra energy evaluations; see scifm.prose.symmetry)",
    )


class _Context:
    """Everything `sample`/`finetune` need for one sequence: flow, topology, target, reference."""

    def __init__(self, args):
        import numpy as np
        import torch

        from scifm.prose.data import PeptideMDFile
        from scifm.prose.energy import OpenMMEnergy, TargetEnergy
        from scifm.prose.peptides import (
            FORCE_FIELDS,
            build_peptide,
            create_system,
            default_force_field,
            parse_system_name,
            system_name,
            topology_from_pdb,
        )
        from scifm.prose.sampler import ProseSampler
        from scifm.prose.train import load_run

        seq, capped = parse_system_name(args.sequence)
        self.name = system_name(seq, capped)
        if not Path(args.model).exists():
            raise DataError(args.model, "model run not found")
        self.flow, self.meta = load_run(args.model, device=args.device)
        from scifm.prose.icflow import ICFlow
        from scifm.prose.ictransfer import ICTransferFlow

        self.is_transfer_ic = isinstance(self.flow, ICTransferFlow)
        self.is_icflow = isinstance(self.flow, ICFlow) or self.is_transfer_ic
        if self.is_icflow:
            if args.com_correction not in (None, "gaussian"):
                raise ConfigError(
                    f"an IC flow draws its centroid from N(0, I/N): --com-correction must be gaussian, "
                    f"got {args.com_correction}"
                )
            if not self.is_transfer_ic and self.name not in self.meta.get("systems", []):
                raise ConfigError(
                    f"{args.model} is an IC flow of {self.meta.get('systems')}; it cannot sample {self.name}"
                )
        args.com_correction = args.com_correction or ("gaussian" if self.is_icflow else "chi3")
        self.reference = None
        if args.reference:
            src = PeptideMDFile(args.reference)
            sysm = src.system(self.name)
            self.topology, ff, T = sysm.topology, sysm.force_field, sysm.temperature_K
            positions = topology_from_pdb(sysm.attrs["topology_pdb"])[1]
            F = src.info[self.name]["n_frames"]
            stride = max(1, F // max(1, args.max_reference))
            self.reference = src.coordinates(self.name, 0, None, stride)[: args.max_reference]
        else:
            pep = build_peptide(seq, capped, seed=args.seed)
            ff = default_force_field(capped)
            self.topology, T = pep.topology, FORCE_FIELDS[ff]["temperature_K"]
            positions = pep.positions
        self.force_field, self.temperature_K = ff, T
        system = create_system(self.topology, ff)
        self.system, self.sequence, self.capped = system, seq, capped
        if self.is_transfer_ic:
            self.flow = self.flow.bind(self.topology, system, T, positions, args.base_scale)
        elif args.base_scale != 1.0:
            raise ConfigError("--base-scale applies to a transferable IC flow (--model ictransfer) only")
        self.omm = OpenMMEnergy(system, T, n_workers=args.workers, platform=args.platform)
        self.target = TargetEnergy(self.omm, self.flow.config.std_nm)
        self.symmetrise = getattr(args, "symmetrise", "none")  # finetune has no such option
        self.symmetry_group_size = 1
        if self.symmetrise != "none":
            from scifm.prose.symmetry import SymmetrisedFlow, flip_group

            group = flip_group(self.topology, self.symmetrise)
            self.symmetry_group_size = int(group.shape[0])
            if self.symmetry_group_size > 1:
                self.flow = SymmetrisedFlow(self.flow, group)
        self.sampler = ProseSampler(
            self.flow, self.topology, self.target, args.com_correction, args.batch_size
        )
        self.generator = torch.Generator().manual_seed(args.seed)
        self.reference_energy = None
        if self.reference is not None:
            e, _ = self.omm(self.reference)
            self.omm.n_evaluations -= len(self.reference)  # reference energies are not the sampler's budget
            self.reference_energy = np.asarray(e)

    def plain_md(self, n_steps: int, interval: int, platform: str, seed: int) -> dict:
        """Langevin MD (1 fs, friction 1/ps) from the minimised built structure: n_steps force
        evaluations, a frame every `interval` steps; the same result keys as `ProseSampler.run`."""
        import numpy as np
        import openmm as mm
        import openmm.unit as u

        from scifm.prose.peptides import build_peptide, select_platform

        if interval < 1 or n_steps < 2 * interval:
            raise ConfigError(f"md: need --n >= 2 x --md-interval >= 2, got {n_steps} and {interval}")
        t0 = time.perf_counter()
        pep = build_peptide(self.sequence, self.capped, seed=seed)
        T = self.temperature_K * u.kelvin
        integ = mm.LangevinMiddleIntegrator(T, 1.0 / u.picosecond, 1.0 * u.femtosecond)
        integ.setRandomNumberSeed(int(seed) % 2**31 + 1)
        plat, props = select_platform(platform)
        ctx = mm.Context(self.system, integ, plat, props)
        ctx.setPositions(pep.positions * u.nanometer)
        mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 0)
        ctx.setVelocitiesToTemperature(T, int(seed) % 2**31 + 1)
        frames = []
        for _ in range(n_steps // interval):
            integ.step(interval)
            frames.append(
                ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
            )
        del ctx
        x = np.asarray(frames, dtype=np.float64)
        e, _ = self.omm(x)
        self.omm.n_evaluations -= len(x)  # energies of kept frames: MD computed them already
        e = np.asarray(e)
        return dict(
            method="md",
            n_proposals=len(x),
            proposal_nm=x,
            proposal_energy=e,
            samples_nm=x,
            samples_energy=e,
            ess=float("nan"),
            energy_evaluations=int((n_steps // interval) * interval),
            wall_time_s=time.perf_counter() - t0,
        )

    def evaluate(self, res: dict, out: Path, args, extra: dict | None = None) -> dict:
        import numpy as np

        from scifm.prose.metrics import evaluate, fix_chirality
        from scifm.prose.plots import plot_energy_histograms, plot_ramachandran

        n_max = args.metric_points
        m = dict(
            sequence=self.name,
            method=res["method"],
            n_samples=int(len(res["samples_nm"])),
            n_proposals=res["n_proposals"],
            ess=res["ess"],
            energy_evaluations=res["energy_evaluations"],
            wall_time_s=res["wall_time_s"],
            force_field=self.force_field,
            temperature_K=self.temperature_K,
            com_correction=args.com_correction,
            symmetrise=self.symmetrise,
            symmetry_group_size=self.symmetry_group_size,
            energy_unit="kT",
            length_unit="nm",
        )
        for k in (
            "smc_final_ess",
            "smc_acceptance",
            "smc_step_size",
            "smc_log_z",
            "smc_resamples",
            "n_particles",
        ):
            if k in res:
                m[k] = res[k]
        prop_fixed, prop_chir = (
            fix_chirality(self.topology, res["proposal_nm"], self.reference[0])
            if self.reference is not None
            else (res["proposal_nm"], {})
        )
        m["proposal_wrong_chirality_fraction"] = prop_chir.get("wrong_chirality_fraction")
        keys = ("energy_w2", "torus_w2", "tica_w2", "macrostate_jsd", "wrong_chirality_fraction")
        if self.reference is not None:
            ev = evaluate(
                self.topology,
                self.reference,
                self.reference_energy,
                res["samples_nm"],
                res["samples_energy"],
                n_max=n_max,
                seed=args.seed,
            )
            m.update(ev)
            if res["method"] not in ("proposal", "md"):
                pe = evaluate(
                    self.topology,
                    self.reference,
                    self.reference_energy,
                    res["proposal_nm"],
                    res["proposal_energy"],
                    n_max=n_max,
                    seed=args.seed,
                )
                m["proposal_metrics"] = {k: pe[k] for k in keys}
        else:
            m.update({k: float("nan") for k in keys})
            _, chir = fix_chirality(self.topology, res["samples_nm"], res["proposal_nm"][0])
            m["wrong_chirality_fraction"] = float("nan")
        m["mean_energy_samples"] = float(
            np.nanmean(np.where(np.isfinite(res["samples_energy"]), res["samples_energy"], np.nan))
        )
        if self.reference_energy is not None:
            m["mean_energy_reference"] = float(np.mean(self.reference_energy))
        m.update(extra or {})
        out.mkdir(parents=True, exist_ok=True)
        sets, energies = {}, {}
        if self.reference is not None:
            sets["reference"], energies["reference"] = self.reference, self.reference_energy
        sets["proposal"], energies["proposal"] = prop_fixed, res["proposal_energy"]
        if res["method"] != "proposal":
            label = {"snis": "reweighted", "smc": "SMC", "md": "MD"}[res["method"]]
            sets[label] = (
                fix_chirality(self.topology, res["samples_nm"], self.reference[0])[0]
                if self.reference is not None
                else res["samples_nm"]
            )
            energies[label] = res["samples_energy"]
        plot_ramachandran(self.topology, sets, out / "ramachandran.png")
        if np.isfinite(res["proposal_energy"]).any():
            plot_energy_histograms(energies, out / "energy_hist.png", title=f"{self.name} ({res['method']})")
        np.savez_compressed(
            out / "samples.npz",
            proposal_nm=res["proposal_nm"].astype(np.float32),
            samples_nm=res["samples_nm"].astype(np.float32),
            proposal_energy_kT=res["proposal_energy"],
            samples_energy_kT=res["samples_energy"],
            logw=res.get("logw", np.zeros(0)),
        )
        write_json(out / "metrics.json", _clean(m))
        return m

    def close(self):
        self.omm.close()


def run_sample(args) -> int:
    _threads()
    if args.n < 2:
        raise ConfigError(f"--n must be >= 2, got {args.n}")
    ctx = _Context(args)
    try:
        if args.method == "md":
            res = ctx.plain_md(args.n, args.md_interval, args.platform, args.seed)
            m = ctx.evaluate(res, Path(args.out), args)
            return _print_metrics(m)
        res = ctx.sampler.run(
            args.method,
            args.n,
            clip=args.clip,
            energy_cutoff=args.energy_cutoff,
            smc_steps=args.smc_steps,
            smc_kernel=args.smc_kernel,
            step_size=args.step_size,
            ess_threshold=args.ess_threshold,
            generator=ctx.generator,
        )
        m = ctx.evaluate(res, Path(args.out), args)
    finally:
        ctx.close()
    return _print_metrics(m)


def _print_metrics(m: dict) -> int:
    keys = ("n_samples", "ess", "energy_w2", "torus_w2", "tica_w2", "macrostate_jsd")
    keys += ("wrong_chirality_fraction", "energy_evaluations", "wall_time_s")
    print(json.dumps({k: m.get(k) for k in keys}))
    return 0


# --------------------------------------------------------------------------------------------- finetune
def _finetune_args(p: argparse.ArgumentParser) -> None:
    _common_sample_args(p)
    p.add_argument("--out", required=True, help="new run directory (model/ + metrics.json + plots)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--proposals", type=int, default=2000, help="SNIS proposals per round (anchor: 200,000)")
    p.add_argument(
        "--steps", type=int, default=100, help="optimiser steps per round (anchor: 1000 x 8 accum.)"
    )
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--teacher-weight", type=float, default=0.5)
    p.add_argument("--eval-n", type=int, default=2000, help="SNIS proposals of the final evaluation")


def run_finetune(args) -> int:
    from scifm.prose.finetune import self_improve
    from scifm.prose.train import export_run

    _threads()
    ctx = _Context(args)
    if ctx.is_icflow:
        ctx.close()
        raise ConfigError("self-improvement fine-tuning is for transferable TarFlow models, not IC flows")
    t0 = time.perf_counter()
    try:
        before = ctx.sampler.run("snis", args.eval_n, clip=args.clip, generator=ctx.generator)
        hist = self_improve(
            ctx.sampler,
            rounds=args.rounds,
            proposals=args.proposals,
            steps=args.steps,
            batch_size=args.train_batch_size,
            lr=args.lr,
            teacher_weight=args.teacher_weight,
            clip=args.clip,
            generator=ctx.generator,
        )
        after = ctx.sampler.run("snis", args.eval_n, clip=args.clip, generator=ctx.generator)
        out = Path(args.out)
        export_run(
            out, ctx.flow, dict(ctx.meta, finetuned_on=ctx.name, base_model=str(args.model), history=hist)
        )
        budget = sum(h["energy_evaluations"] for h in hist) + after["energy_evaluations"]
        m = ctx.evaluate(
            after,
            out,
            args,
            extra=dict(ess_before=before["ess"], rounds=hist, finetune_wall_time_s=time.perf_counter() - t0),
        )
        m["energy_evaluations"] = budget
        write_json(out / "metrics.json", _clean(m))
    finally:
        ctx.close()
    print(f"self-improvement on {ctx.name}: SNIS ESS {before['ess']:.4f} -> {after['ess']:.4f} -> {args.out}")
    return 0
