"""End to end on a tiny scale: MD data -> train -> sample (SNIS, SMC) -> finetune, plus bad-input errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from scifm.core.errors import ConfigError, DataError
from scifm.prose.data import PeptideMDFile, validate_peptide_md

KEYS = (
    "n_samples",
    "ess",
    "energy_w2",
    "torus_w2",
    "tica_w2",
    "macrostate_jsd",
    "wrong_chirality_fraction",
    "energy_evaluations",
    "wall_time_s",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from scifm.cli.main import main

    d = tmp_path_factory.mktemp("prose")
    args = [
        "data",
        "peptides",
        "--sequences",
        "Ace-A-Nme",
        "--frames",
        "60",
        "--warmup-steps",
        "100",
        "--interval-steps",
        "20",
        "--out",
        str(d / "ad.h5"),
        "--no-progress",
    ]
    assert main(args) == 0
    args = [
        "train",
        "prose",
        "--data",
        str(d / "ad.h5"),
        "--run-dir",
        str(d / "run"),
        "--max-epochs",
        "2",
        "--batch-size",
        "16",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    return d


def test_data_file_follows_the_spec(workdir):
    info = validate_peptide_md(workdir / "ad.h5")["Ace-A-Nme"]
    assert info["n_frames"] == 60 and info["n_atoms"] == 22
    assert info["temperature_K"] == 300.0 and info["force_field"] == "amber99sbildn-obc"
    assert info["frame_interval_ps"] == pytest.approx(0.02)
    f = PeptideMDFile(workdir / "ad.h5")
    x = f.coordinates("Ace-A-Nme")
    assert x.shape == (60, 22, 3) and 0.1 < np.abs(x - x.mean(1, keepdims=True)).max() < 1.0  # nm
    # bonded atoms stay at bond lengths (nm): the MD really ran in nm
    b = h5py.File(workdir / "ad.h5")["systems/Ace-A-Nme/bonds"][()]
    d = np.linalg.norm(x[:, b[:, 0]] - x[:, b[:, 1]], axis=-1)
    assert 0.09 < d.min() and d.max() < 0.17
    assert json.loads((workdir / "ad.json").read_text())["simulated_ns"] == pytest.approx(60 * 0.02 / 1000)


@pytest.mark.parametrize("method", ["snis", "smc"])
def test_sample_writes_metrics_and_plots(workdir, method):
    from scifm.cli.main import main

    out = workdir / f"s_{method}"
    args = [
        "sample",
        "prose",
        "--model",
        str(workdir / "run"),
        "--sequence",
        "Ace-A-Nme",
        "--n",
        "64",
        "--method",
        method,
        "--reference",
        str(workdir / "ad.h5"),
        "--out",
        str(out),
        "--smc-steps",
        "3",
        "--metric-points",
        "200",
    ]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in KEYS:
        assert k in m, k
    assert m["n_samples"] == 64 and 0 < m["ess"] <= 1
    assert m["energy_evaluations"] == (64 if method == "snis" else 64 + 3 * 64)
    assert (out / "ramachandran.png").is_file() and (out / "energy_hist.png").is_file()


def test_finetune_writes_a_new_model(workdir):
    from scifm.cli.main import main

    out = workdir / "ft"
    args = [
        "finetune",
        "prose",
        "--model",
        str(workdir / "run"),
        "--sequence",
        "Ace-A-Nme",
        "--out",
        str(out),
        "--rounds",
        "1",
        "--proposals",
        "64",
        "--steps",
        "2",
        "--eval-n",
        "32",
        "--metric-points",
        "100",
        "--reference",
        str(workdir / "ad.h5"),
    ]
    assert main(args) == 0
    assert (out / "model" / "model.json").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert m["energy_evaluations"] == 64 + 32 and len(m["rounds"]) == 1


def test_bad_inputs_fail_before_work(tmp_path, workdir):
    from scifm.prose.cli import run_data  # noqa: F401  (import check)

    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["spec"] = "something-else"
    with pytest.raises(DataError, match="not a scifm-peptide-md"):
        validate_peptide_md(bad)
    nan = tmp_path / "nan.h5"
    import shutil

    shutil.copy(workdir / "ad.h5", nan)
    with h5py.File(nan, "r+") as f:
        f["systems/Ace-A-Nme/coordinates"][5, 0, 0] = np.nan
    with pytest.raises(DataError, match="frame 5"):
        validate_peptide_md(nan)
    from scifm.prose.md import generate

    with pytest.raises(ConfigError):
        generate(["AXB"], str(tmp_path / "x.h5"), n_frames=2)


def test_icflow_trains_and_samples_through_the_cli(workdir, capsys):
    from scifm.cli.main import main

    run = workdir / "ic_run"
    common = ["--data", str(workdir / "ad.h5"), "--run-dir", str(run), "--no-progress", "--device", "cpu"]
    args = ["train", "prose", "--model", "icflow", *common, "--max-epochs", "1", "--batch-size", "16"]
    assert main([*args, "--ic-layers", "4", "--ic-hidden", "32"]) == 0
    assert json.loads((run / "model" / "model.json").read_text())["name"] == "prose-icflow"
    out = workdir / "ic_snis"
    sample = ["sample", "prose", "--model", str(run), "--sequence", "Ace-A-Nme", "--n", "64"]
    ref = ["--reference", str(workdir / "ad.h5"), "--metric-points", "100"]
    assert main([*sample, *ref, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in KEYS:
        assert k in m, k
    assert m["com_correction"] == "gaussian" and 0 < m["ess"] <= 1 and m["energy_evaluations"] == 64
    # the IC flow knows one molecule and one centroid law; bad combinations fail before any sampling
    bad = workdir / "ic_bad"
    assert main([*sample[:5], "AG", *sample[6:], "--out", str(bad)]) != 0
    assert "cannot sample AG" in capsys.readouterr().err
    assert main([*sample, "--com-correction", "chi3", "--out", str(bad)]) != 0
    assert "must be gaussian" in capsys.readouterr().err
    assert not bad.exists()
