"""Training and evaluation of the downstream tasks (edge regression of Cc, node classification of Cg).

Each design is one full graph (the sky130 designs have 0.2K-6K nodes, small enough for full-graph steps
on a CPU); an epoch takes one optimiser step per training design. The training step is the function
``step_loss(model, batch, criterion) -> (loss, logs)`` so that it can be wrapped in a
``scifm.core.train.Task`` unchanged. Model selection (best validation MSE for edges, best validation
macro-F1 for nodes, as the anchor) uses either 20% random targets of the training designs (the anchor's
split) or, with ``val_designs``, whole training designs that are then never trained on: in a transfer
setting a random-target split measures interpolation inside known designs and picks over-fitted epochs.
Test designs are never seen by the scaler, the loss statistics or model selection; SGRL sees their
unlabelled graphs only with ``sgrl_transductive`` (the anchor code's protocol, no labels involved).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from .graph import PAIR_FEATURES, CircuitGraph, FeatureScaler, pair_features, to_class
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
    edge_head: str = "sym"  # sym | concat (anchor); see models.CircuitGNN
    pair_features: bool = True  # topological pair descriptors (graph.pair_features) for the edge head
    val_designs: list[str] = field(default_factory=list)  # training designs held out for model selection
    patience: int = 0  # early stopping after this many epochs without validation gain (0: off)
    cc_floor: float = 0.0  # common coupling floor in farads (CircuitGraph.restrict_cc); 0: keep all
    sgrl_transductive: bool = False  # SGRL also on the unlabelled test graphs (anchor code's protocol)
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
    pair_x: torch.Tensor  # [M, len(PAIR_FEATURES)]
    edge_y: torch.Tensor  # [M] normalised
    nodes: torch.Tensor  # [K] labelled node ids
    node_y: torch.Tensor  # [K] classes
    edge_train: torch.Tensor  # [M] bool
    node_train: torch.Tensor  # [K] bool


def prepare(
    g: CircuitGraph,
    scaler: FeatureScaler,
    emb: torch.Tensor | None,
    val_frac: float,
    gen: torch.Generator,
    val_design: bool = False,
) -> Batch:
    """``val_design``: every target is a validation target (none is trained on)."""
    nodes = g.cg_mask.nonzero().flatten()
    m, k = g.cc_index.shape[1], len(nodes)
    edge_train = torch.rand(m, generator=gen) >= val_frac
    node_train = torch.rand(k, generator=gen) >= val_frac
    if val_design:
        edge_train[:], node_train[:] = False, False
    return Batch(
        g.name,
        scaler.transform(g),
        g.node_type,
        g.pin_type,
        g.rail,
        g.edge_index,
        emb,
        g.cc_index,
        pair_features(g, g.cc_index),
        g.edge_label(),
        nodes,
        to_class(g.node_label()[nodes]),
        edge_train,
        node_train,
    )


def forward(model: CircuitGNN, b: Batch) -> torch.Tensor:
    edge = model.task == "edge"
    return model(
        b.x,
        b.node_type,
        b.pin_type,
        b.rail,
        b.edge_index,
        b.emb,
        b.pairs if edge else None,
        b.pair_x if edge and model.pair_dim else None,
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
        if bool((b.edge_train if model.task == "edge" else b.node_train).all()):
            continue  # no validation targets here: skip the forward pass
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


def model_arch(task: str, cfg: TrainConfig, sgrl_dim: int) -> dict:
    """Constructor arguments of the ``CircuitGNN`` for ``task`` (also what the CLI exports)."""
    return {
        "task": task,
        "hidden": cfg.hidden,
        "layers": cfg.layers,
        "dropout": cfg.dropout,
        "sgrl_dim": sgrl_dim,
        "use_stats": cfg.use_stats,
        "edge_head": cfg.edge_head,
        "pair_dim": len(PAIR_FEATURES) if cfg.pair_features and task == "edge" else 0,
    }


def train_task(task: str, batches: list[Batch], cfg: TrainConfig, log=None) -> tuple[CircuitGNN, dict]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    sgrl_dim = batches[0].emb.shape[1] if batches[0].emb is not None else 0
    model = CircuitGNN(**model_arch(task, cfg, sgrl_dim))
    if task == "edge":
        train_y = torch.cat([b.edge_y[b.edge_train] for b in batches])
        criterion = RegressionLoss(cfg.edge_loss, train_y, sigma=cfg.sigma)
    else:
        train_y = torch.cat([b.node_y[b.node_train] for b in batches])
        criterion = ClassLoss(cfg.node_loss, train_y)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, history, stale = -float("inf"), None, [], 0
    t0 = time.time()
    trainable = [
        i for i, b in enumerate(batches) if bool((b.edge_train if task == "edge" else b.node_train).any())
    ]
    for epoch in range(cfg.epochs):
        losses = []
        for i in [trainable[j] for j in torch.randperm(len(trainable), generator=gen).tolist()]:
            loss, _ = step_loss(model, batches[i], criterion, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        score = _val_score(model, batches)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_score": score})
        if score > best:
            best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if log and (epoch % 25 == 0 or epoch == cfg.epochs - 1):
            log(f"[{task}] epoch {epoch} loss {history[-1]['train_loss']:.4f} val {score:.4f}")
        if cfg.patience and stale >= cfg.patience:
            break
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
        r2s = sorted(v["edge"]["r2"] for v in per.values() if "edge" in v)
        # the anchor reports R^2 per test design; their mean is dominated by designs with tiny label
        # variance (rc_osc_500k: std 0.027), so the median is given as well
        out["edge_r2_design_mean"] = sum(r2s) / len(r2s)
        out["edge_r2_design_median"] = statistics.median(r2s)
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
        """Test batches: the training config's coupling floor applied, every target scored."""
        gen = torch.Generator().manual_seed(seed)
        out = []
        for g in graphs:
            g = g.restrict_cc(self.cfg.cc_floor) if self.cfg.cc_floor > 0 else g
            out.append(
                prepare(
                    g,
                    self.scaler,
                    self.sgrl.embed(g.node_type, g.edge_index) if self.sgrl else None,
                    0.0,
                    gen,
                )
            )
        return out


def fit_circuitgcl(
    train_graphs: list[CircuitGraph],
    cfg: TrainConfig,
    log=None,
    unlabelled: list[CircuitGraph] | tuple = (),
) -> Trained:
    """Scaler on training designs -> optional SGRL pre-training -> edge model and node model.

    ``unlabelled``: graphs (e.g. the test designs) whose topology SGRL may also see when
    ``cfg.sgrl_transductive``; their labels are never read. Ignored otherwise.
    """
    if cfg.cc_floor > 0:
        train_graphs = [g.restrict_cc(cfg.cc_floor) for g in train_graphs]
    names = {g.name for g in train_graphs}
    missing = [v for v in cfg.val_designs if v not in names]
    if missing:
        raise ValueError(f"validation designs not among the training graphs: {', '.join(missing)}")
    if cfg.val_designs and len(cfg.val_designs) == len(train_graphs):
        raise ValueError("every training design is a validation design; nothing left to train on")
    scaler = FeatureScaler().fit(train_graphs)
    sgrl, info = None, {}
    if cfg.pretrain == "sgrl":
        t0 = time.time()
        pool = list(train_graphs) + (list(unlabelled) if cfg.sgrl_transductive else [])
        sgrl, hist = train_sgrl(pool, cfg.sgrl, seed=cfg.seed, log=None)
        info["sgrl"] = {"history": hist, "time_s": time.time() - t0, "graphs": [g.name for g in pool]}
        if log:
            log(
                f"[sgrl] {len(hist)} epochs, last L_RS {hist[-1]['loss_rs']:.4f} "
                f"L_AL {hist[-1]['loss_al']:.4f}"
            )
    elif cfg.pretrain != "none":
        raise ValueError(f"pretrain must be 'sgrl' or 'none', not {cfg.pretrain!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = [
        prepare(
            g,
            scaler,
            sgrl.embed(g.node_type, g.edge_index) if sgrl else None,
            0.0 if cfg.val_designs else cfg.val_frac,
            gen,
            val_design=g.name in cfg.val_designs,
        )
        for g in train_graphs
    ]
    edge_model, info["edge"] = train_task("edge", batches, cfg, log)
    node_model, info["node"] = train_task("node", batches, cfg, log)
    return Trained(cfg, scaler, sgrl, edge_model, node_model, info)
