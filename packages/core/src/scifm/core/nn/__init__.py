"""Shared neural-network layers: radial bases, cutoffs, scatter, MLP, e3nn equivariant blocks."""

from .cutoff import CosineCutoff, PolynomialCutoff
from .e3nn_blocks import ConvGateBlock, GateNonlinearity, SphericalHarmonicEdgeAttrs, TensorProductConv
from .mlp import MLP, get_activation
from .radial import BesselBasis, GaussianBasis
from .scatter import scatter_mean, scatter_sum

__all__ = [
    "BesselBasis",
    "GaussianBasis",
    "CosineCutoff",
    "PolynomialCutoff",
    "scatter_sum",
    "scatter_mean",
    "MLP",
    "get_activation",
    "SphericalHarmonicEdgeAttrs",
    "TensorProductConv",
    "GateNonlinearity",
    "ConvGateBlock",
]
