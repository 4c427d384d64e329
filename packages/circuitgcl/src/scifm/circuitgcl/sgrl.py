"""Self-supervised stage: SGRL-style representation scattering (anchor section 2).

Two separately initialised encoders see only the node type (as CircuitGCL): the *target* encoder is
trained to scatter its L2-normalised embeddings u_i away from the batch mean c (L_RS = -(1/B) sum_i
||u_i - c||^2 = ||c||^2 - 1); the *online* encoder plus a predictor q is trained to align with the target
(L_AL = -(1/B) sum_i cos(q(h_i), sg(z_i))); after every epoch the target moves toward the online encoder
by EMA (target <- m target + (1 - m) online). Mini-batches are k-hop sub-graphs (``sampling.py``).
The frozen online embeddings of every node become extra inputs of the downstream model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import ClusterGCNConv, GCNConv, SAGEConv

from .sampling import Adjacency, khop_batches

N_TYPE_IDS = 6  # CircuitGCL's Embedding(6, d) over node-type ids


class SGRLEncoder(nn.Module):
    """Embedding(node type) -> layers x (conv -> tanh -> dropout). [N] -> [N, dim]."""

    def __init__(self, dim: int = 256, layers: int = 4, conv: str = "clustergcn", dropout: float = 0.3):
        super().__init__()
        make = {"clustergcn": ClusterGCNConv, "gcn": GCNConv, "sage": SAGEConv}[conv]
        self.emb = nn.Embedding(N_TYPE_IDS, dim)
        self.convs = nn.ModuleList(make(dim, dim) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, node_type: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.emb(node_type)
        for conv in self.convs:
            h = self.dropout(torch.tanh(conv(h, edge_index)))
        return h


def scattering_loss(z: torch.Tensor) -> torch.Tensor:
    """L_RS = -(1/B) sum_i ||u_i - c||^2 with u_i = z_i/||z_i||, c = mean_i u_i (not detached)."""
    u = F.normalize(z, dim=-1)
    c = u.mean(0, keepdim=True)
    return -((u - c) ** 2).sum(-1).mean()


def alignment_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """L_AL = -(1/B) sum_i cos(p_i, sg(z_i))."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(m).add_(o, alpha=1.0 - m)


@dataclass
class SGRLConfig:
    dim: int = 256
    layers: int = 4
    conv: str = "clustergcn"
    dropout: float = 0.3
    lr_online: float = 1e-3  # anchor: 1e-6 over 800 epochs; scaled up for a CPU budget of tens of epochs
    lr_target: float = 2e-4  # anchor ratio online:target = 5:1 kept
    ema: float = 0.99
    epochs: int = 20
    batch_size: int = 1024
    hops: int = 4
    fanout: int = 64
    patience: int = 20


class SGRL(nn.Module):
    def __init__(self, cfg: SGRLConfig):
        super().__init__()
        self.cfg = cfg
        self.online = SGRLEncoder(cfg.dim, cfg.layers, cfg.conv, cfg.dropout)
        self.target = SGRLEncoder(cfg.dim, cfg.layers, cfg.conv, cfg.dropout)
        self.predictor = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.PReLU(), nn.Linear(cfg.dim, cfg.dim))

    @torch.no_grad()
    def embed(self, node_type: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Frozen online-encoder embeddings [N, dim] (eval mode, full graph)."""
        was = self.online.training
        self.online.eval()
        h = self.online(node_type, edge_index)
        self.online.train(was)
        return h


def train_sgrl(graphs: list, cfg: SGRLConfig, seed: int = 0, log=None) -> tuple[SGRL, list[dict]]:
    """Pre-train on the disjoint union of ``graphs`` (CircuitGraph); returns the best-online-loss model."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SGRL(cfg)
    node_type = torch.cat([g.node_type for g in graphs])
    offs, eis = 0, []
    for g in graphs:
        eis.append(g.edge_index + offs)
        offs += g.num_nodes
    adj = Adjacency(torch.cat(eis, 1), offs)
    opt_on = torch.optim.Adam([*model.online.parameters(), *model.predictor.parameters()], lr=cfg.lr_online)
    opt_t = torch.optim.Adam(model.target.parameters(), lr=cfg.lr_target)
    history, best, best_state, stale = [], float("inf"), None, 0
    for epoch in range(cfg.epochs):
        t0, rs_sum, al_sum, nb = time.time(), 0.0, 0.0, 0
        model.train()
        for sub in khop_batches(adj, cfg.batch_size, cfg.hops, cfg.fanout, gen):
            nt = node_type[sub.nodes]
            l_rs = scattering_loss(model.target(nt, sub.edge_index))
            opt_t.zero_grad()
            l_rs.backward()
            opt_t.step()
            with torch.no_grad():
                z = model.target(nt, sub.edge_index)
            l_al = alignment_loss(model.predictor(model.online(nt, sub.edge_index)), z)
            opt_on.zero_grad()
            l_al.backward()
            opt_on.step()
            rs_sum, al_sum, nb = rs_sum + float(l_rs), al_sum + float(l_al), nb + 1
        ema_update(model.target, model.online, cfg.ema)
        rec = {"epoch": epoch, "loss_rs": rs_sum / nb, "loss_al": al_sum / nb, "time_s": time.time() - t0}
        history.append(rec)
        if log:
            log(rec)
        if rec["loss_al"] < best:
            best, stale = rec["loss_al"], 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if (rec["loss_rs"] < -0.99 and rec["loss_al"] < -0.99) or stale >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, history
