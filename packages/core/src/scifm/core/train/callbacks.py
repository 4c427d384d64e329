"""Trainer plumbing: atomic checkpoint files, a CSV logger that survives resume, metrics reading.

* `AtomicCheckpointIO`: checkpoints are written to a temporary file in the same directory and renamed,
  so a run killed mid-save leaves the previous `last.ckpt` intact; they are read back with
  `torch.load(weights_only=True)` (no code execution) and a corrupt file becomes a `DataError`.
* `ResumableCSVLogger`: Lightning's CSVLogger deletes an existing `metrics.csv`; on resume this one keeps
  the rows logged before the checkpoint and appends after them.
* `read_metrics_csv(run_dir)`: the flat `run_dir/logs/metrics.csv` as `{column: [values]}`.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from scifm.core.errors import DataError
from scifm.core.io import atomic_output, load_checkpoint

__all__ = ["AtomicCheckpointIO", "ResumableCSVLogger", "read_metrics_csv", "METRICS_FILE"]

METRICS_FILE = "metrics.csv"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save via temp file + `os.replace`; load with `weights_only=True` and clear errors."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_output(path) as tmp, tmp.open("wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # Only our own checkpoints are loaded here, and always without code execution.
        ckpt = load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise DataError(path, "not a Lightning checkpoint (no 'state_dict')")
        return ckpt


class _KeepingWriter(_ExperimentWriter):
    """CSV writer that, instead of deleting an old metrics.csv, keeps its rows logged before a step."""

    def __init__(self, log_dir: str, keep_before_step: int | None) -> None:
        self._keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_before_step is None or not path.is_file():
            if path.is_file():
                path.unlink()  # a fresh run replaces old logs
            return
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if (_number(r.get("step")) or 0) < self._keep_before_step]
        # Rows logged after the checkpoint by the killed run are dropped: the resumed run redoes them.
        with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)

    def save(self) -> None:
        """Rewrite metrics.csv through a temporary file, so a kill mid-write cannot leave a torn row."""
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        old: list[dict] = []
        if path.is_file():
            with path.open(newline="") as fh:
                old = list(csv.DictReader(fh))
        self._record_new_keys()
        with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.metrics_keys, restval="")
            writer.writeheader()
            writer.writerows(old)
            writer.writerows(self.metrics)
        self.metrics = []


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing `save_dir/metrics.csv` directly.

    `keep_before_step`: on resume, the checkpoint's global step; earlier rows are kept, later rows (logged
    by a killed run after its last checkpoint, and redone now) are dropped. None: start a fresh file.
    """

    def __init__(self, save_dir: str | os.PathLike, keep_before_step: int | None = None, **kwargs: Any):
        super().__init__(save_dir=str(save_dir), name="", version="", **kwargs)
        self._keep_before_step = keep_before_step

    @property
    def log_dir(self) -> str:
        return self.root_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._keep_before_step)
        return self._experiment


def _parse(value: str) -> float | None:
    if value == "" or value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return math.nan


def read_metrics_csv(run_dir: str | os.PathLike, *, dropna: bool = True) -> dict[str, list]:
    """Columns of `run_dir/logs/metrics.csv` (or of a metrics.csv given directly) as float lists.

    Lightning writes train and val metrics on separate rows; with `dropna=True` (default) each list
    holds only the rows where that column has a value, so `m["val/loss"]` is one value per epoch.
    With `dropna=False` the lists are aligned row by row with None for empty cells.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = (
            path / "logs" / METRICS_FILE if (path / "logs" / METRICS_FILE).is_file() else path / METRICS_FILE
        )
    if not path.is_file():
        raise DataError(path, "metrics file not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns: dict[str, list] = {k: [] for k in reader.fieldnames or []}
        for row in reader:
            for k in columns:
                v = _parse(row.get(k, ""))
                if v is not None or not dropna:
                    columns[k].append(v)
    # Step and epoch are integers; keep them so when they are.
    for k in ("epoch", "step"):
        if k in columns:
            columns[k] = [int(v) if v is not None and float(v).is_integer() else v for v in columns[k]]
    return columns
