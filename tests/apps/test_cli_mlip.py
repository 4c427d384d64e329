"""`sci-fm train/eval mlip` end to end on a tiny slice of the bundled data, and the bad-input table."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from scifm.cli.main import main
from scifm.core.data.atomistic import write_frames
from scifm.core.data.extxyz import write_extxyz
from scifm.mlip.data import default_dataset_path
from scifm.mlip.data.generate import read as read_generated

TINY = "{n_features: 8, n_layers: 1, n_rbf: 4}"
REQUIRED = (
    "n_frames",
    "energy_mae_meV",
    "energy_mae_meV_per_atom",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
    "wall_time_s",
)


@pytest.fixture(scope="module")
def tiny_xyz(tmp_path_factory):
    frames = read_generated(default_dataset_path())[::24]  # 40 frames from all 24 trajectories
    path = tmp_path_factory.mktemp("data") / "tiny.extxyz"
    write_extxyz(path, frames)
    return path


def _train(tiny_xyz, out, *extra):
    return main(
        [
            "train",
            "mlip",
            "--train",
            str(tiny_xyz),
            "--max-epochs",
            "2",
            "--batch-size",
            "8",
            "--model-config",
            TINY,
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(tiny_xyz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert _train(tiny_xyz, out) == 0
    return out


def test_train_writes_the_run_directory(trained):
    for name in (
        "config.yaml",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model/model.json",
        "model/model.safetensors",
        "metrics.json",
        "parity.png",
        "learning_curve.png",
        "logs/metrics.csv",
    ):
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in REQUIRED:
        assert np.isfinite(metrics[key]), key
    assert metrics["epochs"] == 2 and metrics["n_frames"] > 0
    cfg = yaml.safe_load((trained / "config.yaml").read_text())
    assert cfg["max_epochs"] == 2 and cfg["model"] == "painn"


def test_eval_writes_the_metrics(trained, tiny_xyz, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "mlip", "--model", str(trained), "--data", str(tiny_xyz), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for key in REQUIRED:
        assert key in metrics
    assert metrics["n_frames"] == 40


def test_saved_config_reruns_and_flags_override(trained, tiny_xyz, tmp_path, capsys):
    assert (
        main(
            ["train", "mlip", "--config", str(trained / "config.yaml"), "--max-epochs", "7", "--print-config"]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["max_epochs"] == 7 and printed["train"] == str(tiny_xyz)


def test_resume_continues_from_last_checkpoint(tiny_xyz, tmp_path):
    out = tmp_path / "run"
    assert _train(tiny_xyz, out) == 0
    steps_2_epochs = json.loads((out / "fit_summary.json").read_text())["global_step"]
    assert _train(tiny_xyz, out) == 2  # a finished run is never overwritten silently
    assert _train(tiny_xyz, out, "--resume", "--max-epochs", "3") == 0
    summary = json.loads((out / "fit_summary.json").read_text())
    # One more epoch on top of the two already done, not three from scratch.
    assert summary["resumed_from"] and summary["final_epoch"] == 3
    assert summary["global_step"] == steps_2_epochs * 3 // 2


def test_unknown_config_key_is_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_epochs: 3\nlearning_rate: 0.1\n")
    assert main(["train", "mlip", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c.yaml" in err[0] and "learning_rate" in err[0]
    assert not (tmp_path / "run").exists()


def test_time_cosine_needs_a_time_budget(tiny_xyz, tmp_path, capsys):
    args = ["train", "mlip", "--train", str(tiny_xyz), "--scheduler", "cosine-time", "--max-time", "0"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-time" in err[0]
    assert not (tmp_path / "run").exists()


# --- bad input: one clear line, exit code 2, nothing written -------------------------------------------


def _labelled(numbers, positions, energy=-1.0, forces=True):
    a = Atoms(numbers=numbers, positions=positions)
    res = {"energy": energy}
    if forces:
        res["forces"] = np.zeros((len(a), 3))
    a.calc = SinglePointCalculator(a, **res)
    return a


WATER = ([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])


def _bad_missing_forces(d):
    return write_extxyz(d / "noforces.extxyz", [_labelled(*WATER), _labelled(*WATER, forces=False)])


def _bad_nan(d):
    return write_extxyz(d / "nan.extxyz", [_labelled(*WATER), _labelled(*WATER, energy=float("nan"))])


def _bad_inf_forces(d):
    a = _labelled(*WATER)
    a.calc.results["forces"][1, 2] = np.inf
    return write_extxyz(d / "inf.extxyz", [_labelled(*WATER), a])


def _bad_element(d):
    return write_extxyz(d / "element.extxyz", [_labelled(*WATER), _labelled([0, 1, 1], WATER[1])])


def _bad_close(d):
    return write_extxyz(
        d / "close.extxyz", [_labelled([8, 1, 1], [[0, 0, 0], [0.05, 0, 0], [-0.24, 0.93, 0]])]
    )


def _bad_truncated_h5(d):
    good = write_frames(d / "good.h5", [_labelled(*WATER) for _ in range(3)])
    data = good.read_bytes()
    path = d / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_atom_count(d):
    path = write_extxyz(d / "count.extxyz", [_labelled(*WATER), _labelled(*WATER)])
    lines = path.read_text().splitlines()
    lines[5] = "4"  # frame 1 claims four atoms, three follow
    path.write_text("\n".join(lines) + "\n")
    return path


def _bad_h5_nan(d):
    good = write_frames(d / "h5nan.h5", [_labelled(*WATER) for _ in range(3)])
    with h5py.File(good, "r+") as h:
        h["positions"][4, 0] = np.nan
    return good


BAD_INPUTS = {
    "missing forces": (_bad_missing_forces, r"\[frame 1\]: missing label 'forces'"),
    "NaN energy": (_bad_nan, r"\[frame 1\]: energy contains NaN or inf"),
    "inf force": (_bad_inf_forces, r"\[frame 1\]: forces contains NaN or inf"),
    "unknown element": (_bad_element, r"\[frame 1\]: unknown element \(atomic number 0\)"),
    "atoms closer than 0.1 Å": (_bad_close, r"\[frame 0\]: atoms 0 and 1 are closer than 0.1 Å"),
    "truncated HDF5": (_bad_truncated_h5, r"not a readable HDF5 file \(truncated or corrupt\?\)"),
    "NaN position in HDF5": (_bad_h5_nan, r"\[frame 1\]: positions contain NaN or inf"),
    "extxyz wrong atom count": (_bad_atom_count, r"frame 1 \(line 6\): header says 4 atoms"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line_and_no_output(case, tmp_path, capsys):
    import re

    make, pattern = BAD_INPUTS[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = make(data_dir)
    out = tmp_path / "run"
    rc = main(
        ["train", "mlip", "--train", str(path), "--max-epochs", "1", "--out", str(out), "--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("sci-fm: error: ") and path.name in err[0], err
    assert re.search(pattern, err[0]), err[0]
    assert not out.exists()
