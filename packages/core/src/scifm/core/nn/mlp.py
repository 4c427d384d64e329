"""Multi-layer perceptron with a named activation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    """An activation module by name (silu, relu, gelu, tanh, softplus, identity)."""
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """Linear -> act -> ... -> Linear. [..., in_features] -> [..., out_features].

    ``hidden`` lists the hidden widths (may be empty: then it is one Linear). The last layer has no
    activation unless ``activate_last``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (),
        activation: str = "silu",
        bias: bool = True,
        activate_last: bool = False,
    ):
        dims = [int(in_features), *[int(h) for h in hidden], int(out_features)]
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            layers.append(nn.Linear(dims[k], dims[k + 1], bias=bias))
            if k < len(dims) - 2 or activate_last:
                layers.append(get_activation(activation))
        super().__init__(*layers)
        self.in_features = dims[0]
        self.out_features = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (same as Sequential)
        return super().forward(x)
