"""MLIP architectures. Importing this package registers every built-in model (see ``registry``)."""

from .bamboo import BAMBOO
from .base import MLIPModel
from .nequip import NequIP
from .painn import PaiNN
from .registry import available_models, build_model, model_class, register_model
from .schnet import SchNet

__all__ = [
    "BAMBOO",
    "MLIPModel",
    "NequIP",
    "PaiNN",
    "SchNet",
    "available_models",
    "build_model",
    "model_class",
    "register_model",
]
