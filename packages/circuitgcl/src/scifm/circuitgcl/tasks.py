"""Training and evaluation of the downstream tasks (edge regression of Cc, node classification of Cg).

Each design is one full graph (the sky130 designs have 0.2K-6K nodes, small enough for full-graph steps
on a CPU); an epoch takes one optimiser step per training design. The training step is the function
``step_loss(model, batch, criterion) -> (loss, logs)`` so that it can be wrapped in a
``scifm.core.train.Task`` unchanged. 20% of the labelled targets of the training designs are held out for
model selection (best validation MSE for edges, best validation macro-F1 for nodes, as the anchor).
Test designs are never seen by the scaler, the loss statistics, SGRL or model selection.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch

from .graph import CircuitGraph, FeatureScaler, to_class
from .losses import ClassLoss, RegressionLoss
from .metrics import class_metrics, regression_metrics
from .models import CircuitGNN
from .sgrl import SGRL, SGRLConfig, train_sgrl


@dataclass
class TrainConfig:
    edge_loss: str = "mse"  # mse | gai | bmc | bni
    node_loss: str = "ce"  # ce | bsce
    pretrain: str = "none"  # none | sgrl
    hidden: int = 96
    layers: int = 4
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 0.0
    epochs: int = 150
    sigma: float = 0.1  # Balanced-MSE noise sigma on the [0, 1] label
    val_frac: float = 0.2
    use_stats: bool = True
    seed: int = 0
    sgrl: SGRLConfig = field(default_factory=SGRLConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["sgrl"] = SGRLConfig(**d.get("sgrl", {}))
        return cls(**d)


@dataclass
class Batch:
    """One design ready for the model: scaled features, optional frozen embeddings, targets."""

    name: str
    x: torch.Tensor
    node_type: torch.Tensor
    pin_type: torch.Tensor
    rail: torch.Tensor
    edge_index: torch.Tensor
    emb: torch.Tensor | None
    pairs: torch.Tensor  # [2, M]
    edge_y: torch.Tensor  # [M] normalised
    nodes: torch.Tensor  # [K] labelled node ids
    node_y: torch.Tensor  # [K] classes
    edge_train: torch.Tensor  # [M] bool
    node_train: torch.Tensor  # [K] bool


def prepare(
    g: CircuitGraph, scaler: FeatureScaler, emb: torch.Tensor | None, val_frac: float, gen: torch.Generator
) -> Batch:
    nodes = g.cg_mask.nonzero().flatten()
    m, k = g.cc_index.shape[1], len(nodes)
    return Batch(
        g.name,
        scaler.transform(g),
        g.node_type,
        g.pin_type,
        g.rail,
        g.edge_index,
        emb,
        g.cc_index,
        g.edge_label(),
        nodes,
        to_class(g.node_label()[nodes]),
        torch.rand(m, generator=gen) >= val_frac,
        torch.rand(k, generator=gen) >= val_frac,
    )


def forward(model: CircuitGNN, b: Batch) -> torch.Tensor:
    return model(
        b.x, b.node_type, b.pin_type, b.rail, b.edge_index, b.emb, b.pairs if model.task == "edge" else None
    )


def step_loss(model: CircuitGNN, b: Batch, criterion, gen=None) -> tuple[torch.Tensor, dict]:
    out = forward(model, b)
    if model.task == "edge":
        sel = b.edge_train
        loss = criterion(out[sel], b.edge_y[sel], gen)
    else:
        sel = b.node_train
        loss = criterion(out[b.nodes[sel]], b.node_y[sel], gen)
    return loss, {"loss": float(loss.detach())}


@torch.no_grad()
def predict(model: CircuitGNN, b: Batch) -> torch.Tensor:
    """Edge task: [M] predicted labels; node task: [K] predicted classes of the labelled nodes."""
    model.eval()
    out = forward(model, b)
    model.train()
    return out if model.task == "edge" else out[b.nodes].argmax(-1)


def _val_score(model: CircuitGNN, batches: list[Batch]) -> float:
    """Higher is better: -MSE (edges) or macro-F1 (nodes) on the held-out 20% of training targets."""
    preds, ys = [], []
    for b in batches:
        p = predict(model, b)
        if model.task == "edge":
            preds.append(p[~b.edge_train])
            ys.append(b.edge_y[~b.edge_train])
        else:
            preds.append(p[~b.node_train])
            ys.append(b.node_y[~b.node_train])
    p, y = torch.cat(preds), torch.cat(ys)
    if len(y) == 0:
        return 0.0
    if model.task == "edge":
        return -regression_metrics(p, y)["mse"]
    return class_metrics(p, y)["macro_f1"]


def train_task(task: str, batches: list[Batch], cfg: TrainConfig, log=None) -> tuple[CircuitGNN, dict]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    sgrl_dim = batches[0].emb.shape[1] if batches[0].emb is not None else 0
    model = CircuitGNN(task, cfg.hidden, cfg.layers, cfg.dropout, sgrl_dim, cfg.use_stats)
    if task == "edge":
        train_y = torch.cat([b.edge_y[b.edge_train] for b in batches])
        criterion = RegressionLoss(cfg.edge_loss, train_y, sigma=cfg.sigma)
    else:
        train_y = torch.cat([b.node_y[b.node_train] for b in batches])
        criterion = ClassLoss(cfg.node_loss, train_y)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, history = -float("inf"), None, []
    t0 = time.time()
    for epoch in range(cfg.epochs):
        losses = []
        for i in torch.randperm(len(batches), generator=gen).tolist():
            loss, _ = step_loss(model, batches[i], criterion, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        score = _val_score(model, batches)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_score": score})
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
        if log and (epoch % 25 == 0 or epoch == cfg.epochs - 1):
            log(f"[{task}] epoch {epoch} loss {history[-1]['train_loss']:.4f} val {score:.4f}")
    model.load_state_dict(best_state)
    model.eval()
    return model, {
        "history": history,
        "best_val": best,
        "time_s": time.time() - t0,
        "criterion_state": criterion.state(),
    }


def evaluate(edge_model: CircuitGNN | None, node_model: CircuitGNN | None, batches: list[Batch]) -> dict:
    """Per-design and pooled test metrics on ALL labelled targets of each design."""
    per, ep, ey, nps, nys = {}, [], [], [], []
    for b in batches:
        rec: dict = {"n_nodes": int(b.node_type.numel())}
        if edge_model is not None and b.pairs.shape[1] > 0:
            p = predict(edge_model, b)
            rec["edge"] = regression_metrics(p, b.edge_y)
            ep.append(p)
            ey.append(b.edge_y)
        if node_model is not None and len(b.nodes) > 0:
            p = predict(node_model, b)
            rec["node"] = class_metrics(p, b.node_y)
            nps.append(p)
            nys.append(b.node_y)
        per[b.name] = rec
    out: dict = {"per_design": per, "n_test_designs": len(batches)}
    if ep:
        r = regression_metrics(torch.cat(ep), torch.cat(ey))
        out.update(edge_r2=r["r2"], edge_mae=r["mae"], edge_mse=r["mse"], edge_n=r["n"])
        out["edge_r2_design_mean"] = sum(v["edge"]["r2"] for v in per.values() if "edge" in v) / len(ep)
    if nps:
        c = class_metrics(torch.cat(nps), torch.cat(nys))
        out.update(node_macro_f1=c["macro_f1"], node_accuracy=c["accuracy"], node_n=c["n"])
        out["node_macro_f1_design_mean"] = sum(
            v["node"]["macro_f1"] for v in per.values() if "node" in v
        ) / len(nps)
    return out


@dataclass
class Trained:
    cfg: TrainConfig
    scaler: FeatureScaler
    sgrl: SGRL | None
    edge_model: CircuitGNN
    node_model: CircuitGNN
    info: dict

    def batches(self, graphs: list[CircuitGraph], seed: int = 0) -> list[Batch]:
        gen = torch.Generator().manual_seed(seed)
        return [
            prepare(
                g, self.scaler, self.sgrl.embed(g.node_type, g.edge_index) if self.sgrl else None, 0.0, gen
            )
            for g in graphs
        ]


def fit_circuitgcl(train_graphs: list[CircuitGraph], cfg: TrainConfig, log=None) -> Trained:
    """Scaler on training designs -> optional SGRL pre-training -> edge model and node model."""
    scaler = FeatureScaler().fit(train_graphs)
    sgrl, info = None, {}
    if cfg.pretrain == "sgrl":
        t0 = time.time()
        sgrl, hist = train_sgrl(train_graphs, cfg.sgrl, seed=cfg.seed, log=None)
        info["sgrl"] = {"history": hist, "time_s": time.time() - t0}
        if log:
            log(
                f"[sgrl] {len(hist)} epochs, last L_RS {hist[-1]['loss_rs']:.4f} "
                f"L_AL {hist[-1]['loss_al']:.4f}"
            )
    elif cfg.pretrain != "none":
        raise ValueError(f"pretrain must be 'sgrl' or 'none', not {cfg.pretrain!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = [
        prepare(g, scaler, sgrl.embed(g.node_type, g.edge_index) if sgrl else None, cfg.val_frac, gen)
        for g in train_graphs
    ]
    edge_model, info["edge"] = train_task("edge", batches, cfg, log)
    node_model, info["node"] = train_task("node", batches, cfg, log)
    return Trained(cfg, scaler, sgrl, edge_model, node_model, info)
