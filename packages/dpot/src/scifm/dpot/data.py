"""The ``data_specs/pde`` format: writer, validator, lazy reader, and the multi-dataset mixture.

One HDF5 file holds one dataset ``data`` of shape ``[N, X, T, C]`` (1-D) or ``[N, X, Y, T, C]`` (2-D),
float32,
channels last and time second-to-last (DPOT's layout). File attributes: ``spec`` ("scifm-pde"),
``spec_version``, ``equation``, ``parameters`` (JSON object), ``dx`` (one spacing per spatial axis), ``dt``
(time between frames), ``channels`` (JSON list, length C), ``boundary``, ``generator_version``; optional
``domain`` (JSON list of [lo, hi] per axis). See ``data_specs/pde/README.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from scifm.core.errors import DataError

SPEC = "scifm-pde"
SPEC_VERSION = "1.0"
REQUIRED_ATTRS = (
    "spec",
    "spec_version",
    "equation",
    "parameters",
    "dx",
    "dt",
    "channels",
    "boundary",
    "generator_version",
)
BOUNDARIES = ("periodic", "neumann", "dirichlet", "outflow", "mixed")


@dataclass(frozen=True)
class PDEInfo:
    """What a validated file holds. ``shape`` is the ``data`` shape; ``spatial_dims`` is 1 or 2."""

    path: str
    shape: tuple[int, ...]
    equation: str
    parameters: dict
    dx: tuple[float, ...]
    dt: float
    channels: tuple[str, ...]
    boundary: str
    generator_version: str

    @property
    def spatial_dims(self) -> int:
        return len(self.shape) - 3

    @property
    def n_trajectories(self) -> int:
        return self.shape[0]

    @property
    def n_frames(self) -> int:
        return self.shape[-2]

    @property
    def n_channels(self) -> int:
        return self.shape[-1]

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.shape[1:-2])


def write_pde(
    path: str | Path,
    data: np.ndarray,
    *,
    equation: str,
    parameters: dict,
    dx,
    dt: float,
    channels,
    boundary: str,
    generator_version: str,
    domain=None,
) -> PDEInfo:
    """Validate in memory, then write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    data = np.asarray(data, dtype=np.float32)
    attrs = dict(
        spec=SPEC,
        spec_version=SPEC_VERSION,
        equation=equation,
        parameters=json.dumps(parameters),
        dx=np.asarray(dx, dtype=np.float64),
        dt=float(dt),
        channels=json.dumps(list(channels)),
        boundary=boundary,
        generator_version=generator_version,
    )
    if domain is not None:
        attrs["domain"] = json.dumps(domain)
    _check(path, data.shape, attrs)
    bad = np.flatnonzero(~np.isfinite(data.reshape(data.shape[0], -1)).all(1))
    if bad.size:
        raise DataError(path, "non-finite values (NaN or inf) in data", record=f"trajectory {bad[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            chunks = (1,) + data.shape[1:]
            f.create_dataset("data", data=data, chunks=chunks)
            for k, v in attrs.items():
                f.attrs[k] = v
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return validate_pde(path, check_values=False)


def _check(path, shape, attrs) -> None:
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise DataError(path, f"missing attribute(s) {', '.join(missing)}")
    if attrs["spec"] != SPEC:
        raise DataError(path, f"attribute spec is {attrs['spec']!r}, expected {SPEC!r}")
    if str(attrs["spec_version"]).split(".")[0] != SPEC_VERSION.split(".")[0]:
        raise DataError(path, f"spec_version {attrs['spec_version']} is not readable by {SPEC_VERSION}")
    if len(shape) not in (4, 5):
        raise DataError(path, f"data has shape {tuple(shape)}; expected [N, X, T, C] or [N, X, Y, T, C]")
    if min(shape) < 1:
        raise DataError(path, f"data has an empty axis: shape {tuple(shape)}")
    try:
        channels = json.loads(attrs["channels"])
        params = json.loads(attrs["parameters"])
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"channels/parameters attribute is not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise DataError(path, "parameters attribute must be a JSON object")
    if not isinstance(channels, list) or len(channels) != shape[-1]:
        raise DataError(path, f"channels attribute {channels!r} does not name the {shape[-1]} channel(s)")
    dx = np.atleast_1d(np.asarray(attrs["dx"], dtype=np.float64))
    if dx.size != len(shape) - 3 or not (dx > 0).all():
        raise DataError(path, f"dx {dx.tolist()} must hold {len(shape) - 3} positive spacing(s)")
    if not float(attrs["dt"]) > 0:
        raise DataError(path, f"dt {attrs['dt']} must be positive")
    if attrs["boundary"] not in BOUNDARIES:
        raise DataError(path, f"boundary {attrs['boundary']!r} is not one of {', '.join(BOUNDARIES)}")


def validate_pde(path: str | Path, check_values: bool = True) -> PDEInfo:
    """Check a file against the spec (structure, attributes, and with ``check_values`` every trajectory for
    NaN/inf, read one trajectory at a time). Raises :class:`DataError` naming the file and the record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"not a readable HDF5 file ({exc})") from None
    with f:
        if "data" not in f or not isinstance(f["data"], h5py.Dataset):
            raise DataError(path, "no dataset named 'data'")
        d = f["data"]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        _check(path, d.shape, attrs)
        if not np.issubdtype(d.dtype, np.floating):
            raise DataError(path, f"data has dtype {d.dtype}; expected floating point")
        if check_values:
            for i in range(d.shape[0]):
                if not np.isfinite(d[i]).all():
                    raise DataError(path, "non-finite values (NaN or inf) in data", record=f"trajectory {i}")
        return PDEInfo(
            str(path),
            tuple(d.shape),
            str(attrs["equation"]),
            json.loads(attrs["parameters"]),
            tuple(float(v) for v in np.atleast_1d(attrs["dx"])),
            float(attrs["dt"]),
            tuple(json.loads(attrs["channels"])),
            str(attrs["boundary"]),
            str(attrs["generator_version"]),
        )


class PDEFile:
    """Lazy reader: ``len(f)`` trajectories, ``f[i]`` one ``[X, (Y,) T, C]`` array, ``f.window(i, t0, t1)``.

    The HDF5 handle opens on first access in each process (safe with DataLoader workers)."""

    def __init__(self, path: str | Path, validate: bool = True):
        self.path = Path(path)
        self.info = validate_pde(self.path, check_values=False) if validate else None
        self._h5 = None
        self._pid = None

    def _data(self):
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5["data"]

    def __len__(self) -> int:
        return self.info.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._data()[i]

    def window(self, i: int, t0: int, t1: int) -> np.ndarray:
        """Frames ``t0:t1`` of trajectory ``i`` (only those are read)."""
        return self._data()[i, ..., t0:t1, :]

    def read(self, indices) -> np.ndarray:
        """Several trajectories at once, ``[len(indices), X, (Y,) T, C]``."""
        idx = np.asarray(indices, dtype=int)
        if idx.size and (np.diff(idx) == 1).all():  # a contiguous block: one slice read, no fancy indexing
            return self._data()[int(idx[0]) : int(idx[-1]) + 1]
        order = np.argsort(idx)
        out = self._data()[np.sort(idx).tolist()]
        return out[np.argsort(order)]

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def split_indices(n: int, test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """By trajectory, never by frame: the first ``n - n_test`` are train, the last ``n_test`` test."""
    n_test = max(1, int(round(n * test_fraction))) if n > 1 else 0
    return np.arange(n - n_test), np.arange(n - n_test, n)


def to_2d(x: torch.Tensor, res: int | None) -> torch.Tensor:
    """Lift 1-D fields ``[B, X, T, C]`` to 2-D ``[B, X, Y, T, C]`` by repeating along a new y axis of size
    ``res`` (or X), so one 2-D model can read 1-D data; 2-D input is returned unchanged."""
    if x.dim() == 5:
        return x
    ny = res or x.shape[1]
    return x.unsqueeze(2).expand(-1, -1, ny, -1, -1).contiguous()


def resize(x: torch.Tensor, res: int, mode: str = "bilinear") -> torch.Tensor:
    """Resample every frame of ``[B, X, Y, T, C]`` to ``res x res`` (bilinear as in DPOT, or ``"fft"``)."""
    B, X, Y, T, C = x.shape
    if (X, Y) == (res, res):
        return x
    if mode == "fft":
        return fft_resample(x, (res, res))
    frames = x.permute(0, 3, 4, 1, 2).reshape(B, T * C, X, Y)
    frames = F.interpolate(frames, size=(res, res), mode="bilinear", align_corners=False)
    return frames.reshape(B, T, C, res, res).permute(0, 3, 4, 1, 2)


def fft_resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Band-limited resampling of ``[B, X, Y, T, C]`` to ``size`` by zero-padding / truncating the spectrum
    (DPOT's varying-resolution evaluation). Exact for fields whose modes fit both grids."""
    B, X, Y, T, C = x.shape
    nx, ny = size
    spec = torch.fft.fft2(x.permute(0, 3, 4, 1, 2).to(torch.float64), norm="forward")
    out = torch.zeros(B, T, C, nx, ny, dtype=spec.dtype, device=x.device)
    kx, ky = min(X, nx) // 2, min(Y, ny) // 2
    for sx_in, sx_out in ((slice(0, kx), slice(0, kx)), (slice(X - kx, X), slice(nx - kx, nx))):
        for sy_in, sy_out in ((slice(0, ky), slice(0, ky)), (slice(Y - ky, Y), slice(ny - ky, ny))):
            out[..., sx_out, sy_out] = spec[..., sx_in, sy_in]
    y = torch.fft.ifft2(out, norm="forward").real
    return y.permute(0, 3, 4, 1, 2).to(x.dtype)


@dataclass
class Source:
    """One dataset in a mixture: a file, a sampling weight, and which trajectories to use (None = all)."""

    path: str
    weight: float = 1.0
    indices: list[int] | None = None


class MixtureDataset(torch.utils.data.Dataset):
    """DPOT's multi-dataset training set.

    Every trajectory is resized to ``res x res`` (1-D data lifted to 2-D first) and its channels are padded to
    ``n_channels`` with the constant 1 (DPOT's padding value); ``mask [n_channels]`` marks the real channels.
    Each dataset contributes ``len(indices) * weight`` index slots per epoch; a slot draws a fresh random
    window start, so an epoch visits every trajectory ``weight`` times. Items are dicts
    ``x [res, res, t_in, C]``, ``y [res, res, t_out, C]``, ``mask [C]``, ``dataset`` (int). Weights may be
    fractional (a weight 0.5 dataset is drawn half as often per trajectory as a weight 1 dataset).

    ``in_memory=True`` loads the selected trajectories once (already resized and padded) onto ``device`` and
    enables :meth:`sample_batch`, which draws a whole batch on that device without a DataLoader (fast on
    GPUs).
    Otherwise ``__getitem__`` reads only the needed frames from HDF5.
    """

    def __init__(
        self,
        sources: list[Source],
        t_in: int = 10,
        t_out: int = 1,
        res: int = 64,
        n_channels: int | None = None,
        in_memory: bool = True,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if not sources:
            raise ValueError("a mixture needs at least one dataset")
        self.files = [PDEFile(s.path) for s in sources]
        self.sources = sources
        self.t_in, self.t_out, self.res = t_in, t_out, res
        need = t_in + t_out
        for f in self.files:
            if f.info.n_frames < need:
                raise DataError(f.path, f"{f.info.n_frames} frames; the window needs t_in + t_out = {need}")
        self.real_channels = [f.info.n_channels for f in self.files]
        self.n_channels = n_channels or max(self.real_channels)
        if self.n_channels < max(self.real_channels):
            raise ValueError(
                f"n_channels {self.n_channels} < largest channel count {max(self.real_channels)}"
            )
        self.indices = [
            np.arange(len(f)) if s.indices is None else np.asarray(s.indices, dtype=int)
            for f, s in zip(self.files, sources, strict=True)
        ]
        for f, idx in zip(self.files, self.indices, strict=True):
            if idx.size == 0 or idx.min() < 0 or idx.max() >= len(f):
                raise DataError(f.path, f"trajectory indices out of range 0..{len(f) - 1} (or empty)")
        self.masks = torch.zeros(len(self.files), self.n_channels)
        for k, c in enumerate(self.real_channels):
            self.masks[k, :c] = 1.0
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        if (weights <= 0).any():
            raise ValueError(f"dataset weights must be positive, got {weights.tolist()}")
        # Dataset k holds n_k * w_k of the epoch's slots; slot i of dataset k is trajectory i mod n_k.
        sizes = np.array([idx.size for idx in self.indices])
        self.slot_counts = np.maximum(1, np.round(sizes * weights)).astype(int)
        self.slot_offsets = np.concatenate([[0], np.cumsum(self.slot_counts)])
        self.probs = torch.as_tensor(self.slot_counts / self.slot_counts.sum(), dtype=torch.float64)
        self.rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        self.tensors = None
        if in_memory:
            self.tensors = [
                self.prepare(f.read(idx)).to(self.device)
                for k, (f, idx) in enumerate(zip(self.files, self.indices, strict=True))
            ]
            self.masks = self.masks.to(self.device)

    def prepare(self, arr: np.ndarray) -> torch.Tensor:
        """Raw ``[B, X, (Y,) T, c]`` -> ``[B, res, res, T, n_channels]`` (lift, resize, pad)."""
        x = to_2d(torch.as_tensor(np.asarray(arr), dtype=torch.float32), self.res)
        x = resize(x, self.res)
        pad = self.n_channels - x.shape[-1]
        if pad:
            x = torch.cat([x, torch.ones(*x.shape[:-1], pad)], -1)
        return x

    def __len__(self) -> int:
        return int(self.slot_offsets[-1])

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.slot_offsets, i, side="right") - 1)
        j = (i - self.slot_offsets[k]) % self.indices[k].size
        n_frames = self.files[k].info.n_frames
        t0 = int(self.rng.integers(0, n_frames - self.t_in - self.t_out + 1))
        traj = int(self.indices[k][j])
        if self.tensors is not None:
            w = self.tensors[k][j, ..., t0 : t0 + self.t_in + self.t_out, :].cpu()
        else:
            w = self.prepare(self.files[k].window(traj, t0, t0 + self.t_in + self.t_out)[None])[0]
        return dict(
            x=w[..., : self.t_in, :], y=w[..., self.t_in :, :], mask=self.masks[k].cpu(), dataset=int(k)
        )

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """A batch drawn uniformly over the weighted slots (with replacement), built on ``device``."""
        if self.tensors is None:
            raise RuntimeError("sample_batch needs in_memory=True")
        ks = torch.multinomial(self.probs, batch_size, replacement=True, generator=generator).numpy()
        xs, ys, ms, ds = [], [], [], []
        win = self.t_in + self.t_out
        for k in np.unique(ks):
            sel = np.flatnonzero(ks == k)
            T = self.tensors[k].shape[-2]
            t0 = torch.randint(T - win + 1, (sel.size,), generator=generator)
            # non_blocking: a blocking host-to-GPU copy synchronises the stream, so the CPU would wait for the
            # previous step to finish before queueing this one (the training loop would never overlap)
            tid = (t0[:, None] + torch.arange(win)[None]).to(self.device, non_blocking=True)  # [b, win]
            js = torch.randint(self.tensors[k].shape[0], (sel.size,), generator=generator)
            traj = self.tensors[k][js.to(self.device, non_blocking=True)]  # [b, X, Y, T, C]
            idx = tid[:, None, None, :, None].expand(-1, *traj.shape[1:3], -1, traj.shape[-1])
            w = torch.gather(traj, 3, idx)
            xs.append(w[..., : self.t_in, :])
            ys.append(w[..., self.t_in :, :])
            ms.append(self.masks[k].expand(sel.size, -1))
            ds.append(torch.full((sel.size,), int(k), device=self.device))
        return dict(x=torch.cat(xs), y=torch.cat(ys), mask=torch.cat(ms), dataset=torch.cat(ds))
