"""Name -> model class registry. Models register themselves; nothing central needs editing.

@register_model("painn")
class PaiNN(MLIPModel): ...

build_model("painn", cutoff=5.0, elements=[1, 6, 8])   # == PaiNN.from_config({...})
"""

from __future__ import annotations

from scifm.core.errors import ConfigError

_REGISTRY: dict[str, type] = {}


def register_model(name: str):
    """Class decorator: make ``cls`` buildable as ``build_model(name, **config)``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} already registered by {_REGISTRY[name].__qualname__}")
        for attr in ("from_config", "tiny_config"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__qualname__} must define {attr}() to be registered")
        _REGISTRY[name] = cls
        cls.model_name = name
        return cls

    return deco


def _load_builtin() -> None:
    # Importing the package registers the built-in models (each module applies @register_model).
    import scifm.mlip.models  # noqa: F401


def available_models() -> list[str]:
    """Sorted names of all registered models."""
    _load_builtin()
    return sorted(_REGISTRY)


def model_class(name: str) -> type:
    """The class registered under ``name``; ConfigError listing the choices otherwise."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def build_model(name: str, **config):
    """Instantiate model ``name`` from its config dict (keys = constructor arguments)."""
    return model_class(name).from_config(config)
