"""Training loop, rollouts, export, and the sci-fm commands end to end (tiny sizes)."""

import json

import pytest
import torch

from scifm.dpot.model import DPOT, make_config
from scifm.dpot.rollout import evaluate_file, rollout
from scifm.dpot.train import export_run, load_run, train_budgeted


def test_budgeted_training_fits_a_fixed_batch():
    torch.manual_seed(0)
    m = DPOT(make_config("tiny"))
    x = torch.randn(4, 16, 16, 3, 2)
    batch = dict(x=x, y=x[..., -1:, :] * 0.9, mask=torch.ones(4, 2))
    from scifm.dpot.train import loss_fn

    before = float(loss_fn(m, batch)[0].detach())
    h = train_budgeted(
        m,
        lambda: batch,
        max_time_s=600,
        max_steps=120,
        lr=3e-3,
        pct_start=0.1,
        div_factor=10,
        progress=False,
        log_every=10,
    )
    assert h["steps"] == 120
    assert float(loss_fn(m, batch)[0].detach()) < 0.8 * before


class Persist(torch.nn.Module):
    """Predicts the last input frame; stands in for a model in rollout tests."""

    def __init__(self, c=1, t=3):
        super().__init__()
        self.config = type("C", (), {"in_timesteps": t, "in_channels": c, "img_size": 8})()

    def forward(self, x):
        return x[..., -1:, :]


def test_rollout_appends_predictions_and_keeps_padding():
    x = torch.arange(3.0)[None, None, None, :, None].expand(1, 4, 4, 3, 2).clone()
    x[..., 1] = 1.0
    out = rollout(Persist(2), x, 5)
    assert out.shape == (1, 4, 4, 5, 2) and torch.all(out[..., 0] == 2.0)


class DriftsOnPadding(torch.nn.Module):
    """Channel 0: last frame plus (channel 1 - 1), so it stays put only while the padded channel 1 reads its
    constant 1; channel 1: an untrained-looking value (the loss never sees padded channels)."""

    def __init__(self, t=3):
        super().__init__()
        self.config = type("C", (), {"in_timesteps": t, "in_channels": 2, "img_size": 8})()

    def forward(self, x):
        last = x[..., -1:, :]
        return torch.cat([last[..., :1] + (last[..., 1:] - 1.0), torch.full_like(last[..., 1:], 7.0)], -1)


def test_rollout_feeds_back_padding_not_predicted_padding():
    # Regression: the model's (untrained) prediction for a padded channel used to be appended to the window,
    # so the 1-channel sets drifted step after step.
    x = torch.ones(1, 4, 4, 3, 2)
    x[..., 0] = 2.0
    out = rollout(DriftsOnPadding(), x, 5, n_real=1)
    assert torch.all(out[..., 0] == 2.0) and torch.all(out[..., 1] == 1.0)
    drifted = rollout(DriftsOnPadding(), x, 5)  # without n_real every channel is fed back as predicted
    assert not torch.all(drifted[..., 0] == 2.0)


def test_evaluate_file_keeps_padded_channels(make_file):
    fill = torch.full((2, 4, 4, 7, 1), 2.0).numpy()
    path = make_file("const.h5", fill.shape, fill=fill)
    r = evaluate_file(DriftsOnPadding(), path)
    assert r["horizon"] == 4 and r["l2re"] == pytest.approx(0.0, abs=1e-7)


def test_export_round_trip(tmp_path):
    torch.manual_seed(0)
    m = DPOT(make_config("tiny")).eval()
    export_run(tmp_path / "run", m, {"note": "t"})
    m2, meta = load_run(tmp_path / "run")
    x = torch.randn(1, 16, 16, 3, 2)
    assert torch.equal(m(x), m2(x)) and meta["note"] == "t"


def test_eval_resampling_path_is_consistent(make_file):
    # Band-limited data on a 16^2 grid: evaluating on the native grid and through FFT resampling to the
    # model's 8^2 training grid and back agree only when the resampling round trip is exact.
    from scifm.dpot.data import fft_resample

    x = torch.arange(16) / 16
    f = torch.sin(2 * torch.pi * x)[:, None] * torch.cos(2 * torch.pi * x)[None, :]
    traj = (f[None, :, :, None, None] * torch.linspace(1, 0.5, 6)[:, None]).expand(2, 16, 16, 6, 1).numpy()
    path = make_file("bl.h5", traj.shape, fill=traj.copy())
    m = Persist(1)
    m.config.img_size = 8
    r = evaluate_file(m, path, resample="fft")
    assert r["horizon"] == 3 and r["n_trajectories"] == 2
    assert torch.allclose(r["pred"], fft_resample(fft_resample(r["pred"], (8, 8)), (16, 16)), atol=1e-5)
    # persistence predicts frame 2 (amplitude 0.8) for frames 3..5 (0.7, 0.6, 0.5)
    assert r["l2re"] == pytest.approx((0.14 / 1.10) ** 0.5, rel=1e-4)


def test_cli_generate_train_eval_finetune(tmp_path, monkeypatch):
    from scifm.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "data",
                "pde",
                "--equation",
                "diffusion_reaction",
                "--n",
                "6",
                "--nx",
                "16",
                "--n-frames",
                "6",
                "--out",
                "dr.h5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "pde",
                "--equation",
                "shallow_water",
                "--n",
                "6",
                "--nx",
                "16",
                "--n-frames",
                "6",
                "--out",
                "sw.h5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "pde",
                "--equation",
                "burgers",
                "--n",
                "6",
                "--nx",
                "16",
                "--refine",
                "2",
                "--n-frames",
                "6",
                "--out",
                "bg.h5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "dpot",
                "--data",
                "dr.h5",
                "sw.h5:2",
                "--run-dir",
                "pre",
                "--t-in",
                "3",
                "--max-epochs",
                "1",
                "--batch-size",
                "4",
                "--embed-mid",
                "20",
                "--residual",
                "--unroll",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "pre" / "model" / "model.json").read_text())
    assert saved["config"]["embed_mid"] == 20 and saved["config"]["residual"] is True
    metrics = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"dr", "sw"} and (tmp_path / "pre" / "model" / "model.json").is_file()
    assert (
        main(
            [
                "finetune",
                "dpot",
                "--data",
                "bg.h5",
                "--init",
                "pre",
                "--run-dir",
                "ft",
                "--max-epochs",
                "1",
                "--train-fraction",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["eval", "dpot", "--model", "ft", "--data", "bg.h5", "--out", "m.json"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"l2re", "l2re_per_channel", "horizon", "n_trajectories"} <= set(m)
    assert m["horizon"] == 3 and m["n_trajectories"] == 6 and len(m["l2re_per_channel"]) == 1
    assert (
        main(["rollout", "dpot", "--model", "pre", "--data", "sw.h5", "--out-dir", "ro", "--horizon", "2"])
        == 0
    )
    assert (tmp_path / "ro" / "rollout.png").is_file() and (tmp_path / "ro" / "error_over_time.png").is_file()
    # bad input: one clear error, exit code 2, nothing written
    assert main(["eval", "dpot", "--model", "pre", "--data", "missing.h5", "--out", "x.json"]) == 2
    assert not (tmp_path / "x.json").exists()
    bad = ["train", "dpot", "--data", "dr.h5", "--run-dir", "bad", "--unroll", "0", "--no-progress"]
    assert main(bad) == 2 and not (tmp_path / "bad").exists()


def test_pushforward_loss_is_the_loss_on_the_kth_rollout_step():
    """unroll=k: k-1 steps fed back without gradient (padded channels kept), loss on step k; equals the loss
    of the k-th frame of a plain rollout, and the gradient only flows through the last step."""
    from scifm.dpot.train import loss_fn, rel_l2_loss

    torch.manual_seed(0)
    m = DPOT(make_config("tiny"))
    x = torch.randn(3, 16, 16, 3, 2)
    x[1, ..., 1] = 1.0  # sample 1 has one real channel; channel 1 is padding
    y = torch.randn(3, 16, 16, 3, 2)
    mask = torch.ones(3, 2)
    mask[1, 1] = 0
    batch = dict(x=x, y=y, mask=mask)
    for k in (1, 2, 3):
        loss, _ = loss_fn(m, batch, unroll=k)
        window = x
        with torch.no_grad():
            for _ in range(k):
                pred = m(window)
                pred[1, ..., 1] = window[1, ..., -1:, 1]  # padding fed back at its input value
                window = torch.cat([window[..., 1:, :], pred], -2)
        want = rel_l2_loss(pred, y[..., k - 1 : k, :], mask)
        assert float(loss) == pytest.approx(float(want), rel=1e-5)
    m.zero_grad()
    loss_fn(m, batch, unroll=3)[0].backward()
    assert all(p.grad is not None for p in m.out_layer.parameters())
    with pytest.raises(ValueError, match="unroll=4"):
        loss_fn(m, batch, unroll=4)
