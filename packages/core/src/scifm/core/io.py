"""Safe loading: torch checkpoints without code execution, and a restricted unpickler.

Data files and checkpoints come from other people's machines, so nothing here ever runs code that a
file asks for. Two entry points:

* `load_checkpoint(path)`: `torch.load(weights_only=True)`; a corrupt, truncated or foreign file
  (one that would need arbitrary globals) becomes a `DataError` naming the file.
* `safe_pickle_loads(data, allowed)`: for formats that are pickles by nature (PubChemQCR LMDB values,
  CircuitGCL `.pt` graphs); only the globals in `allowed` may be resolved, anything else is refused with
  an error that names the global, *before* it is imported or called.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from scifm.core.errors import DataError

__all__ = [
    "BUILTIN_GLOBALS",
    "NUMPY_GLOBALS",
    "ForbiddenGlobalError",
    "atomic_output",
    "RestrictedUnpickler",
    "load_checkpoint",
    "safe_pickle_load",
    "safe_pickle_loads",
]

# dict/list/tuple/str/bytes/int/float/bool/None need no global at all (they are pickle opcodes); these
# are the few harmless builtin containers that older protocols spell as globals.
_CONTAINERS = ("set", "frozenset", "bytearray", "complex", "slice", "range")
BUILTIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", n) for n in _CONTAINERS}
    | {("__builtin__", n) for n in _CONTAINERS}  # protocols 0-2 spell builtins the Python 2 way
    | {("collections", "OrderedDict"), ("_codecs", "encode")}  # protocol 2 spells bytes via _codecs.encode
)

# Reconstructing numpy arrays and scalars (numpy 1.x spells the module numpy.core, 2.x numpy._core).
# Object arrays still go through this unpickler for each element, so this does not open a hole.
NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (out-of-band capable) array pickles
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global (class or function) that is not on the allow-list."""

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name
        super().__init__(
            f"pickle asks for the global {module}.{name}, which is not allowed; refusing to load "
            "(loading it could run arbitrary code)"
        )


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only globals listed in `allowed` as (module, name) pairs.

    Persistent ids (torch storages and the like) are refused by the base class already.
    """

    def __init__(self, file: Any, allowed: Iterable[tuple[str, str]] = BUILTIN_GLOBALS, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.allowed = frozenset(_as_pair(a) for a in allowed)

    def find_class(self, module: str, name: str) -> Any:
        # The check happens on the name as written in the file, before anything is imported.
        if (module, name) not in self.allowed:
            raise ForbiddenGlobalError(module, name)
        return super().find_class(module, name)


def _as_pair(item: tuple[str, str] | str) -> tuple[str, str]:
    if isinstance(item, str):  # "module:name" or "module.name" (last dot splits)
        module, sep, name = item.partition(":") if ":" in item else item.rpartition(".")
        if not module or not name:
            raise ValueError(f"allowed global {item!r} must look like 'module.name'")
        return module, name
    module, name = item
    return str(module), str(name)


def safe_pickle_loads(
    data: bytes,
    allowed: Iterable[tuple[str, str] | str] = BUILTIN_GLOBALS,
    *,
    source: object = "<bytes>",
    record: object | None = None,
) -> Any:
    """Unpickle `data` allowing only the globals in `allowed` (default: builtin containers only).

    `source`/`record` only label the error (e.g. the LMDB path and the key). Any refusal or corruption
    raises `DataError(source, problem, record)`; the problem names a refused global as `module.name`.
    Pass `BUILTIN_GLOBALS | NUMPY_GLOBALS` to accept numpy arrays.
    """
    return safe_pickle_load(io.BytesIO(data), allowed, source=source, record=record)


def safe_pickle_load(
    file: Any,
    allowed: Iterable[tuple[str, str] | str] = BUILTIN_GLOBALS,
    *,
    source: object | None = None,
    record: object | None = None,
) -> Any:
    """Like `safe_pickle_loads` for an open binary file (or a path)."""
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        if not path.is_file():
            raise DataError(path, "file not found", record=record)
        with path.open("rb") as fh:
            return safe_pickle_load(fh, allowed, source=path, record=record)
    label = source if source is not None else getattr(file, "name", "<stream>")
    try:
        return RestrictedUnpickler(file, allowed=[_as_pair(a) for a in allowed]).load()
    except ForbiddenGlobalError as exc:
        raise DataError(label, str(exc), record=record) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        ImportError,
    ) as exc:
        raise DataError(
            label, f"corrupt or unreadable pickle ({type(exc).__name__}: {exc})", record=record
        ) from None


def load_checkpoint(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    *,
    safe_globals: Iterable[Callable | type | tuple] = (),
) -> Any:
    """`torch.load(path, weights_only=True)` with clear errors.

    `safe_globals` extends torch's weights-only allow-list for this call (classes whose reconstruction is
    known to be harmless, e.g. a PyG storage class); anything else a file asks for is refused.
    Raises `DataError` for a missing, truncated, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint file not found")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message names the global it refused; keep only its first line.
        first = str(exc).strip().splitlines()
        detail = next(
            (line for line in first if "GLOBAL" in line or "global" in line), first[0] if first else ""
        )
        raise DataError(
            path, f"not a plain tensor checkpoint (refused without weights_only=False): {detail.strip()}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(
            path,
            f"corrupt or unreadable checkpoint ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})",
        ) from None


def is_mapping_of_tensors(obj: Any) -> bool:
    """True for a flat {str: Tensor} mapping (a state dict)."""
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path` (atomic on POSIX).

    On an exception the temporary file is removed and `path` is left untouched, so readers only ever see
    the old or the complete new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
