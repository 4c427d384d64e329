"""Shared neural-network layers: radial bases, cutoffs, scatter, MLP, e3nn equivariant blocks.

The e3nn blocks are imported lazily (``from scifm.core.nn import TensorProductConv`` still works) so
that models that do not need e3nn do not pay for importing it.
"""

from .cutoff import CosineCutoff, PolynomialCutoff
from .mlp import MLP, get_activation
from .radial import BesselBasis, GaussianBasis
from .scatter import scatter_mean, scatter_sum

_E3NN = ("SphericalHarmonicEdgeAttrs", "TensorProductConv", "GateNonlinearity", "ConvGateBlock")


def __getattr__(name: str):
    if name in _E3NN:
        from . import e3nn_blocks

        return getattr(e3nn_blocks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BesselBasis",
    "GaussianBasis",
    "CosineCutoff",
    "PolynomialCutoff",
    "scatter_sum",
    "scatter_mean",
    "MLP",
    "get_activation",
    *_E3NN,
]
