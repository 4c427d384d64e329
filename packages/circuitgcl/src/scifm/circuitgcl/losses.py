"""Training losses: MSE, Balanced MSE (GAI, BMC, BNI; Ren et al., CVPR 2022) and balanced softmax CE.

Notation: ``pred`` [B] predictions and ``y`` [B] targets on the normalised [0, 1] label; ``s2`` = noise
variance sigma^2 (fixed, not learned, as CircuitGCL runs it). Every Balanced-MSE form is multiplied by
2*s2 so that its scale matches the MSE, as in the reference code.

- GAI: mean_i [ (p_i - y_i)^2 / (2 s2) + 0.5 log s2
                + logsumexp_k( log pi_k - 0.5 log(v_k + s2) - (p_i - mu_k)^2 / (2 (v_k + s2)) ) ] * 2 s2
  with a K-component 1-D Gaussian mixture (pi, mu, v) fitted to the training labels (``fit_gmm``).
- BMC (the paper's batch-contrastive form, not CircuitGCL's element-wise variant):
  logits_ij = -(p_i - y_j)^2 / (2 s2) over all pairs of the batch; loss = CE(logits, i) * 2 s2.
- BNI: mean_i [ (p_i - y_i)^2 / (2 s2) + logsumexp_b( log w_b - (p_i - c_b)^2 / (2 s2) ) ] * 2 s2
  with bucket centres c_b = b / (n_buckets - 1) and w_b the training label frequencies per bucket.
- Balanced softmax CE: CE(logits + log n_c, y) with class counts n_c of the training labels;
  predictions use the raw logits (no prior), so the rare classes are no longer drowned by the frequent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REGRESSION_LOSSES = ("mse", "gai", "bmc", "bni")
CLASS_LOSSES = ("ce", "bsce")


@dataclass
class GMM:
    """1-D Gaussian mixture: weights pi [K], means mu [K], variances var [K]."""

    pi: torch.Tensor
    mu: torch.Tensor
    var: torch.Tensor

    def state(self) -> dict[str, list[float]]:
        return {"pi": self.pi.tolist(), "mu": self.mu.tolist(), "var": self.var.tolist()}

    @classmethod
    def from_state(cls, s: dict) -> GMM:
        return cls(*(torch.tensor(s[k], dtype=torch.float32) for k in ("pi", "mu", "var")))


def fit_gmm(y: torch.Tensor, k: int = 8, iters: int = 200, min_var: float = 1e-6) -> GMM:
    """EM for a 1-D mixture on labels ``y`` [B]; deterministic (means start at quantiles)."""
    y = y.detach().double().flatten()
    q = torch.linspace(0.5 / k, 1 - 0.5 / k, k, dtype=torch.float64)
    mu = torch.quantile(y, q)
    var = torch.full((k,), max(float(y.var()) / k, min_var), dtype=torch.float64)
    pi = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for _ in range(iters):
        logp = torch.log(pi) - 0.5 * torch.log(2 * math.pi * var) - (y[:, None] - mu) ** 2 / (2 * var)
        r = torch.softmax(logp, dim=1)
        nk = r.sum(0) + 1e-12
        pi = nk / nk.sum()
        mu = (r * y[:, None]).sum(0) / nk
        var = ((r * (y[:, None] - mu) ** 2).sum(0) / nk).clamp_min(min_var)
    return GMM(pi.float(), mu.float(), var.float())


def gai_loss(pred: torch.Tensor, y: torch.Tensor, gmm: GMM, s2: float) -> torch.Tensor:
    pred, y = pred.flatten(), y.flatten()
    mse_term = (pred - y) ** 2 / (2 * s2) + 0.5 * math.log(s2)
    v = gmm.var.to(pred) + s2
    balance = torch.logsumexp(
        torch.log(gmm.pi.to(pred)) - 0.5 * torch.log(v) - (pred[:, None] - gmm.mu.to(pred)) ** 2 / (2 * v),
        dim=1,
    )
    return ((mse_term + balance) * (2 * s2)).mean()


def bmc_loss(pred: torch.Tensor, y: torch.Tensor, s2: float) -> torch.Tensor:
    pred, y = pred.flatten(), y.flatten()
    logits = -((pred[:, None] - y[None, :]) ** 2) / (2 * s2)
    return F.cross_entropy(logits, torch.arange(len(pred), device=pred.device)) * (2 * s2)


def bni_loss(pred: torch.Tensor, y: torch.Tensor, s2: float, weights: torch.Tensor) -> torch.Tensor:
    pred, y = pred.flatten(), y.flatten()
    nb = len(weights)
    centres = torch.arange(nb, dtype=pred.dtype, device=pred.device) / (nb - 1)
    mse_term = (pred - y) ** 2 / (2 * s2)
    balance = torch.logsumexp(torch.log(weights.to(pred)) - (pred[:, None] - centres) ** 2 / (2 * s2), dim=1)
    return ((mse_term + balance) * (2 * s2)).mean()


def balanced_softmax_ce(logits: torch.Tensor, y: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """CE(logits + log counts, y); classes with count 0 get log 0 = -inf (never predicted in training)."""
    return F.cross_entropy(logits + torch.log(counts.to(logits)), y)


class RegressionLoss:
    """Callable ``(pred, y) -> loss`` for one of REGRESSION_LOSSES with its training-set statistics."""

    def __init__(
        self,
        name: str,
        train_y: torch.Tensor | None = None,
        sigma: float = 0.1,
        n_buckets: int = 5,
        bmc_batch: int = 256,
        gmm_k: int = 8,
        state: dict | None = None,
    ):
        if name not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss '{name}' (choose from {', '.join(REGRESSION_LOSSES)})")
        self.name, self.s2, self.bmc_batch = name, sigma**2, bmc_batch
        self.gmm: GMM | None = None
        self.weights: torch.Tensor | None = None
        if state is not None:
            self.gmm = GMM.from_state(state["gmm"]) if state.get("gmm") else None
            self.weights = torch.tensor(state["weights"]) if state.get("weights") else None
        elif name == "gai":
            self.gmm = fit_gmm(train_y, gmm_k)
        elif name == "bni":
            from .graph import to_class

            c = torch.bincount(to_class(train_y), minlength=n_buckets).float()
            self.weights = (c / c.sum()).clamp_min(1e-12)

    def state(self) -> dict:
        return {
            "gmm": self.gmm.state() if self.gmm else None,
            "weights": self.weights.tolist() if self.weights is not None else None,
        }

    def __call__(
        self, pred: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.name == "mse":
            return F.mse_loss(pred.flatten(), y.flatten())
        if self.name == "gai":
            return gai_loss(pred, y, self.gmm, self.s2)
        if self.name == "bni":
            return bni_loss(pred, y, self.s2, self.weights)
        # BMC is batch-contrastive: average it over random batches of bmc_batch targets
        perm = torch.randperm(len(pred), generator=gen)
        chunks = [perm[i : i + self.bmc_batch] for i in range(0, len(perm), self.bmc_batch)]
        if len(chunks) > 1 and len(chunks[-1]) < 2:
            chunks = chunks[:-1]
        return torch.stack([bmc_loss(pred[c], y[c], self.s2) for c in chunks]).mean()


class ClassLoss:
    def __init__(
        self,
        name: str,
        train_y: torch.Tensor | None = None,
        n_classes: int = 5,
        counts: list[float] | None = None,
    ):
        if name not in CLASS_LOSSES:
            raise ValueError(f"unknown classification loss '{name}' (choose from {', '.join(CLASS_LOSSES)})")
        self.name = name
        if counts is not None:
            self.counts = torch.tensor(counts, dtype=torch.float32)
        elif train_y is not None:
            self.counts = torch.bincount(train_y, minlength=n_classes).float()
        else:
            self.counts = torch.ones(n_classes)

    def state(self) -> dict:
        return {"counts": self.counts.tolist()}

    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.name == "ce":
            return F.cross_entropy(logits, y)
        return balanced_softmax_ce(logits, y, self.counts)
