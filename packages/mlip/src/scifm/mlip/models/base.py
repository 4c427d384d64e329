"""Common base of MLIP models: element list, cutoff, species indexing and the config round trip.

Forward contract (every model): ``model(data) -> dict`` with at least ``"node_energy"`` [N] (eV, before
reference energies). ``data`` carries ``z`` [N] long, ``edge_index`` [2,E] (row 0 = neighbour j, row 1 =
centre i), ``edge_vec`` [E,3] = r_j - r_i + shift (Å; computed by the Potential so that forces and stress
flow through it), ``batch`` [N] and ``num_graphs``. Models never build edge vectors themselves.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence

import torch
from torch import nn

from scifm.core.errors import ConfigError


class MLIPModel(nn.Module):
    """Base class. Subclasses call ``super().__init__(cutoff, elements)`` and keep every constructor
    argument JSON-serialisable; ``config`` is rebuilt from the constructor signature, so
    ``type(m).from_config(m.config)`` reproduces the architecture exactly."""

    model_name: str = ""
    #: energy invariant under reflections too (E(3), not only SE(3)); the physics suite tests it.
    reflection_invariant: bool = True

    def __init__(self, cutoff: float, elements: Sequence[int]):
        super().__init__()
        elements = [int(z) for z in elements]
        if not elements or len(set(elements)) != len(elements) or not all(1 <= z <= 118 for z in elements):
            raise ConfigError(f"elements must be distinct atomic numbers in 1..118, got {elements}")
        if not float(cutoff) > 0:
            raise ConfigError(f"cutoff must be > 0, got {cutoff}")
        self.cutoff = float(cutoff)
        self.elements = sorted(elements)
        index = torch.full((119,), -1, dtype=torch.long)
        index[self.elements] = torch.arange(len(self.elements))
        # Not persistent: derived from `elements`, which the config carries.
        self.register_buffer("species_index", index, persistent=False)

    @property
    def num_species(self) -> int:
        return len(self.elements)

    def species(self, z: torch.Tensor) -> torch.Tensor:
        """Atomic numbers [N] -> species indices 0..num_species-1 [N]; ValueError for unknown elements."""
        s = self.species_index[z]
        if (s < 0).any():
            bad = sorted({int(v) for v in z[s < 0].tolist()})
            raise ValueError(f"elements {bad} are not in this model's element list {self.elements}")
        return s

    # -- config round trip -------------------------------------------------------------------------
    def _store_config(self, **kwargs) -> None:
        """Subclasses call this in ``__init__`` with every constructor argument."""
        self._cfg = json.loads(json.dumps(kwargs))  # tuples -> lists; fails early if not JSON-able

    @property
    def config(self) -> dict:
        """JSON-serialisable constructor arguments (cutoff and elements included)."""
        params = set(inspect.signature(type(self).__init__).parameters) - {"self"}
        cfg = getattr(self, "_cfg", None)
        if cfg is None or set(cfg) != params:
            raise RuntimeError(f"{type(self).__name__} must call _store_config with all of {sorted(params)}")
        return json.loads(json.dumps(cfg))

    @classmethod
    def from_config(cls, config: dict):
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = set(config) - params
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown config keys {sorted(unknown)}; allowed {sorted(params)}"
            )
        return cls(**config)

    @classmethod
    def tiny_config(cls) -> dict:
        """A very small config for fast tests (the physics suite builds every registered model from it)."""
        raise NotImplementedError
