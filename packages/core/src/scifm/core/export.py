"""The exported-model format: weights in safetensors + a JSON description. No pickle anywhere.

A model directory holds two files:

* `model.safetensors`: the state dict (every tensor contiguous, tensors that shared memory stored once
  each, on the CPU);
* `model.json`: `{"format": "scifm-model", "format_version": 1, "name", "config", "meta",
  "scifm_version", "dtype", "created", "weights_file", "weights_sha256"}`.

`name` picks the model class in a domain registry and `config` holds its constructor arguments, so
`registry[name](**config).load_state_dict(state_dict)` rebuilds the model. Both files are written to
temporary files in the same directory and renamed into place; the JSON goes last, since it is the index.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scifm.core.errors import ConfigError, DataError
from scifm.core.io import atomic_output

__all__ = ["FORMAT", "FORMAT_VERSION", "JSON_NAME", "WEIGHTS_NAME", "load_model", "save_model"]

FORMAT = "scifm-model"
FORMAT_VERSION = 1
JSON_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"


def _scifm_version() -> str:
    try:
        from importlib.metadata import version

        return version("scifm-core")
    except Exception:  # not installed as a distribution (e.g. a bare checkout)
        return "unknown"


def _prepare_tensors(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """CPU, detached, contiguous tensors; a tensor that shares storage with an earlier one is cloned.

    safetensors refuses aliased tensors (tied weights, views); cloning keeps every key so the
    state dict loads back into the module unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ConfigError(f"save_model: state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"save_model: state_dict[{key!r}] is a {type(value).__name__}, not a tensor "
                "(put non-tensor settings in config or meta)"
            )
        t = value.detach().to("cpu").contiguous()
        if t.numel() > 0:
            ptr = t.untyped_storage().data_ptr()
            if ptr in storages:  # tied weight or a view of an earlier tensor
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            storages.add(ptr)
        out[key] = t
    return out


def _dominant_dtype(tensors: Mapping[str, torch.Tensor]) -> str:
    floats = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
    if not floats:
        return "none"
    return floats.pop() if len(floats) == 1 else "mixed"


def _json_ready(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, indent=2, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save_model: {what} is not JSON-serialisable ({exc})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(
    dir: str | os.PathLike,
    name: str,
    config: dict,
    state_dict: Mapping[str, torch.Tensor],
    meta: dict | None = None,
) -> Path:
    """Write `dir/model.safetensors` and `dir/model.json` atomically; returns the JSON path.

    `config` and `meta` must be JSON-serialisable (`config`: constructor arguments of the model class
    named `name`; `meta`: free-form provenance such as training metrics, units, elements).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("save_model: name must be a non-empty string")
    if not isinstance(config, dict):
        raise ConfigError(f"save_model: config must be a dict, got {type(config).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise ConfigError(f"save_model: meta must be a dict or None, got {type(meta).__name__}")
    tensors = _prepare_tensors(state_dict)
    _json_ready(config, "config")
    _json_ready(meta, "meta")

    directory = Path(dir)
    directory.mkdir(parents=True, exist_ok=True)
    # Weights first, the JSON index last: a reader never sees a JSON pointing at missing weights, and a
    # torn pair is caught by the checksum.
    with atomic_output(directory / WEIGHTS_NAME) as tmp_weights:
        save_file(tensors, str(tmp_weights), metadata={"format": FORMAT, "name": name})
        digest = _sha256(tmp_weights)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "config": config,
        "meta": meta,
        "scifm_version": _scifm_version(),
        "dtype": _dominant_dtype(tensors),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": digest,
    }
    with atomic_output(directory / JSON_NAME) as tmp_json:
        tmp_json.write_text(_json_ready(record, "model record") + "\n")
    return directory / JSON_NAME


def read_model_json(path: str | os.PathLike) -> tuple[Path, dict]:
    """Locate and validate `model.json` (given the directory, the JSON or the weights file)."""
    p = Path(path)
    json_path = p / JSON_NAME if p.is_dir() else (p.with_name(JSON_NAME) if p.suffix == ".safetensors" else p)
    if not json_path.is_file():
        raise DataError(json_path, "exported model description not found (expected model.json)")
    try:
        record = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(json_path, f"not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise DataError(json_path, f"not a sci-fm model file (format {found!r}, expected {FORMAT!r})")
    version = record.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(json_path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise DataError(
            json_path,
            f"format_version {version} is newer than this sci-fm understands ({FORMAT_VERSION}); "
            "upgrade sci-fm to load it",
        )
    for key, kind in (("name", str), ("config", dict)):
        if not isinstance(record.get(key), kind):
            raise DataError(json_path, f"field {key!r} missing or not a {kind.__name__}")
    if record.get("meta") is not None and not isinstance(record["meta"], dict):
        raise DataError(json_path, "field 'meta' must be an object or null")
    weights = record.get("weights_file", WEIGHTS_NAME)
    if not isinstance(weights, str) or Path(weights).name != weights:
        raise DataError(json_path, f"field 'weights_file' must be a plain file name, got {weights!r}")
    return json_path, record


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[str, dict, dict[str, torch.Tensor], dict | None]:
    """Read an exported model: returns `(name, config, state_dict, meta)`.

    `path` is the model directory or its `model.json`. Raises `DataError` for a missing file, a foreign
    or too-new format, a checksum mismatch or a corrupt weights file.
    """
    json_path, record = read_model_json(path)
    weights_path = json_path.parent / record.get("weights_file", WEIGHTS_NAME)
    if not weights_path.is_file():
        raise DataError(weights_path, "weights file missing next to model.json")
    expected = record.get("weights_sha256")
    if expected is not None and _sha256(weights_path) != expected:
        raise DataError(
            weights_path,
            "weights file does not match the checksum in model.json (corrupt, truncated or replaced)",
        )
    try:
        state_dict = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(weights_path, f"corrupt safetensors file ({exc})") from None
    return record["name"], record["config"], state_dict, record.get("meta")
