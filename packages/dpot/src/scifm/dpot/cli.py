"""``sci-fm data pde``, ``train dpot``, ``finetune dpot``, ``eval dpot``, ``rollout dpot``."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from scifm.core.errors import ConfigError, DataError


def register(tree) -> None:
    tree.add(
        "data", "pde", configure=_data_args, run=run_data, help="generate a PDE dataset (data_specs/pde HDF5)"
    )
    tree.add(
        "train",
        "dpot",
        configure=_train_args,
        run=run_train,
        help="pre-train DPOT (or the FNO baseline) on a weighted mixture of PDE datasets",
    )
    tree.add(
        "finetune",
        "dpot",
        configure=lambda p: _train_args(p, finetune=True),
        run=run_train,
        help="fine-tune a pre-trained DPOT run on a new dataset",
    )
    tree.add("eval", "dpot", configure=_eval_args, run=run_eval, help="L2RE of auto-regressive rollouts")
    tree.add(
        "rollout",
        "dpot",
        configure=_rollout_args,
        run=run_rollout,
        help="roll a model out and plot prediction vs truth and error over time",
    )


# ------------------------------------------------------------------------------------------------- data
def _data_args(p: argparse.ArgumentParser) -> None:
    from scifm.dpot.pde import EQUATIONS

    p.add_argument("--equation", required=True, choices=sorted(EQUATIONS))
    p.add_argument("--n", type=int, required=True, help="number of trajectories")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--nx", type=int, default=None, help="saved grid points per side (default per equation)")
    p.add_argument("--refine", type=int, default=None, help="solver grid = nx * refine, then subsampled")
    p.add_argument("--n-frames", type=int, default=20)
    p.add_argument("--frame-dt", type=float, default=None, help="time between saved frames")
    p.add_argument("--nu", type=float, default=None, help="viscosity (navier_stokes: 1e-3; burgers: 1e-2)")
    p.add_argument("--dt", type=float, default=None, help="navier_stokes solver step (default 1e-4, as FNO)")
    p.add_argument(
        "--scheme", default=None, choices=["cn-euler", "cn-heun"], help="navier_stokes time scheme"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="trajectories solved together")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--no-progress", action="store_true")


def run_data(args) -> int:
    from scifm.dpot.data import write_pde
    from scifm.dpot.pde import EQUATIONS, GENERATOR_VERSION

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    kw = dict(
        n=args.n,
        n_frames=args.n_frames,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    for name in ("nx", "refine", "frame_dt"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.equation in ("navier_stokes", "burgers") and args.nu is not None:
        kw["nu"] = args.nu
    if args.equation == "navier_stokes":
        for name in ("dt", "scheme"):
            if getattr(args, name) is not None:
                kw[name] = getattr(args, name)
    elif args.dt is not None or args.scheme is not None:
        raise ConfigError("--dt/--scheme apply to navier_stokes only (the other solvers pick stable steps)")
    t0 = time.perf_counter()
    data, attrs = EQUATIONS[args.equation](**kw)
    info = write_pde(args.out, data, generator_version=GENERATOR_VERSION, **attrs)
    print(f"wrote {args.out}: data {info.shape} ({attrs['equation']}) in {time.perf_counter() - t0:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser, finetune: bool = False) -> None:
    p.add_argument("--data", nargs="+", required=True, help="FILE.h5 or FILE.h5:WEIGHT, one per dataset")
    p.add_argument("--out", "--run-dir", dest="run_dir", required=True, help="run directory")
    p.add_argument("--init", required=finetune, default=None, help="pre-trained run to start from")
    p.add_argument("--arch", default="dpot", choices=["dpot", "fno"])
    p.add_argument("--size", default="tiny", help="DPOT config: tiny, Ti, S, M, L, H")
    p.add_argument("--res", type=int, default=None, help="training resolution (default: first file's grid)")
    p.add_argument("--t-in", type=int, default=10)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--embed-dim", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--n-blocks", type=int, default=None)
    p.add_argument("--modes", type=int, default=None)
    p.add_argument(
        "--embed-mid",
        type=int,
        default=None,
        help="channels of the patch embedding's first conv (default: the paper's C * patch_size + 3)",
    )
    p.add_argument(
        "--residual",
        action="store_true",
        default=None,
        help="predict the change from the last input frame (not in the paper)",
    )
    p.add_argument("--width", type=int, default=32, help="FNO width")
    p.add_argument(
        "--noise-scale",
        type=float,
        default=0.0 if finetune else 5e-4,
        help="anchor's s (for a 128x128x10 window; rescaled to ours)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--unroll",
        type=int,
        default=1,
        help="pushforward training: each step trains rollout step k ~ U{1..N} (no gradient through the "
        "first k-1 steps); 1 = one-step training as in the paper",
    )
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--max-time-s", type=float, default=None)
    p.add_argument(
        "--train-fraction", type=float, default=1.0, help="use this share of the train trajectories"
    )
    p.add_argument("--test-fraction", type=float, default=0.1, help="last trajectories of each file held out")
    p.add_argument("--eval-horizon", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--logger", default="csv", choices=["csv", "wandb"])
    p.add_argument("--no-progress", action="store_true")


def _parse_sources(items: list[str]) -> list[tuple[str, float]]:
    """``FILE`` or ``FILE:WEIGHT`` (a suffix that is not a number stays part of the path)."""
    out = []
    for item in items:
        path, sep, tail = item.rpartition(":")
        try:
            weight = float(tail) if sep else 1.0
        except ValueError:
            path, weight = item, 1.0
        if weight <= 0:
            raise ConfigError(f"--data {item!r}: weight must be positive")
        out.append((path if sep and path else item, weight))
    return out


def run_train(args) -> int:
    import numpy as np
    import torch

    from scifm.core.train import fit
    from scifm.dpot.data import MixtureDataset, Source, split_indices, validate_pde
    from scifm.dpot.fno import FNO, FNOConfig
    from scifm.dpot.model import DPOT, make_config
    from scifm.dpot.train import DPOTTask, export_run, init_from, load_run

    sources = _parse_sources(args.data)
    infos = [validate_pde(p) for p, _ in sources]  # everything checked before any work
    if not 0 < args.train_fraction <= 1:
        raise ConfigError(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.unroll < 1:
        raise ConfigError(f"--unroll must be >= 1, got {args.unroll}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(args.seed)
    n_channels = max(i.n_channels for i in infos)
    if args.init:
        base, _ = load_run(args.init)
        cfg = base.config
        res = getattr(cfg, "img_size", None) or infos[0].grid[0]
        n_channels = cfg.in_channels
        model = type(base)(cfg)
        skipped = init_from(model, args.init)
        if skipped:
            print(f"not loaded from {args.init} (shape/name mismatch): {', '.join(skipped)}")
        arch = "dpot" if isinstance(model, DPOT) else "fno"
    else:
        arch = args.arch
        res = args.res or infos[0].grid[0]
        if arch == "dpot":
            over = {
                k: getattr(args, k)
                for k in ("patch_size", "embed_dim", "depth", "n_blocks", "modes", "embed_mid", "residual")
                if getattr(args, k) is not None
            }
            cfg = make_config(
                args.size,
                img_size=res,
                in_channels=n_channels,
                out_channels=n_channels,
                in_timesteps=args.t_in,
                n_cls=max(len(sources), 1),
                **over,
            )
            model = DPOT(cfg)
        else:
            if len(sources) != 1:
                raise ConfigError("the FNO baseline trains on one dataset at a time")
            cfg = FNOConfig(
                in_channels=n_channels,
                out_channels=n_channels,
                in_timesteps=args.t_in,
                width=args.width,
                modes=args.modes or 12,
                spatial_dims=infos[0].spatial_dims,
            )
            model = FNO(cfg)
    t_in = model.config.in_timesteps
    train_src, test_src = [], []
    for (path, w), info in zip(sources, infos, strict=True):
        tr, te = split_indices(info.n_trajectories, args.test_fraction)
        k = max(1, int(round(tr.size * args.train_fraction)))
        train_src.append(Source(path, w, tr[:k].tolist()))
        test_src.append(Source(path, 1.0, te.tolist()))
    fno_1d = arch == "fno" and model.config.spatial_dims == 1
    if fno_1d:
        if args.unroll > 1:
            raise ConfigError("--unroll > 1 is not supported for the 1-D FNO baseline")
        loader_ds = _Plain1D(train_src[0].path, train_src[0].indices, t_in)
        val_ds = _Plain1D(test_src[0].path, test_src[0].indices, t_in)
    else:
        loader_ds = MixtureDataset(
            train_src,
            t_in=t_in,
            t_out=args.unroll * model.config.out_timesteps,
            res=res,
            n_channels=n_channels,
            seed=args.seed,
        )
        val_ds = MixtureDataset(test_src, t_in=t_in, res=res, n_channels=n_channels, seed=args.seed + 1)
    train_loader = torch.utils.data.DataLoader(loader_ds, batch_size=args.batch_size, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=args.batch_size)
    task = DPOTTask(
        model,
        noise_scale=args.noise_scale if arch == "dpot" else 0.0,
        unroll=args.unroll,
        optimizer={"name": "adam", "lr": args.lr, "weight_decay": args.weight_decay, "betas": [0.9, 0.9]},
        scheduler={
            "name": "onecycle",
            "max_lr": args.lr,
            "pct_start": 0.2,
            "div_factor": 1e4,
            "final_div_factor": 1e4,
        },
    )
    run_dir = Path(args.run_dir)
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
    )
    meta = dict(
        arch=arch,
        data=[p for p, _ in sources],
        weights=[w for _, w in sources],
        train_fraction=args.train_fraction,
        init=args.init,
        noise_scale=args.noise_scale,
        fit=trainer.scifm_summary,
    )
    export_run(run_dir, model.cpu(), meta)
    results = {}
    for src in test_src:
        results[Path(src.path).stem] = _eval_and_plot(
            model, src.path, src.indices, args.eval_horizon, run_dir / "plots", device
        )
    metrics = dict(
        arch=arch,
        config=model.config.to_dict(),
        n_parameters=sum(p.numel() for p in model.parameters()),
        fit=trainer.scifm_summary,
        datasets=results,
        l2re_mean=float(np.mean([r["l2re"] for r in results.values()])),
    )
    write_json(run_dir / "metrics.json", metrics)
    print(json.dumps({k: v["l2re"] for k, v in results.items()}, indent=1))
    return 0


class _Plain1D:
    """One-step windows of a 1-D file for the 1-D FNO (no 2-D lifting)."""

    def __init__(self, path, indices, t_in):
        import numpy as np
        import torch

        from scifm.dpot.data import PDEFile

        self.data = torch.as_tensor(PDEFile(path).read(indices), dtype=torch.float32)
        self.t_in = t_in
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        import torch

        t0 = int(self.rng.integers(0, self.data.shape[-2] - self.t_in))
        w = self.data[i, ..., t0 : t0 + self.t_in + 1, :]
        return dict(x=w[..., : self.t_in, :], y=w[..., self.t_in :, :], mask=torch.ones(self.data.shape[-1]))


def _eval_and_plot(model, path, indices, horizon, plot_dir, device, resample="none") -> dict:
    from scifm.dpot.rollout import evaluate_file, plot_error_curves, plot_rollout

    r = evaluate_file(model, path, indices, horizon, resample=resample, device=device)
    pred, true = r.pop("pred"), r.pop("true")
    stem = Path(path).stem
    plot_rollout(pred, true, Path(plot_dir) / f"{stem}_rollout.png", title=f"{stem}: L2RE {r['l2re']:.4f}")
    plot_error_curves({stem: r["per_step_l2re"]}, Path(plot_dir) / f"{stem}_error.png", title=stem)
    return r


def write_json(path: str | Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ eval/rollout
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory (or its model/ folder)")
    p.add_argument("--data", required=True, help="data_specs/pde HDF5 file")
    p.add_argument("--out", default="metrics.json")
    p.add_argument("--horizon", type=int, default=None, help="frames to predict (default: all after t_in)")
    p.add_argument("--split", default="all", choices=["all", "train", "test"])
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--resample", default="none", choices=["none", "fft", "bilinear"])
    p.add_argument("--device", default="cpu")


def _indices(path, split, test_fraction):
    from scifm.dpot.data import split_indices, validate_pde

    info = validate_pde(path)
    if split == "all":
        return None
    tr, te = split_indices(info.n_trajectories, test_fraction)
    return (tr if split == "train" else te).tolist()


def run_eval(args) -> int:
    from scifm.dpot.train import load_run

    idx = _indices(args.data, args.split, args.test_fraction)
    if not Path(args.model).exists():
        raise DataError(args.model, "model run not found")
    model, meta = load_run(args.model, device=args.device)
    out = Path(args.out)
    r = _eval_and_plot(model, args.data, idx, args.horizon, out.parent / "plots", args.device, args.resample)
    r["model"] = str(args.model)
    write_json(out, r)
    print(f"L2RE {r['l2re']:.5f} over {r['n_trajectories']} trajectories, horizon {r['horizon']} -> {out}")
    return 0


def _rollout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", "--out-dir", dest="out_dir", required=True, help="output directory")
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--traj", type=int, default=0, help="trajectory to plot")
    p.add_argument("--channel", type=int, default=0)
    p.add_argument("--resample", default="none", choices=["none", "fft", "bilinear"])
    p.add_argument("--device", default="cpu")


def run_rollout(args) -> int:
    from scifm.dpot.rollout import evaluate_file, plot_error_curves, plot_rollout
    from scifm.dpot.train import load_run

    model, _ = load_run(args.model, device=args.device)
    r = evaluate_file(model, args.data, [args.traj], args.horizon, resample=args.resample, device=args.device)
    pred, true = r.pop("pred"), r.pop("true")
    out = Path(args.out_dir)
    plot_rollout(
        pred,
        true,
        out / "rollout.png",
        channel=args.channel,
        title=f"{Path(args.data).stem} trajectory {args.traj}: L2RE {r['l2re']:.4f}",
    )
    plot_error_curves({"relative L2": r["per_step_l2re"]}, out / "error_over_time.png")
    write_json(out / "metrics.json", r)
    print(f"rollout of {r['horizon']} steps: L2RE {r['l2re']:.5f} -> {out}")
    return 0
