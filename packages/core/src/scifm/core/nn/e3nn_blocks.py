"""E(3)-equivariant building blocks on top of e3nn: edge spherical harmonics, a tensor-product
convolution whose weights come from a radial MLP, and a gated nonlinearity (NequIP-style).

Feature tensors are flat e3nn irreps arrays: x [N, irreps.dim]. Edges follow the core graph convention:
edge_index[0] = neighbour j (source), edge_index[1] = centre i (receiver), edge_vec = r_j - r_i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from .mlp import MLP, get_activation
from .scatter import scatter_sum


class SphericalHarmonicEdgeAttrs(nn.Module):
    """Real spherical harmonics Y_l(r_hat), l = 0..lmax, of the edge directions.

    edge_vec [E, 3] (Å) -> [E, (lmax+1)^2] with irreps 1x0e + 1x1o + 1x2e + ... (parity (-1)^l).
    ``normalization="component"`` makes every component of unit mean square over the sphere.
    """

    def __init__(self, lmax: int, normalize: bool = True, normalization: str = "component"):
        super().__init__()
        self.lmax = int(lmax)
        self.irreps_out = o3.Irreps.spherical_harmonics(self.lmax, p=-1)
        self.normalize = normalize
        self.normalization = normalization

    def forward(self, edge_vec: torch.Tensor) -> torch.Tensor:
        return o3.spherical_harmonics(
            self.irreps_out, edge_vec, self.normalize, normalization=self.normalization
        )


def _conv_instructions(irreps_in: o3.Irreps, irreps_edge: o3.Irreps, irreps_out: o3.Irreps):
    """'uvu' paths (one weight per channel) from irreps_in x irreps_edge onto every irrep type present
    in irreps_out; returns the mid irreps (sorted) and the instructions pointing into them."""
    mid: list[tuple[int, o3.Irrep]] = []
    instructions = []
    out_types = {ir for _, ir in irreps_out}
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_edge) in enumerate(irreps_edge):
            for ir_out in ir_in * ir_edge:
                if ir_out in out_types:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    if not instructions:
        raise ValueError(f"no tensor-product path from {irreps_in} x {irreps_edge} reaches {irreps_out}")
    irreps_mid = o3.Irreps(mid)
    irreps_mid, perm, _ = irreps_mid.sort()
    instructions = [(i1, i2, perm[k], mode, train) for i1, i2, k, mode, train in instructions]
    return irreps_mid, instructions


class TensorProductConv(nn.Module):
    """Equivariant convolution (NequIP):

        m_ij = TP_w(r_ij)(W1 x_j, Y(r_hat_ij)),    x_i' = W2 (sum_j m_ij / sqrt(avg_num_neighbors)) + SC(x_i)

    The per-edge weights w(r_ij) = MLP(edge_scalars) come from a bias-free radial MLP, so when the edge
    scalars (radial basis times cutoff) vanish at the cutoff, so does the message: the model stays smooth.
    SC is a linear self-connection, or a tensor product with node attributes (e.g. one-hot species)
    when ``irreps_node_attr`` is given.

    Shapes: x [N, irreps_in.dim], edge_attr [E, irreps_edge.dim], edge_scalars [E, n_scalars],
    edge_index [2, E], node_attr [N, irreps_node_attr.dim] -> [N, irreps_out.dim].
    """

    def __init__(
        self,
        irreps_in,
        irreps_edge,
        irreps_out,
        n_scalars: int,
        radial_hidden: Sequence[int] = (64,),
        radial_activation: str = "silu",
        avg_num_neighbors: float = 1.0,
        irreps_node_attr=None,
        self_connection: bool = True,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_edge = o3.Irreps(irreps_edge)
        self.irreps_out = o3.Irreps(irreps_out)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        irreps_mid, instructions = _conv_instructions(self.irreps_in, self.irreps_edge, self.irreps_out)
        self.tp = o3.TensorProduct(
            self.irreps_in,
            self.irreps_edge,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = MLP(
            n_scalars, self.tp.weight_numel, hidden=radial_hidden, activation=radial_activation, bias=False
        )
        self.linear_out = o3.Linear(irreps_mid, self.irreps_out)
        self.irreps_node_attr = None if irreps_node_attr is None else o3.Irreps(irreps_node_attr)
        if self.irreps_node_attr is not None:
            self.self_connection = o3.FullyConnectedTensorProduct(
                self.irreps_in, self.irreps_node_attr, self.irreps_out
            )
        elif self_connection:
            self.self_connection = o3.Linear(self.irreps_in, self.irreps_out)
        else:
            self.self_connection = None

    def forward(
        self,
        x: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_scalars: torch.Tensor,
        edge_index: torch.Tensor,
        node_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        src, dst = edge_index[0], edge_index[1]
        h = self.linear_in(x)
        messages = self.tp(h[src], edge_attr, self.radial(edge_scalars))
        agg = scatter_sum(messages, dst, dim=0, dim_size=x.shape[0]) / math.sqrt(self.avg_num_neighbors)
        out = self.linear_out(agg)
        if self.self_connection is not None:
            if self.irreps_node_attr is not None:
                if node_attr is None:
                    raise ValueError("this convolution was built with irreps_node_attr: pass node_attr")
                out = out + self.self_connection(x, node_attr)
            else:
                out = out + self.self_connection(x)
        return out


class GateNonlinearity(nn.Module):
    """Gated nonlinearity for a target irreps (Weiler et al. 2018, as in NequIP).

    Scalars (l = 0) pass through an activation (``act_even`` for 0e, odd ``act_odd`` for 0o so parity
    is kept); every l > 0 irrep is multiplied by its own sigmoid gate, an extra 0e scalar.
    ``irreps_in`` is what the preceding layer must produce: scalars + gates + gated; ``irreps_out`` is
    the target (simplified). [N, irreps_in.dim] -> [N, irreps_out.dim].
    """

    def __init__(
        self, irreps_target, act_even: str = "silu", act_odd: str = "tanh", act_gate: str = "sigmoid"
    ):
        super().__init__()
        target = o3.Irreps(irreps_target).simplify()
        scalars = o3.Irreps([(mul, ir) for mul, ir in target if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in target if ir.l > 0])
        gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
        acts = {1: _act(act_even), -1: _act(act_odd)}
        gate_act = torch.sigmoid if act_gate == "sigmoid" else _act(act_gate)
        self.gate = Gate(scalars, [acts[ir.p] for _, ir in scalars], gates, [gate_act] * len(gates), gated)
        self.irreps_in = self.gate.irreps_in
        self.irreps_out = self.gate.irreps_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x)


def _act(name: str):
    if name == "tanh":
        return torch.tanh
    module = get_activation(name)
    return module.forward


class ConvGateBlock(nn.Module):
    """One NequIP interaction: TensorProductConv onto the gate's input irreps, then the gate, with a
    residual connection when input and output irreps agree. Same shapes as TensorProductConv."""

    def __init__(
        self,
        irreps_in,
        irreps_edge,
        irreps_target,
        n_scalars: int,
        radial_hidden: Sequence[int] = (64,),
        avg_num_neighbors: float = 1.0,
        irreps_node_attr=None,
        resnet: bool = True,
    ):
        super().__init__()
        self.gate = GateNonlinearity(irreps_target)
        self.conv = TensorProductConv(
            irreps_in,
            irreps_edge,
            self.gate.irreps_in,
            n_scalars,
            radial_hidden=radial_hidden,
            avg_num_neighbors=avg_num_neighbors,
            irreps_node_attr=irreps_node_attr,
        )
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.resnet = resnet and self.irreps_in == self.irreps_out

    def forward(self, x, edge_attr, edge_scalars, edge_index, node_attr=None):
        out = self.gate(self.conv(x, edge_attr, edge_scalars, edge_index, node_attr))
        return x + out if self.resnet else out
