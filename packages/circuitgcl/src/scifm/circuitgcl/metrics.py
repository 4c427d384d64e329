"""Regression (R^2, MAE, MSE) and classification (accuracy, macro-F1) metrics, sklearn conventions."""

from __future__ import annotations

import torch


def r2_score(pred: torch.Tensor, y: torch.Tensor) -> float:
    """1 - SS_res / SS_tot; for constant targets: 1.0 if the fit is exact, else nan."""
    pred, y = pred.double().flatten(), y.double().flatten()
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else float("nan")
    return 1.0 - ss_res / ss_tot


def mae(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred.double().flatten() - y.double().flatten()).abs().mean())


def mse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred.double().flatten() - y.double().flatten()) ** 2).mean())


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred.flatten() == y.flatten()).double().mean())


def macro_f1(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Unweighted mean F1 over the classes present in ``y`` or ``pred`` (sklearn's default labels)."""
    pred, y = pred.flatten(), y.flatten()
    labels = torch.unique(torch.cat([pred, y]))
    f1s = []
    for c in labels:
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else float("nan")


def regression_metrics(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"r2": r2_score(pred, y), "mae": mae(pred, y), "mse": mse(pred, y), "n": int(y.numel())}


def class_metrics(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"macro_f1": macro_f1(pred, y), "accuracy": accuracy(pred, y), "n": int(y.numel())}
