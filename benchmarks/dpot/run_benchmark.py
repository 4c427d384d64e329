"""DPOT benchmark: generate data, pre-train DPOT on a mixture, compare with per-dataset FNOs, test transfer.

Steps (all with the repo's own code):
  1. generate 3 pre-training sets (FNO Navier-Stokes nu=1e-3, PDEBench diffusion-reaction, shallow-water
     radial dam break) and a held-out set (Navier-Stokes nu=1e-4) in the data_specs/pde format;
  2. pre-train DPOT on the equal-weight mixture for ``B`` seconds (auto-regressive denoising, OneCycle
  over the
     budget);
  3. train one FNO per pre-training set for ``B / 3`` seconds each: the same wall time as DPOT's per-dataset
     share (DPOT saw three datasets in B seconds); the same batch per dataset too (FNO ``batch`` windows of
     its set per step, DPOT ``batch`` windows of each of the three sets per step);
  4. fine-tune on 10 % of the held-out trajectories for ``B / 4`` seconds: pre-trained DPOT vs the same DPOT
     from scratch (and an FNO as a reference), same budget each;
  5. evaluate L2RE (relative L2 over the whole rollout per channel, averaged; anchor §4.1) on the last 10 % of
     every file, and write ``benchmark.json`` + PNG plots.

Usage:
  python benchmarks/dpot/run_benchmark.py --quick                      # CPU smoke, < 3 minutes
  python benchmarks/dpot/run_benchmark.py --device cuda                # full: about 6-7 minutes on one H200
  python benchmarks/dpot/run_benchmark.py --device cpu --budget-minutes 60   # the issue's 1-hour CPU run
Budgets scale with ``--budget-scale``. Threads: set OMP_NUM_THREADS (the script calls
torch.set_num_threads with it, default 1 on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scifm.dpot.data import MixtureDataset, PDEFile, Source, split_indices, write_pde
from scifm.dpot.fno import FNO, FNOConfig
from scifm.dpot.model import ANCHOR_PARAMS, DPOT, count_config, make_config
from scifm.dpot.pde import EQUATIONS, GENERATOR_VERSION
from scifm.dpot.rollout import evaluate_file, plot_error_curves, plot_rollout
from scifm.dpot.train import export_run, train_budgeted

REPO = Path(__file__).resolve().parents[2]
# the CPU mode's models (also used by rollout_stability.py)
CPU_DPOT = dict(embed_dim=128, depth=4, n_blocks=4, patch_size=4, modes=16, out_layer_dim=32)
CPU_FNO = dict(width=32, modes=12)


def settings(args) -> dict:
    """Data sizes, models and budgets for the three modes."""
    if args.quick:
        s = dict(
            nx=32,
            n=20,
            n_held=30,
            n_frames=10,
            t_in=4,
            ns_refine=1,
            ns_dt=5e-3,
            sw_refine=1,
            pretrain_s=30.0,
            batch=8,
            dpot=dict(embed_dim=32, depth=2, n_blocks=2, patch_size=4, modes=8, out_layer_dim=16),
            fno=dict(width=12, modes=6),
        )
    elif args.device.startswith("cuda"):
        s = dict(
            nx=64,
            n=320,
            n_held=200,
            n_frames=20,
            t_in=10,
            ns_refine=2,
            ns_dt=1e-3,
            sw_refine=2,
            pretrain_s=120.0,
            batch=32,
            dpot=dict(patch_size=4),  # the Ti config, latent grid 16 x 16
            fno=dict(width=32, modes=12),
        )
    else:
        # CPU: Navier-Stokes solved on the 64^2 output grid with dt = 2.5e-3 (the GPU settings, 128^2 and
        # dt = 1e-3, take over an hour per set on one core); 120 trajectories per pre-training set
        s = dict(
            nx=64,
            n=120,
            n_held=100,
            n_frames=20,
            t_in=10,
            ns_refine=1,
            ns_dt=2.5e-3,
            sw_refine=2,
            pretrain_s=60.0 * (args.budget_minutes or 60),
            batch=8,
            dpot=dict(CPU_DPOT),
            fno=dict(CPU_FNO),
        )
    if args.budget_minutes and not args.quick:
        s["pretrain_s"] = 60.0 * args.budget_minutes
    if args.dpot_config:
        s["dpot"] = {**s["dpot"], **json.loads(args.dpot_config)}
    s["pretrain_s"] *= args.budget_scale
    s["fno_s"] = s["pretrain_s"] / 3
    s["finetune_s"] = s["pretrain_s"] / 4
    return s


def generate_all(s, data_dir: Path, device: str, progress: bool, reuse: bool = False) -> dict:
    dtype = "float32" if device.startswith("cuda") else "float64"
    common = dict(
        nx=s["nx"],
        n_frames=s["n_frames"],
        device=device,
        dtype=dtype,
        progress=progress,
        batch_size=512 if device.startswith("cuda") else 64,
    )
    jobs = {
        "ns_nu1e-3": (
            "navier_stokes",
            dict(
                n=s["n"],
                nu=1e-3,
                refine=s["ns_refine"],
                dt=s["ns_dt"],
                scheme="cn-heun",
                frame_dt=1.0,
                seed=0,
            ),
        ),
        "diffusion_reaction": ("diffusion_reaction", dict(n=s["n"], refine=1, frame_dt=0.25, seed=10_000)),
        "shallow_water": ("shallow_water", dict(n=s["n"], refine=s["sw_refine"], frame_dt=0.05, seed=20_000)),
        "ns_nu1e-4": (
            "navier_stokes",
            dict(
                n=s["n_held"],
                nu=1e-4,
                refine=s["ns_refine"],
                dt=s["ns_dt"],
                scheme="cn-heun",
                frame_dt=1.0,
                seed=30_000,
            ),
        ),
    }
    out = {}
    for name, (eq, kw) in jobs.items():
        t0 = time.perf_counter()
        path = data_dir / f"{name}.h5"
        if reuse and path.is_file():
            info = PDEFile(path).info
            same = (
                info.generator_version == GENERATOR_VERSION
                and info.shape[0] == kw["n"]
                and info.shape[1] == s["nx"]
                and info.n_frames == s["n_frames"]
                and all(info.parameters.get(k, v) == v for k, v in kw.items() if k in ("nu", "seed"))
                and ("dt" not in kw or info.parameters.get("solver_dt") == kw["dt"])
            )
            if same:
                out[name] = dict(
                    path=str(path),
                    shape=list(info.shape),
                    seconds=0.0,
                    parameters=info.parameters,
                    reused=True,
                )
                print(f"[data] {name}: {info.shape} reused from {data_dir}", flush=True)
                continue
            print(f"[data] {name}: the file in {data_dir} has other settings; regenerating", flush=True)
        data, attrs = EQUATIONS[eq](**common, **kw)
        write_pde(path, data, generator_version=GENERATOR_VERSION, **attrs)
        out[name] = dict(
            path=str(path),
            shape=list(data.shape),
            seconds=round(time.perf_counter() - t0, 2),
            parameters=attrs["parameters"],
        )
        print(f"[data] {name}: {data.shape} in {out[name]['seconds']} s", flush=True)
    return out


def evaluate(model, path, device) -> dict:
    """Rollout L2RE on the last 10 % of a file's trajectories (the same split everywhere)."""
    _, test = split_indices(PDEFile(path).info.n_trajectories, 0.1)
    return evaluate_file(model, path, test.tolist(), device=device, batch_size=32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cuda or cpu")
    p.add_argument("--quick", action="store_true", help="CPU smoke version (tiny data and models, < 3 min)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every training budget")
    p.add_argument(
        "--budget-minutes", type=float, default=None, help="DPOT pre-training minutes (others scale)"
    )
    p.add_argument("--noise-scale", type=float, default=5e-4, help="anchor's s (rescaled to our window)")
    p.add_argument("--out-dir", default=None, help="default benchmarks/results/dpot/<mode>")
    p.add_argument("--data-dir", default=None, help="where the generated HDF5 go (default: a temp dir)")
    p.add_argument("--keep-data", action="store_true")
    p.add_argument(
        "--reuse-data",
        action="store_true",
        help="use the files already in --data-dir when their generator version, sizes, nu, seed and solver "
        "step match these settings (the generators are seeded, so the data are the same)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--dpot-config",
        default=None,
        help='JSON overrides of the DPOT config, e.g. \'{"embed_mid": 128, "residual": true}\' (wide patch '
        "embedding, residual head)",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="DPOT peak learning rate (OneCycle; paper 1e-3)")
    p.add_argument("--fno-lr", type=float, default=1e-3, help="FNO peak learning rate")
    p.add_argument(
        "--unroll", type=int, default=1, help="DPOT pushforward training over 1..N rollout steps (1 = paper)"
    )
    p.add_argument("--tag", default="", help="suffix of the mode name (results folder and record)")
    args = p.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mode = (
        "quick_cpu"
        if args.quick
        else (
            "full_" + args.device.split(":")[0]
            if args.budget_minutes is None
            else f"{args.device.split(':')[0]}_{args.budget_minutes:g}min"
        )
    )
    if args.tag:
        mode = f"{mode}_{args.tag}"
    out_dir = Path(args.out_dir) if args.out_dir else REPO / "benchmarks" / "results" / "dpot" / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="dpot-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    s = settings(args)
    dev = args.device
    sync = torch.cuda.synchronize if dev.startswith("cuda") else None
    progress = not args.no_progress
    t_start = time.perf_counter()
    device_name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else (platform.processor() or "cpu")
    print(
        f"[bench] mode {mode} on {device_name}; budgets: pretrain {s['pretrain_s']:.0f} s, "
        f"FNO {s['fno_s']:.0f} s/dataset, finetune {s['finetune_s']:.0f} s/model",
        flush=True,
    )

    # 1. data
    t0 = time.perf_counter()
    data = generate_all(s, data_dir, dev, progress, reuse=args.reuse_data)
    gen_s = time.perf_counter() - t0
    pre = ["ns_nu1e-3", "diffusion_reaction", "shallow_water"]
    held = "ns_nu1e-4"
    splits = {k: split_indices(v["shape"][0], 0.1) for k, v in data.items()}

    # 2. DPOT pre-training on the mixture
    torch.manual_seed(args.seed)
    n_ch = 2
    cfg = make_config(
        "Ti",
        img_size=s["nx"],
        in_channels=n_ch,
        out_channels=n_ch,
        in_timesteps=s["t_in"],
        n_cls=len(pre),
        **s["dpot"],
    )
    dpot = DPOT(cfg).to(dev)
    mix = MixtureDataset(
        [Source(data[k]["path"], 1.0, splits[k][0].tolist()) for k in pre],
        t_in=s["t_in"],
        t_out=args.unroll,
        res=s["nx"],
        n_channels=n_ch,
        device=dev,
        seed=args.seed,
    )
    g = torch.Generator().manual_seed(args.seed)
    # The same batch per dataset for both models: each FNO draws ``batch`` windows of its dataset per step,
    # DPOT draws ``batch`` per dataset of the mixture (len(pre) * batch windows per step).
    dpot_batch = s["batch"] * len(pre)
    hist = {
        "dpot_pretrain": train_budgeted(
            dpot,
            lambda: mix.sample_batch(dpot_batch, g),
            max_time_s=s["pretrain_s"],
            lr=args.lr,
            unroll=args.unroll,
            noise_scale=args.noise_scale,
            seed=args.seed,
            progress=progress,
            desc="DPOT pretrain",
            sync=sync,
        )
    }
    print(
        f"[train] DPOT: {hist['dpot_pretrain']['steps']} steps in {hist['dpot_pretrain']['wall_s']:.1f} s",
        flush=True,
    )
    # weights stay out of git
    export_run(data_dir / "runs" / f"dpot_pretrained_{mode}", dpot.cpu(), dict(mode=mode))
    dpot.to(dev)

    # 3. FNO per dataset, same wall time as DPOT's per-dataset share
    results = {}
    rollouts = {}
    for k in pre:
        r_d = evaluate(dpot, data[k]["path"], dev)
        info_c = data[k]["shape"][-1]
        torch.manual_seed(args.seed)
        fno = FNO(FNOConfig(in_channels=info_c, out_channels=info_c, in_timesteps=s["t_in"], **s["fno"])).to(
            dev
        )
        single = MixtureDataset(
            [Source(data[k]["path"], 1.0, splits[k][0].tolist())],
            t_in=s["t_in"],
            res=s["nx"],
            device=dev,
            seed=args.seed,
        )
        gk = torch.Generator().manual_seed(args.seed)
        hist[f"fno_{k}"] = train_budgeted(
            fno,
            lambda single=single, gk=gk: single.sample_batch(s["batch"], gk),
            max_time_s=s["fno_s"],
            lr=args.fno_lr,
            seed=args.seed,
            progress=progress,
            desc=f"FNO {k}",
            sync=sync,
        )
        r_f = evaluate(fno, data[k]["path"], dev)
        results[k] = dict(dpot=_strip(r_d), fno=_strip(r_f), ratio_dpot_over_fno=r_d["l2re"] / r_f["l2re"])
        rollouts[k] = (r_d, r_f)
        print(f"[eval] {k}: DPOT {r_d['l2re']:.4f}  FNO {r_f['l2re']:.4f}", flush=True)

    # 4. transfer to the held-out set with 10 % of its trajectories
    n_held = data[held]["shape"][0]
    k_ft = max(1, int(round(0.1 * n_held)))
    ft_idx = splits[held][0][:k_ft].tolist()
    ft_set = MixtureDataset(
        [Source(data[held]["path"], 1.0, ft_idx)],
        t_in=s["t_in"],
        t_out=args.unroll,
        res=s["nx"],
        n_channels=n_ch,
        device=dev,
        seed=args.seed,
    )
    transfer = {}
    for name in ("pretrained", "scratch"):
        torch.manual_seed(args.seed + 1)
        m = DPOT(cfg).to(dev)
        if name == "pretrained":
            m.load_state_dict(dpot.state_dict())
        gf = torch.Generator().manual_seed(args.seed + 1)
        hist[f"finetune_{name}"] = train_budgeted(
            m,
            lambda gf=gf: ft_set.sample_batch(s["batch"], gf),
            max_time_s=s["finetune_s"],
            lr=args.lr,
            unroll=args.unroll,
            noise_scale=0.0,
            seed=args.seed,
            progress=progress,
            desc=f"finetune {name}",
            sync=sync,
        )
        transfer[name] = evaluate(m, data[held]["path"], dev)
    torch.manual_seed(args.seed + 1)
    fno_ft = FNO(FNOConfig(in_channels=1, out_channels=1, in_timesteps=s["t_in"], **s["fno"])).to(dev)
    ft_single = MixtureDataset(
        [Source(data[held]["path"], 1.0, ft_idx)], t_in=s["t_in"], res=s["nx"], device=dev
    )
    gf = torch.Generator().manual_seed(args.seed + 1)
    hist["finetune_fno"] = train_budgeted(
        fno_ft,
        lambda: ft_single.sample_batch(s["batch"], gf),
        max_time_s=s["finetune_s"],
        lr=args.fno_lr,
        seed=args.seed,
        progress=progress,
        desc="FNO held-out",
        sync=sync,
    )
    transfer["fno_scratch"] = evaluate(fno_ft, data[held]["path"], dev)
    gain = 1 - transfer["pretrained"]["l2re"] / transfer["scratch"]["l2re"]
    print(
        f"[transfer] pretrained {transfer['pretrained']['l2re']:.4f} "
        f"scratch {transfer['scratch']['l2re']:.4f} "
        f"FNO {transfer['fno_scratch']['l2re']:.4f} -> reduction {100 * gain:.1f} %",
        flush=True,
    )

    # 5. report
    plots = _plots(out_dir, results, rollouts, transfer, hist)
    report = dict(
        mode=mode,
        command="python benchmarks/dpot/run_benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
        device=dev,
        device_name=device_name,
        torch=torch.__version__,
        threads=threads,
        python=sys.version.split()[0],
        total_wall_s=round(time.perf_counter() - t_start, 1),
        data_generation_s=round(gen_s, 1),
        data=data,
        budgets_s=dict(
            dpot_pretrain=s["pretrain_s"],
            fno_per_dataset=s["fno_s"],
            finetune_per_model=s["finetune_s"],
            note="FNO gets DPOT's per-dataset share of the pre-training wall time (pretrain / 3); "
            "fine-tuning runs (pretrained, scratch, FNO) get pretrain / 4 each",
        ),
        settings={k: v for k, v in s.items() if k not in ("pretrain_s", "fno_s", "finetune_s")}
        | dict(
            dpot_pretrain_batch=dpot_batch,
            batch_note="batch = windows per dataset per step: each FNO and each fine-tuning run draws "
            "`batch`, DPOT pre-training draws `batch` per mixture dataset",
        ),
        noise_scale=args.noise_scale,
        learning_rates=dict(dpot=args.lr, fno=args.fno_lr),
        unroll=args.unroll,
        dpot_config=cfg.to_dict(),
        dpot_parameters=sum(p.numel() for p in dpot.parameters()),
        fno_parameters=sum(p.numel() for p in fno.parameters()),
        pretrain=dict(
            datasets=results,
            dpot_beats_fno_everywhere=all(v["dpot"]["l2re"] <= v["fno"]["l2re"] for v in results.values()),
        ),
        transfer=dict(
            dataset=held,
            n_finetune_trajectories=k_ft,
            results={k: _strip(v) for k, v in transfer.items()},
            l2re_reduction_pretrained_vs_scratch=gain,
            target_met=gain >= 0.2,
        ),
        l2re_table={k: dict(dpot=v["dpot"]["l2re"], fno=v["fno"]["l2re"]) for k, v in results.items()},
        training={k: {kk: vv for kk, vv in v.items()} for k, v in hist.items()},
        anchor_parameter_counts={k: dict(ours=count_config(k), anchor=v) for k, v in ANCHOR_PARAMS.items()},
        plots=plots,
    )
    # Scratch paths of this machine do not belong in a committed result.
    text = json.dumps(report, indent=2).replace(str(data_dir), "<scratch>")
    (out_dir / "benchmark.json").write_text(text)
    print(
        json.dumps(
            dict(
                l2re=report["l2re_table"],
                transfer={k: v["l2re"] for k, v in transfer.items()},
                total_wall_s=report["total_wall_s"],
            ),
            indent=1,
        )
    )
    print(f"[bench] wrote {out_dir / 'benchmark.json'}")
    if not args.keep_data and not args.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def _strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("pred", "true", "l2re_per_trajectory")}


def _plots(out_dir: Path, results, rollouts, transfer, hist) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    names = list(results)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [results[k]["dpot"]["l2re"] for k in names], 0.4, label="DPOT (mixture)")
    ax.bar(x + 0.2, [results[k]["fno"]["l2re"] for k in names], 0.4, label="FNO (per dataset)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("L2RE (test rollout)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "pretrain_l2re.png", dpi=110)
    plt.close(fig)
    files.append("pretrain_l2re.png")
    for k, (r_d, r_f) in rollouts.items():
        plot_error_curves(
            {"DPOT": r_d["per_step_l2re"], "FNO": r_f["per_step_l2re"]},
            out_dir / f"error_vs_step_{k}.png",
            title=k,
        )
        plot_rollout(r_d["pred"], r_d["true"], out_dir / f"rollout_dpot_{k}.png", title=f"DPOT on {k}")
        files += [f"error_vs_step_{k}.png", f"rollout_dpot_{k}.png"]
    plot_error_curves(
        {k: v["per_step_l2re"] for k, v in transfer.items()},
        out_dir / "transfer_error_vs_step.png",
        title="held-out NS nu=1e-4, 10% of trajectories",
    )
    plot_rollout(
        transfer["pretrained"]["pred"],
        transfer["pretrained"]["true"],
        out_dir / "rollout_transfer_pretrained.png",
        title="fine-tuned DPOT on NS nu=1e-4",
    )
    files += ["transfer_error_vs_step.png", "rollout_transfer_pretrained.png"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, h in hist.items():
        if h["loss_curve"]:
            c = np.array(h["loss_curve"])
            ax.plot(c[:, 1], c[:, 2], label=k)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("train loss (relative L2, one step)")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=110)
    plt.close(fig)
    files.append("loss_curves.png")
    return files


if __name__ == "__main__":
    raise SystemExit(main())
