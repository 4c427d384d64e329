"""Why does a small DPOT roll out worse than an FNO whose one-step error is no better? (one dataset)

Trains the models below on one generated dataset for the same wall time each (one thread, same batches, same
OneCycle learning rate), then measures on the held-out trajectories (last 10 %):

  * per-step L2RE of the 10-step auto-regressive rollout (how fast the error grows);
  * where the error lives: relative error energy in wavenumber bands |k| < 4, 4-8, 8-16, >= 16 at steps 1, 2,
    5, 10;
  * sensitivity of one step to its input: a smooth random perturbation of 1 % of the field's norm (modes
    |k| < 4, < 16, or all) added to the last input frame only, or to every input frame, and the ratio
    ||f(x + d) - f(x)|| / ||d|| of the next frame (> 1 amplifies rollout errors, < 1 damps them).

Models: DPOT as in the paper (CPU size of run_benchmark.py), DPOT with a residual head (predicts the change
from the last frame), the FNO baseline.

    OMP_NUM_THREADS=1 uv run python benchmarks/dpot/rollout_stability.py --data-dir runs/dpot_cpu_data \\
        --seconds 150 --lr 1e-2
The data directory is run_benchmark.py's (``--keep-data``); its files are read, never written. Writes
results/dpot/rollout_stability.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scifm.dpot.data import MixtureDataset, PDEFile, Source, split_indices
from scifm.dpot.fno import FNO, FNOConfig
from scifm.dpot.model import DPOT, make_config
from scifm.dpot.rollout import evaluate_file
from scifm.dpot.train import train_budgeted

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import CPU_DPOT, CPU_FNO  # noqa: E402  (the benchmark's CPU-size models)

REPO = Path(__file__).resolve().parents[2]
BANDS = [(0, 4), (4, 8), (8, 16), (16, 10_000)]


def band_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``[N, X, Y, T]`` -> ``[T, len(BANDS)]``: sqrt(error energy in the band / total energy of the truth)."""
    X, Y = pred.shape[1:3]
    e = np.abs(np.fft.fft2(pred - true, axes=(1, 2))) ** 2
    t = np.abs(np.fft.fft2(true, axes=(1, 2))) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(X, 1 / X), np.fft.fftfreq(Y, 1 / Y), indexing="ij"))
    tot = t.sum((0, 1, 2))
    return np.stack([np.sqrt(e[:, (k >= a) & (k < b)].sum(0).sum(0) / tot) for a, b in BANDS], -1)


def smooth_field(n: int, X: int, Y: int, kmax: int, g: torch.Generator) -> torch.Tensor:
    """``[n, X, Y]`` white noise with every Fourier mode of |k_x| or |k_y| >= kmax removed."""
    f = torch.fft.rfft2(torch.randn(n, X, Y, generator=g))
    kx = torch.fft.fftfreq(X, 1 / X).abs()
    ky = torch.arange(f.shape[-1])
    return torch.fft.irfft2(f * ((kx[:, None] < kmax) & (ky[None] < kmax)), s=(X, Y))


@torch.no_grad()
def amplification(model, window: torch.Tensor, n_model_channels: int, g: torch.Generator) -> dict:
    """One step's response to 1 % smooth perturbations of channel 0 (last frame only / every frame)."""

    def step(w):
        if w.shape[-1] < n_model_channels:  # DPOT's constant-1 padding channel
            w = torch.cat([w, torch.ones(*w.shape[:-1], n_model_channels - w.shape[-1])], -1)
        return model(w)[..., 0, 0]

    base = step(window)
    N, X, Y = window.shape[:3]
    ref = window[..., -1, 0].flatten(1).norm(dim=1)[:, None, None]
    out = {}
    for kmax in (4, 16, max(X, Y)):
        for where in ("last", "all"):
            d = smooth_field(N, X, Y, kmax, g)
            d = d / d.flatten(1).norm(dim=1)[:, None, None] * ref * 0.01
            w = window.clone()
            if where == "last":
                w[..., -1, 0] += d
            else:
                w[..., 0] += d[..., None]
            ratio = (step(w) - base).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
            label = f"k<{kmax}" if kmax < max(X, Y) else "all k"
            out[f"{label}, {where} frame{'s' if where == 'all' else ''}"] = round(float(ratio.mean()), 4)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="run_benchmark.py's data folder (--keep-data)")
    p.add_argument("--dataset", default="ns_nu1e-3")
    p.add_argument("--seconds", type=float, default=150.0, help="training wall time per model")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--t-in", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "dpot" / "rollout-stability.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    path = Path(a.data_dir) / f"{a.dataset}.h5"
    f = PDEFile(path)  # a missing or malformed file fails here, before any training
    info = f.info
    c = info.shape[-1]
    train_idx, test_idx = split_indices(info.n_trajectories, 0.1)
    t_start = time.perf_counter()

    def dpot(residual: bool):
        cfg = make_config(
            "Ti",
            img_size=info.shape[1],
            in_channels=2,
            out_channels=2,
            in_timesteps=a.t_in,
            n_cls=3,
            **CPU_DPOT,
        )
        cfg.residual = residual
        return DPOT(cfg), 2

    builders = {
        "DPOT (paper head)": lambda: dpot(False),
        "DPOT (residual head)": lambda: dpot(True),
        "FNO": lambda: (
            FNO(FNOConfig(in_channels=c, out_channels=c, in_timesteps=a.t_in, **CPU_FNO)),
            c,
        ),
    }
    raw = torch.as_tensor(f.read(test_idx.tolist()), dtype=torch.float32)
    rows = []
    for name, build in builders.items():
        torch.manual_seed(a.seed)
        model, n_ch = build()
        data = MixtureDataset(
            [Source(str(path), 1.0, train_idx.tolist())],
            t_in=a.t_in,
            res=info.shape[1],
            n_channels=n_ch,
            seed=a.seed,
        )
        g = torch.Generator().manual_seed(a.seed)
        hist = train_budgeted(
            model,
            lambda data=data, g=g: data.sample_batch(a.batch, g),
            max_time_s=a.seconds,
            lr=a.lr,
            progress=False,
        )
        ev = evaluate_file(model, path, test_idx.tolist(), batch_size=32)
        pred, true = ev["pred"][..., 0].numpy(), ev["true"][..., 0].numpy()
        bands = band_error(pred, true)
        row = dict(
            model=name,
            parameters=sum(q.numel() for q in model.parameters()),
            train_steps=hist["steps"],
            train_s=round(hist["wall_s"], 1),
            final_train_loss=hist["loss_curve"][-1][2] if hist["loss_curve"] else None,
            l2re=ev["l2re"],
            per_step_l2re=[round(float(e), 5) for e in ev["per_step_l2re"]],
            band_error={
                f"step {s + 1}": dict(
                    zip(["k<4", "4<=k<8", "8<=k<16", "k>=16"], np.round(bands[s], 5).tolist(), strict=True)
                )
                for s in (0, 1, 4, bands.shape[0] - 1)
            },
            amplification=amplification(model, raw[..., : a.t_in, :], n_ch, torch.Generator().manual_seed(1)),
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = dict(
        command="python benchmarks/dpot/rollout_stability.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        dataset=a.dataset,
        data_shape=list(info.shape),
        n_test_trajectories=int(test_idx.size),
        seconds_per_model=a.seconds,
        lr=a.lr,
        batch=a.batch,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        total_wall_s=round(time.perf_counter() - t_start, 1),
        rows=rows,
    )
    print(f"wrote {write(report, Path(a.out))}")
    return 0


COLUMNS = {
    "train_steps": {"better": None, "unit": "", "label": "steps"},
    "l2re_step1": {"better": "lower", "unit": "", "label": "1-step L2RE"},
    "l2re": {"better": "lower", "unit": "", "label": "10-step L2RE"},
    "response_k4_last": {"better": "lower", "unit": "x", "label": "response, |k|<4, last frame"},
    "response_all_last": {"better": "lower", "unit": "x", "label": "response, all k, last frame"},
}


def write(report: dict, out: Path) -> Path:
    """The full report next to the record (``<stem with _>/report.json``) and the record itself."""
    from scifm.core.provenance import write_record

    raw = out.parent / out.stem.replace("-", "_") / "report.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(report, indent=2))
    rows = [
        dict(
            task=report["dataset"],
            model=r["model"],
            train_steps=r["train_steps"],
            l2re_step1=r["per_step_l2re"][0],
            l2re=r["l2re"],
            response_k4_last=r["amplification"]["k<4, last frame"],
            response_all_last=r["amplification"]["all k, last frame"],
        )
        for r in report["rows"]
    ]
    return write_record(
        out,
        suite="dpot",
        name="rollout-stability",
        title="DPOT vs FNO: rollout error growth and one-step response to input perturbations",
        rows=rows,
        columns=COLUMNS,
        config={
            **{k: v for k, v in report.items() if k != "rows"},
            "sources": [str(raw.relative_to(out.parent))],
        },
        wall_time_s=report["total_wall_s"],
        command=report["command"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
