"""Shared fixtures: fixed seeds, one torch thread per process, paths to shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``../shared/data`` next to the repo (or ``$SCIFM_SHARED/data``); None when absent."""
    env = os.environ.get("SCIFM_SHARED")
    candidates = ([Path(env) / "data"] if env else []) + [REPO.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data not found (set SCIFM_SHARED to the folder holding data/)")
    return d
