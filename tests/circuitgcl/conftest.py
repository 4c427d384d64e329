"""Shared fixtures: the circuit data folder (../shared/data/circuits or $SCIFM_SHARED/data/circuits) and two
hand-made netlists used by several test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


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


# nets a, y, m; X0..X2 all touch a and y; X2 also m
RC_NETLIST = """.subckt t a y vdd vss
X0 y.t0 a.t0 vss.t0 vss sky130_fd_pr__nfet_01v8 w=1 l=0.15 ad=0.3 as=0.2
X1 y.t1 a.t1 vdd vdd sky130_fd_pr__pfet_01v8 w=2 l=0.15
X2 y.t2 a.t2 m vss sky130_fd_pr__nfet_01v8 w=1 l=0.15
R0 y y.t0 5
R1 y y.t1 5
R2 y y.t2 5
R3 a a.t0 1
R4 a a.t1 1
R5 a a.t2 1
R6 vss vss.t0 1
C0 y vss 2f
C1 y.t0 vss 1f
C2 a y 0.5f
C3 a.t1 y 0.25f
C4 a y.t2 -0.1f
C5 m a 0.3f
C6 y vdd 1f
C7 y y.t1 9f
.ends
"""


@pytest.fixture(scope="session")
def rc_netlist() -> str:
    """A hand-made RC-extracted inverter-like netlist whose graph and labels are checked by hand."""
    return RC_NETLIST


def inverter_chain(n_inv: int, seed: int) -> str:
    """A chain of inverters with hand-made parasitics: Cg grows with fan-out W, coupling between stages."""
    g = torch.Generator().manual_seed(seed)
    lines = [".subckt chain in out vdd vss"]
    for i in range(n_inv):
        a, y = ("in" if i == 0 else f"n{i}"), ("out" if i == n_inv - 1 else f"n{i + 1}")
        w = 0.5 + float(torch.rand(1, generator=g)) * 4
        lines += [
            f"XP{i} {y} {a} vdd vdd sky130_fd_pr__pfet_01v8 w={2 * w:.3f} l=0.15",
            f"XN{i} {y} {a} vss vss sky130_fd_pr__nfet_01v8 w={w:.3f} l=0.15",
            f"C{i} {y} vss {w * 0.8:.4f}f",
            f"CC{i} {a} {y} {w * 0.05:.4f}f",
        ]
    lines.append(".ends")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def chain_netlist():
    """``chain_netlist(n_inv, seed)`` -> the text of an inverter chain with hand-made parasitics."""
    return inverter_chain


@pytest.fixture
def chain_files(tmp_path, chain_netlist):
    """``chain_files(sizes)`` -> paths of inverter chains ``chain{k}.spice`` (``sizes[k]`` stages, seed k)
    written to the test's tmp_path."""

    def write(sizes) -> list[Path]:
        paths = []
        for k, n in enumerate(sizes):
            p = tmp_path / f"chain{k}.spice"
            p.write_text(chain_netlist(n, k))
            paths.append(p)
        return paths

    return write
