"""The data_specs/pde format: round trip, validation errors, lazy reading, the mixture dataset."""

import json

import h5py
import numpy as np
import pytest
import torch

from scifm.core.errors import DataError
from scifm.dpot.data import (
    MixtureDataset,
    PDEFile,
    Source,
    fft_resample,
    resize,
    split_indices,
    to_2d,
    validate_pde,
    write_pde,
)


def test_round_trip_and_attributes(make_file, tmp_path):
    path = make_file("a.h5", (3, 8, 8, 5, 2), channels=["u", "v"])
    info = validate_pde(path)
    assert info.shape == (3, 8, 8, 5, 2) and info.channels == ("u", "v") and info.dx == (0.1, 0.1)
    assert info.dt == 0.5 and info.parameters == {"a": 1} and info.spatial_dims == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind
    with h5py.File(path) as f:
        assert f["data"].dtype == np.float32 and f.attrs["spec"] == "scifm-pde"
    f = PDEFile(path)
    assert f[1].shape == (8, 8, 5, 2)
    np.testing.assert_array_equal(f.window(2, 1, 3), f[2][..., 1:3, :])
    np.testing.assert_array_equal(f.read([2, 0]), np.stack([f[2], f[0]]))


def test_nan_is_rejected_with_its_record(tmp_path):
    data = np.zeros((4, 8, 3, 1), np.float32)
    data[2, 3, 1, 0] = np.nan
    with pytest.raises(DataError, match=r"trajectory 2.*non-finite"):
        write_pde(
            tmp_path / "x.h5",
            data,
            equation="e",
            parameters={},
            dx=[0.1],
            dt=1.0,
            channels=["u"],
            boundary="periodic",
            generator_version="t",
        )
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.attrs.__setitem__("channels", json.dumps(["u", "v", "w"])), "channel"),
        (lambda f: f.attrs.__setitem__("dt", -1.0), "dt"),
        (lambda f: f.attrs.__setitem__("dx", np.array([0.1])), "dx"),
        (lambda f: f.attrs.__delitem__("equation"), "missing attribute"),
        (lambda f: f.attrs.__setitem__("boundary", "wobbly"), "boundary"),
    ],
)
def test_validator_names_the_problem(make_file, mutate, message):
    path = make_file("b.h5", (2, 8, 8, 4, 2))
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(DataError, match=message):
        validate_pde(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        validate_pde(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="HDF5"):
        validate_pde(bad)


def test_split_is_by_trajectory():
    tr, te = split_indices(20, 0.1)
    assert tr.tolist() == list(range(18)) and te.tolist() == [18, 19]


def test_fft_resample_is_exact_for_band_limited_fields():
    x = torch.arange(16) / 16
    f = torch.sin(2 * torch.pi * x)[:, None] * torch.cos(4 * torch.pi * x)[None, :]
    up = fft_resample(f[None, :, :, None, None], (32, 32))[0, :, :, 0, 0]
    x2 = torch.arange(32) / 32
    exact = torch.sin(2 * torch.pi * x2)[:, None] * torch.cos(4 * torch.pi * x2)[None, :]
    assert torch.allclose(up, exact, atol=1e-5)
    back = fft_resample(up[None, :, :, None, None], (16, 16))[0, :, :, 0, 0]
    assert torch.allclose(back, f, atol=1e-5)


def test_mixture_pads_resizes_lifts_and_weights(make_file):
    a = make_file("two.h5", (6, 16, 16, 6, 2))
    b = make_file("one.h5", (4, 8, 8, 6, 1), seed=1)
    c = make_file("line.h5", (5, 8, 6, 1), seed=2)  # 1-D
    mix = MixtureDataset(
        [Source(str(a), 1.0), Source(str(b), 3.0, [0, 1]), Source(str(c), 0.4)], t_in=3, res=8, seed=0
    )
    assert mix.n_channels == 2 and len(mix) == 6 + 6 + 2
    assert torch.equal(mix.masks, torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    item = mix[7]  # a slot of the 1-channel file
    assert item["x"].shape == (8, 8, 3, 2) and item["y"].shape == (8, 8, 1, 2) and item["dataset"] == 1
    assert torch.all(item["x"][..., 1] == 1.0)  # padded channel holds DPOT's constant 1
    line = mix[13]["x"][..., 0]
    assert torch.allclose(line, line[:, :1].expand_as(line))  # 1-D data repeated along y
    # sampling frequencies follow n * weight
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([mix.sample_batch(64, g)["dataset"] for _ in range(40)]), minlength=3)
    np.testing.assert_allclose((counts / counts.sum()).numpy(), [6 / 14, 6 / 14, 2 / 14], atol=0.03)
    # in-memory and lazy paths give the same frames for the same window
    lazy = MixtureDataset([Source(str(a), 1.0)], t_in=3, res=8, in_memory=False, seed=5)
    mem = MixtureDataset([Source(str(a), 1.0)], t_in=3, res=8, in_memory=True, seed=5)
    assert torch.allclose(lazy[2]["x"], mem[2]["x"], atol=1e-6)


def test_batch_windows_are_consecutive_frames(make_file, tmp_path):
    n, T = 3, 8
    ramp = np.broadcast_to(np.arange(T, dtype=np.float32)[None, None, None, :, None], (n, 8, 8, T, 1)).copy()
    path = make_file("ramp.h5", ramp.shape, fill=ramp)
    mix = MixtureDataset([Source(str(path))], t_in=4, res=8)
    b = mix.sample_batch(16, torch.Generator().manual_seed(0))
    t0 = b["x"][:, 0, 0, 0, 0]
    assert torch.equal(b["x"][:, 0, 0, :, 0], t0[:, None] + torch.arange(4.0))
    assert torch.equal(b["y"][:, 0, 0, 0, 0], t0 + 4)


def test_resize_and_lift_shapes():
    x = torch.randn(2, 8, 4, 3)
    assert to_2d(x, 8).shape == (2, 8, 8, 4, 3)
    assert resize(torch.randn(2, 8, 8, 4, 3), 16).shape == (2, 16, 16, 4, 3)
