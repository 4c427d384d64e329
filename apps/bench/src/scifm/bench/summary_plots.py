"""Plots the board draws from the rows themselves (the per-run plots are copied from the records).

* accuracy vs speed, with the Pareto front, for rows that have a force MAE and a speed column (MLIPs);
* R² per design for rows that have ``edge_r2`` and ``design`` (CircuitGCL).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SPEED_KEYS = ("steps_per_s", "frames_per_s", "ns_per_day", "atoms_steps_per_s")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _label(row: dict[str, Any]) -> str:
    for k in ("variant", "model", "method", "job", "name"):  # a recipe probe is named by its variant
        if isinstance(row.get(k), str):
            return row[k]
    return "?"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (speed ↑, error ↓) that no other point beats on both, fastest first."""
    front = []
    for i, (s, e) in enumerate(points):
        dominated = any(
            s2 >= s and e2 <= e and (s2 > s or e2 < e) for j, (s2, e2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: -points[i][0])


def _force_key(rows: list[dict]) -> str | None:
    keys = [k for r in rows for k in r if "forces_mae" in k or k in ("f_mae", "force_mae")]
    return keys[0] if keys else None


def pareto_plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Force MAE vs speed for every row that has both; None when fewer than one such row."""
    fkey = _force_key(rows)
    skey = next((k for k in SPEED_KEYS if any(_num(r.get(k)) for r in rows)), None)
    if fkey is None or skey is None:
        return None
    pts = [
        (float(r[skey]), float(r[fkey]), _label(r)) for r in rows if _num(r.get(skey)) and _num(r.get(fkey))
    ]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front([(s, e) for s, e, _ in pts])
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", zorder=3)
    for s, e, name in pts:
        ax.annotate(name, (s, e), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if len(front) > 1:
        ax.step(
            [pts[i][0] for i in front],
            [pts[i][1] for i in front],
            where="post",
            color="tab:red",
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(skey.replace("_", " ") + " (higher is better)")
    ax.set_ylabel(fkey.replace("_", " ") + " (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def r2_per_design_plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Grouped bars: edge R² of each method on each design; None when no row has both keys."""
    data = [
        (str(r["design"]), _label(r), float(r["edge_r2"]))
        for r in rows
        if "design" in r and _num(r.get("edge_r2"))
    ]
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    designs = list(dict.fromkeys(d for d, _, _ in data))
    methods = list(dict.fromkeys(m for _, m, _ in data))
    width = 0.8 / len(methods)
    x = np.arange(len(designs))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(designs) + 2), 4), dpi=100)
    for k, m in enumerate(methods):
        vals = {d: v for d, mm, v in data if mm == m}
        offset = (k - (len(methods) - 1) / 2) * width
        ax.bar(x + offset, [vals.get(d, np.nan) for d in designs], width, label=m)
    many = len(designs) > 4
    ax.set_xticks(x, designs, rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("edge R²")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(title, fontsize=10)
    if len(methods) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_plots(suite: str, rows: list[dict[str, Any]], img_dir: Path) -> list[tuple[Path, str]]:
    """The summary plots that ``rows`` (all newest rows of a suite) support, with captions."""
    out = []
    p = pareto_plot(rows, img_dir / f"{suite}-pareto.png", f"{suite}: accuracy vs speed")
    if p:
        out.append((p, "Accuracy vs speed; the red line is the Pareto front"))
    p = r2_per_design_plot(rows, img_dir / f"{suite}-r2-per-design.png", f"{suite}: edge R² per design")
    if p:
        out.append((p, "Edge-capacitance R² per design"))
    return out
