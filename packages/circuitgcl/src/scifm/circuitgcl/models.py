"""Downstream model: node-input encoder + GraphSAGE backbone + edge-regression / node-classification heads.

Input encoding (anchor section 1.3): a node-type embedding, the circuit statistics (one Linear for net
rows, one for device rows, embeddings of pin type and rail flag for pin rows) and, optionally, frozen SGRL
embeddings through a Linear; the parts are concatenated (each ``hidden // n_parts`` wide).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import SAGEConv

from .graph import DEV, N_FEAT, N_PIN_TYPES, NET, PIN


class NodeInput(nn.Module):
    """[N] types + [N, 17] scaled stats (+ [N, E] embeddings) -> [N, hidden]."""

    def __init__(self, hidden: int, sgrl_dim: int = 0, use_stats: bool = True):
        super().__init__()
        n_parts = 1 + int(use_stats) + int(sgrl_dim > 0)
        part = hidden // n_parts
        self.use_stats, self.sgrl_dim, self.out_dim = use_stats, sgrl_dim, part * n_parts
        self.type_emb = nn.Embedding(3, part)
        if use_stats:
            self.net_lin = nn.Linear(N_FEAT, part)
            self.dev_lin = nn.Linear(N_FEAT, part)
            self.pin_emb = nn.Embedding(N_PIN_TYPES, part)
            self.rail_emb = nn.Embedding(2, part)
        if sgrl_dim:
            self.sgrl_lin = nn.Linear(sgrl_dim, part)

    def forward(self, x, node_type, pin_type, rail, emb=None):
        parts = [self.type_emb(node_type)]
        if self.use_stats:
            s = torch.zeros(len(x), self.net_lin.out_features, dtype=x.dtype, device=x.device)
            m = node_type == NET
            s[m] = self.net_lin(x[m])
            m = node_type == DEV
            s[m] = self.dev_lin(x[m])
            m = node_type == PIN
            s[m] = self.pin_emb(pin_type[m]) + self.rail_emb(rail[m].clamp(0, 1))
            parts.append(s)
        if self.sgrl_dim:
            parts.append(self.sgrl_lin(emb))
        return torch.cat(parts, dim=-1)


def mlp(d_in: int, hidden: int, d_out: int, layers: int = 2, dropout: float = 0.0) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.PReLU(), nn.Dropout(dropout)]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class GraphSAGE(nn.Module):
    """``layers`` x (SAGEConv -> PReLU -> dropout). [N, d] -> [N, d]."""

    def __init__(self, hidden: int, layers: int = 4, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(SAGEConv(hidden, hidden) for _ in range(layers))
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, edge_index):
        for conv, act in zip(self.convs, self.acts, strict=True):
            h = self.dropout(act(conv(h, edge_index)))
        return h


class CircuitGNN(nn.Module):
    """Task ``edge``: pred [M] for pairs ``pairs`` [2, M]; task ``node``: logits [N, n_classes].

    Edge heads: ``concat`` is the anchor's head(h_a || h_b); it depends on which endpoint is listed first,
    which for net-net pairs is an arbitrary index order, so the same pair gets two different predictions.
    ``sym`` (default) uses head(h_a + h_b || h_a * h_b || pair_x), invariant to swapping the endpoints;
    ``pair_x`` [M, pair_dim] are topological pair descriptors (``graph.pair_features``).
    """

    def __init__(
        self,
        task: str = "edge",
        hidden: int = 144,
        layers: int = 4,
        dropout: float = 0.1,
        sgrl_dim: int = 0,
        use_stats: bool = True,
        n_classes: int = 5,
        head_layers: int = 2,
        edge_head: str = "concat",
        pair_dim: int = 0,
    ):
        super().__init__()
        if task not in ("edge", "node"):
            raise ValueError(f"task must be 'edge' or 'node', not {task!r}")
        if edge_head not in ("concat", "sym"):
            raise ValueError(f"edge_head must be 'concat' or 'sym', not {edge_head!r}")
        self.task, self.edge_head, self.pair_dim = task, edge_head, pair_dim
        self.input = NodeInput(hidden, sgrl_dim, use_stats)
        d = self.input.out_dim
        self.backbone = GraphSAGE(d, layers, dropout)
        if task == "edge":
            self.head = mlp(2 * d + pair_dim, d, 1, head_layers, dropout if edge_head == "sym" else 0.0)
        else:
            self.head = mlp(d, d, n_classes, head_layers)

    def forward(self, x, node_type, pin_type, rail, edge_index, emb=None, pairs=None, pair_x=None):
        h = self.backbone(self.input(x, node_type, pin_type, rail, emb), edge_index)
        if self.task == "node":
            return self.head(h)
        a, b = h[pairs[0]], h[pairs[1]]
        if self.edge_head == "concat":
            z = torch.cat([a, b], dim=-1)
        else:
            z = torch.cat([a + b, a * b], dim=-1)
        if self.pair_dim:
            z = torch.cat([z, pair_x.to(z)], dim=-1)
        return self.head(z).squeeze(-1)
