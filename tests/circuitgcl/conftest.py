"""Shared fixtures: the circuit data folder (../shared/data/circuits or $SCIFM_SHARED/data/circuits)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def circuits_dir() -> Path | None:
    env = os.environ.get("SCIFM_SHARED")
    base = Path(env) / "data" if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    d = base / "circuits"
    return d if d.is_dir() else None


@pytest.fixture(scope="session")
def circuits() -> Path:
    d = circuits_dir()
    if d is None:
        pytest.skip("shared circuit data not found (../shared/data/circuits or $SCIFM_SHARED)")
    return d
