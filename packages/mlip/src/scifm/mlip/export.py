"""Export a Potential as safetensors + JSON (``scifm.core.export``) and load it back, without pickle.

model.json ``config``: {"model": registry name, "model_config": constructor arguments, "cutoff": Å,
"elements": [Z, ...], "zbl": bool (ZBL repulsion prior on), "units": {"energy": "eV", "length": "Angstrom"}}.
The state dict holds the model weights and the Potential's buffers (atom_ref, scale, shift).
"""

from __future__ import annotations

import os

import torch

from scifm.core.errors import DataError
from scifm.core.export import load_model, save_model

from .models.registry import available_models, build_model
from .potential import Potential

EXPORT_NAME = "scifm-mlip-potential"
UNITS = {"energy": "eV", "length": "Angstrom"}

_DTYPES = {"float32": torch.float32, "float64": torch.float64, None: None}


def potential_config(potential: Potential) -> dict:
    """The JSON description that rebuilds ``potential`` (without its weights)."""
    model = potential.model
    name = getattr(model, "model_name", "")
    if not name:
        raise ValueError(f"{type(model).__name__} is not a registered model; cannot export it")
    return {
        "model": name,
        "model_config": model.config,
        "cutoff": potential.cutoff,
        "elements": potential.elements,
        "zbl": potential.zbl is not None,
        "units": dict(UNITS),
    }


def export_potential(potential: Potential, dir: str | os.PathLike, meta: dict | None = None):
    """Write ``dir/model.safetensors`` + ``dir/model.json``; returns the JSON path."""
    return save_model(
        dir,
        name=EXPORT_NAME,
        config=potential_config(potential),
        state_dict=potential.state_dict(),
        meta=meta or {},
    )


def load_potential(
    dir: str | os.PathLike, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Potential:
    """Rebuild an exported Potential in eval mode. ``dtype`` None keeps the stored precision."""
    name, config, state_dict, _meta = load_model(dir)
    where = os.fspath(dir)
    if name != EXPORT_NAME:
        raise DataError(where, f"not an MLIP potential (exported as {name!r}, expected {EXPORT_NAME!r})")
    units = config.get("units", UNITS)
    if units != UNITS:
        raise DataError(where, f"units {units} are not supported (expected {UNITS})")
    model_name = config.get("model")
    if model_name not in available_models():
        raise DataError(
            where, f"unknown model {model_name!r}; this sci-fm knows {', '.join(available_models())}"
        )
    model = build_model(model_name, **config.get("model_config", {}))
    potential = Potential(model, zbl=bool(config.get("zbl", False)))
    stored = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if len(stored) == 1:  # build in the stored precision so load_state_dict copies without rounding
        potential = potential.to(stored.pop())
    try:
        potential.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise DataError(where, f"weights do not fit the model described in model.json ({exc})") from None
    if isinstance(dtype, str) or dtype is None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype is not None:
        potential = potential.to(dtype)
    return potential.to(device).eval()
