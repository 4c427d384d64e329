"""MLIP data: the bundled xTB data set and its generator (``scifm.mlip.data.generate``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from scifm.core.errors import DataError


def default_dataset_path() -> Path:
    """Path of the bundled GFN2-xTB data set (extxyz; see ``default/README.md`` for how it was made)."""
    path = Path(str(files("scifm.mlip.data") / "default" / "default.extxyz"))
    if not path.is_file():
        raise DataError(path, "bundled default data set is missing from this install")
    return path
