"""Trajectory output of an MD run: extxyz (streamed, one flushed frame at a time) or the atomistic HDF5
spec (``scifm.core.data.atomistic``, written atomically when the run ends or stops).

Every frame carries positions, momenta, the cell, energy, forces and (periodic) stress, plus the per-atom
arrays the input structure had (``mol_id``, ``formal_charge`` of the electrolyte builder), and
``info["step"]``, ``info["time_fs"]``. Both formats read back into ``ase.Atoms`` with :func:`read_trajectory`
(extxyz also with ``ase.io.read``; HDF5 with ``scifm.core.data.atomistic.AtomisticH5.to_atoms``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMATS = ("extxyz", "h5")


def snapshot(atoms, step: int, time_fs: float):
    """A detached copy of ``atoms`` with its current energy/forces/stress in a SinglePointCalculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    a = atoms.copy()
    res = atoms.calc.results if atoms.calc is not None else {}
    labels = {k: res[k] for k in ("energy", "forces", "stress") if k in res}
    a.calc = SinglePointCalculator(a, **labels)
    a.info["step"] = int(step)
    a.info["time_fs"] = float(time_fs)
    if "forces_std_max" in res:
        a.info["forces_std_max"] = float(res["forces_std_max"])
    return a


class TrajectoryWriter:
    """``write(atoms, step, time_fs)`` then ``close()``. extxyz appends and flushes each frame."""

    def __init__(self, path: str | Path, fmt: str = "extxyz"):
        if fmt not in FORMATS:
            raise ValueError(f"trajectory format must be one of {FORMATS}, got {fmt!r}")
        self.path, self.fmt = Path(path), fmt
        self.n_frames = 0
        self._frames: list = []
        self._fh = open(self.path, "w") if fmt == "extxyz" else None

    def write(self, atoms, step: int, time_fs: float) -> None:
        import ase.io

        snap = snapshot(atoms, step, time_fs)
        if self._fh is not None:
            ase.io.write(self._fh, snap, format="extxyz")
            self._fh.flush()
        else:
            self._frames.append(snap)
        self.n_frames += 1

    def close(self) -> None:
        if self._fh is not None:
            if not self._fh.closed:
                self._fh.close()
            return
        if self._frames:
            from scifm.core.data.atomistic import write_frames

            write_frames(self.path, self._frames, attrs={"level_of_theory": "MLIP MD", "source": "sci-fm md"})
            self._frames = []


def read_trajectory(path: str | Path, index=":") -> list:
    """Frames of an MD trajectory (.extxyz/.xyz via ASE, .h5 atomistic spec) as ``ase.Atoms``."""
    from scifm.core.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "trajectory not found")
    if path.suffix.lower() == ".h5":
        from scifm.core.data.atomistic import AtomisticH5

        h5 = AtomisticH5(path, validate=False)
        frames = [h5.to_atoms(k) for k in range(len(h5))]
        h5.close()
        return frames
    import ase.io

    try:
        frames = ase.io.read(path, index=index)
    except Exception as exc:  # ASE raises many types for malformed text
        raise DataError(path, f"cannot read the trajectory: {exc}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise DataError(path, "trajectory has no frames")
    for k, a in enumerate(frames):
        if not np.isfinite(a.positions).all():
            raise DataError(path, "positions contain NaN or inf", record=f"frame {k}")
    return frames
