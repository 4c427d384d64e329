"""Python steps that suite configs call as ``python: scifm.bench.steps:<function>``.

Each step takes keyword arguments from the config and returns a dict of metrics (merged into the job's
row) or None. Steps that need a domain package import it lazily, so the bench app loads without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from scifm.core.errors import ConfigError, DataError


def subset_extxyz(out: str, source: str | None = None, max_traj: int | None = None,
                  max_per_traj: int | None = None, stride: int = 1) -> dict[str, Any]:
    """Write a subset of an extxyz file, whole trajectories kept together (splits are by trajectory).

    ``source``: extxyz file; None means the bundled MLIP data set. Frames are grouped by
    ``info["traj_id"]`` (a frame without one is its own trajectory); the first ``max_traj`` trajectories
    are kept, each thinned to every ``stride``-th frame and cut to ``max_per_traj`` frames.
    """
    import ase.io

    if source is None:
        from scifm.mlip.data import default_dataset_path

        source = str(default_dataset_path())
    src = Path(source)
    if not src.is_file():
        raise DataError(src, "subset source file not found")
    frames = ase.io.read(src, index=":")
    groups: dict[Any, list] = {}
    for k, atoms in enumerate(frames):
        groups.setdefault(atoms.info.get("traj_id", f"frame{k}"), []).append(atoms)
    keys = list(groups)[: max_traj if max_traj else None]
    kept = []
    for key in keys:
        traj = groups[key][:: max(1, int(stride))]
        kept.extend(traj[: max_per_traj if max_per_traj else None])
    if not kept:
        raise DataError(src, "the subset is empty")
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(dst, kept, format="extxyz")
    return {"n_subset_frames": len(kept), "n_subset_traj": len(keys)}


def mlip_speed(model: str, data: str | None = None, n_steps: int = 20, n_warmup: int = 3,
               frame: int = 0, dtype: str = "float32", device: str = "cpu") -> dict[str, Any]:
    """Energy+force calls per second of an exported MLIP on one frame, as an MD step would make them.

    Atoms are displaced by 1e-3 Å between calls so that every call rebuilds the neighbour list and
    recomputes (no cache hit). Returns ``steps_per_s``, ``ms_per_step`` and ``speed_n_atoms``.
    """
    import ase.io
    import numpy as np

    from scifm.mlip.calculator import SciFMCalculator

    if n_steps < 1:
        raise ConfigError("mlip_speed: n_steps must be >= 1")
    if data is None:
        from scifm.mlip.data import default_dataset_path

        data = str(default_dataset_path())
    model_dir = Path(model)
    if (model_dir / "model").is_dir():
        model_dir = model_dir / "model"
    atoms = ase.io.read(data, index=frame)
    atoms.calc = SciFMCalculator(model_dir, dtype=dtype, device=device)
    rng = np.random.default_rng(0)
    for _ in range(n_warmup):
        atoms.positions += 1e-3 * rng.standard_normal(atoms.positions.shape)
        atoms.get_forces()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        atoms.positions += 1e-3 * rng.standard_normal(atoms.positions.shape)
        atoms.get_forces()
    dt = time.perf_counter() - t0
    return {"steps_per_s": n_steps / dt, "ms_per_step": 1e3 * dt / n_steps, "speed_n_atoms": len(atoms)}
