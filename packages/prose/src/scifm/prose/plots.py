"""Ramachandran plots and energy histograms of reference, proposal and reweighted samples (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_energy_histograms", "plot_ramachandran"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ramachandran(topology, sets: dict[str, np.ndarray], path: str | Path, max_residues: int = 4) -> Path:
    """One row per residue with phi and psi (up to `max_residues`), one column per named sample set (nm)."""
    from scifm.prose.metrics import ramachandran_pairs

    plt = _plt()
    per_set = {name: ramachandran_pairs(topology, x) for name, x in sets.items() if len(x)}
    names = list(per_set)
    rows = min(max_residues, max((len(v) for v in per_set.values()), default=0)) or 1
    fig, axes = plt.subplots(rows, len(names), figsize=(3.2 * len(names), 3.0 * rows), squeeze=False)
    bins = np.linspace(-np.pi, np.pi, 61)
    for j, name in enumerate(names):
        for i in range(rows):
            ax = axes[i, j]
            if i < len(per_set[name]):
                label, phi, psi = per_set[name][i]
                ax.hist2d(phi, psi, bins=[bins, bins], cmap="viridis", norm=_lognorm())
                ax.set_title(f"{name}: {label}", fontsize=9)
            ax.set_xlim(-np.pi, np.pi)
            ax.set_ylim(-np.pi, np.pi)
            ax.set_xlabel("phi (rad)")
            ax.set_ylabel("psi (rad)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lognorm():
    from matplotlib.colors import LogNorm

    return LogNorm()


def plot_energy_histograms(energies: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Overlaid density histograms of target energies (kT); the range follows the reference's 0.5-99.5 %."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    finite = {k: np.asarray(v)[np.isfinite(v)] for k, v in energies.items() if len(v)}
    ref = next(iter(finite.values()))
    lo, hi = np.percentile(ref, [0.5, 99.5]) if len(ref) else (0, 1)
    pad = 0.5 * (hi - lo) + 1.0
    bins = np.linspace(lo - pad, hi + pad, 80)
    for name, e in finite.items():
        ax.hist(np.clip(e, bins[0], bins[-1]), bins=bins, density=True, histtype="step", lw=1.5, label=name)
    ax.set_xlabel("energy (kT)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
