"""Stability guards for MD: stop a run with a clear message before it produces garbage.

Checks, in order: non-finite energy, forces or positions (NaN/inf); two atoms closer than
``min_distance`` Å (a collapse; default 0.5 Å, far below any bond); temperature above ``max_temperature``
K (a blow-up). ``check`` returns the first problem as a sentence, or None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scifm.core.neighbors import neighbor_list


@dataclass
class Guards:
    min_distance: float | None = 0.5  # Å
    max_temperature: float | None = 5000.0  # K

    def closest_pair(self, atoms) -> tuple[int, int, float] | None:
        """(i, j, r) of some pair closer than ``min_distance`` (minimum image), or None."""
        if self.min_distance is None or len(atoms) < 2:
            return None
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        i, j, S = neighbor_list(atoms.get_positions(), self.min_distance, np.asarray(atoms.get_cell()), pbc)
        keep = ~((i == j) & (S == 0).all(axis=1))
        if not keep.any():
            return None
        i, j, S = i[keep], j[keep], S[keep]
        d = atoms.positions[j] - atoms.positions[i] + S @ np.asarray(atoms.get_cell())
        r = np.linalg.norm(d, axis=1)
        k = int(np.argmin(r))
        return int(i[k]), int(j[k]), float(r[k])

    def check(self, atoms, check_distance: bool = True) -> str | None:
        """The first violated guard of ``atoms`` (with its calculator's current results), or None."""
        if not np.isfinite(atoms.positions).all():
            return "positions are NaN or inf"
        results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        for key in ("energy", "forces"):
            if key in results and not np.all(np.isfinite(results[key])):
                return f"the model returned NaN or inf {key}"
        if check_distance:
            pair = self.closest_pair(atoms)
            if pair is not None:
                i, j, r = pair
                return (
                    f"atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) are {r:.3f} Å apart, "
                    f"closer than the {self.min_distance} Å guard (the structure collapsed)"
                )
        if self.max_temperature is not None:
            t = float(atoms.get_temperature())
            if not np.isfinite(t):
                return "temperature is NaN"
            if t > self.max_temperature:
                return (
                    f"temperature {t:.0f} K exceeds the {self.max_temperature:.0f} K guard (the run blew up)"
                )
        return None
