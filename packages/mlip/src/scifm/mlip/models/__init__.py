"""MLIP architectures. Importing this package registers every built-in model (see ``registry``)."""

from .base import MLIPModel
from .painn import PaiNN
from .registry import available_models, build_model, model_class, register_model

__all__ = ["MLIPModel", "PaiNN", "available_models", "build_model", "model_class", "register_model"]
