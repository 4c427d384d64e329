"""Parity plots and learning curves (PNG, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def parity_plot(path, e_ref, e_pred, n_atoms, f_ref, f_pred, title: str = "") -> Path:
    """Energy per atom and force components, predicted vs reference."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    e_ref, e_pred, n_atoms = (np.asarray(x, dtype=float) for x in (e_ref, e_pred, n_atoms))
    panels = [
        (axes[0], e_ref / n_atoms, e_pred / n_atoms, "energy per atom (eV)"),
        (axes[1], np.ravel(f_ref), np.ravel(f_pred), "force component (eV/Å)"),
    ]
    for ax, ref, pred, label in panels:
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        mae = np.abs(pred - ref).mean()
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"MAE {1000 * mae:.1f} m{label.split('(')[1][:-1]}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curve(path, history: dict[str, list], title: str = "") -> Path:
    """Train/validation loss and force MAE per epoch from the CSV log."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for key, ax in (("loss", axes[0]), ("forces_mae", axes[1])):
        for stage in ("train", "val"):
            xs, ys = history.get("epoch_" + f"{stage}/{key}", []), history.get(f"{stage}/{key}", [])
            if ys:
                ax.plot(xs if len(xs) == len(ys) else range(len(ys)), ys, label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key + (" (eV/Å)" if key == "forces_mae" else ""))
        ax.set_yscale("log")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
