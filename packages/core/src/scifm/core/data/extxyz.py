"""extxyz import/export through ASE, with errors that name the file and the frame."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from scifm.core.data.labels import atoms_labels
from scifm.core.data.validate import check_frame
from scifm.core.errors import DataError


def _locate_bad_frame(path: Path) -> str:
    """Scan the xyz frame headers to say which frame is malformed (ASE's own message does not)."""
    with open(path) as fh:
        lines = fh.readlines()
    pos, frame = 0, 0
    while pos < len(lines):
        head = lines[pos].strip()
        if not head:
            pos += 1
            continue
        try:
            n = int(head)
        except ValueError:
            return f"frame {frame} (line {pos + 1}): expected an atom count, found {head[:40]!r}"
        body = lines[pos + 2 : pos + 2 + n]
        if len(body) < n:
            return f"frame {frame} (line {pos + 1}): header says {n} atoms but only {len(body)} lines follow"
        nxt = pos + 2 + n
        if nxt < len(lines) and lines[nxt].strip():
            try:
                int(lines[nxt].strip())
            except ValueError:
                return f"frame {frame} (line {pos + 1}): header says {n} atoms but more atom lines follow"
        pos, frame = nxt, frame + 1
    return "unreadable extxyz"


def read_extxyz(
    path: str | Path, require: tuple[str, ...] = ("energy", "forces"), validate: bool = True
) -> list:
    """Read every frame; labels may be calculator results or ``REF_*``/plain keys. Validates each frame."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for a malformed file
        where = _locate_bad_frame(path)
        raise DataError(path, f"malformed extxyz: {where} ({exc.__class__.__name__}: {exc})") from None
    if not frames:
        raise DataError(path, "no frames")
    if validate:
        for k, atoms in enumerate(frames):
            pbc = atoms.get_pbc()
            check_frame(
                path,
                k,
                atoms.get_atomic_numbers(),
                atoms.get_positions(),
                atoms_labels(atoms),
                require,
                atoms.get_cell().array if pbc.any() else None,
                pbc,
            )
    return frames


def write_extxyz(path: str | Path, frames) -> Path:
    """Write frames atomically (temp file + rename)."""
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(suffix=".extxyz.tmp", dir=path.parent)
    os.close(fd)
    try:
        ase.io.write(temp, list(frames), format="extxyz")
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


def read_frames(path: str | Path, require: tuple[str, ...] = ("energy", "forces")) -> list:
    """Any supported file (extxyz or atomistic HDF5) → list of ``ase.Atoms`` with labels."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        from scifm.core.data.atomistic import AtomisticH5

        ds = AtomisticH5(path)
        return [ds.to_atoms(k) for k in range(len(ds))]
    return read_extxyz(path, require)
