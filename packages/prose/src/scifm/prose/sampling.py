"""Importance sampling with a flow proposal: SNIS and SMC (anchor §3.3, §3.4). Generic in the energies.

Energies are in kT and negative log-densities up to constants: a proposal with energy E_s (= -log q) and a
target with energy E_t. Log-weights logw = E_s - E_t.

* `snis`: drop the largest `clip` fraction of log-weights (anchor: 0.2 %), normalise, resample.
* `smc`: anneal E_k = (1 - t_k) E_s + t_k E_t on t_k = k / K for k = 1..K (the last step *is* the
  target: the reference code stops at 1 - 1/K). Each step: log-weight increment -(E_t - E_s)(x) * (t_k -
  t_{k-1}) at the current particles, resampling (systematic) when the normalised ESS falls below the
  threshold and always at the last step, then `n_moves` Langevin moves invariant for (ULA: approximately)
  the current E_k, unadjusted (ULA) or Metropolis-adjusted (MALA, step size adapted towards acceptance
  in [0.55, 0.6]).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "clip_log_weights",
    "kish_ess",
    "multinomial_resample",
    "smc",
    "snis",
    "systematic_resample",
]

EnergyGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def kish_ess(logw: torch.Tensor) -> float:
    """Normalised Kish ESS in [0, 1]: exp(2 LSE(logw) - LSE(2 logw)) / n over finite log-weights."""
    logw = logw[torch.isfinite(logw)].double()
    if logw.numel() == 0:
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0)) / logw.numel())


def clip_log_weights(logw: torch.Tensor, clip: float = 0.002) -> torch.Tensor:
    """Boolean mask [n] keeping finite log-weights minus the largest `clip` fraction of them."""
    keep = torch.isfinite(logw)
    n_drop = int(math.floor(clip * int(keep.sum())))
    if n_drop > 0:
        top = torch.topk(torch.where(keep, logw, torch.full_like(logw, -torch.inf)), n_drop).indices
        keep[top] = False
    return keep


def _probs(logw: torch.Tensor) -> torch.Tensor:
    logw = logw.double()
    if not torch.isfinite(logw).any():
        return torch.full_like(logw, 1.0 / logw.numel())
    return torch.softmax(torch.where(torch.isfinite(logw), logw, torch.full_like(logw, -torch.inf)), 0)


def systematic_resample(logw: torch.Tensor, n: int | None = None, generator=None) -> torch.Tensor:
    """Indices [n] by systematic resampling (one uniform offset, n evenly spaced points)."""
    n = logw.numel() if n is None else n
    p = _probs(logw).cpu()
    cdf = torch.cumsum(p, 0)
    cdf[-1] = 1.0
    u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, u).clamp_max(logw.numel() - 1).to(logw.device)


def multinomial_resample(logw: torch.Tensor, n: int | None = None, generator=None) -> torch.Tensor:
    n = logw.numel() if n is None else n
    return torch.multinomial(_probs(logw).cpu(), n, replacement=True, generator=generator).to(logw.device)


def snis(
    e_source: torch.Tensor,
    e_target: torch.Tensor,
    clip: float = 0.002,
    n_resample: int | None = None,
    generator=None,
) -> dict:
    """Self-normalised importance sampling from energies of n proposals.

    Returns {"logw" [n] (-inf where clipped or non-finite), "weights" [n] (normalised), "keep" [n] bool,
    "indices" [n_resample] (multinomial resampling), "ess" (normalised Kish ESS of the kept weights)}.
    """
    logw = (e_source - e_target).double()
    keep = clip_log_weights(logw, clip)
    logw = torch.where(keep, logw, torch.full_like(logw, -torch.inf))
    w = _probs(logw)
    idx = multinomial_resample(logw, n_resample or logw.numel(), generator)
    return {"logw": logw, "weights": w, "keep": keep, "indices": idx, "ess": kish_ess(logw[keep])}


def _langevin_move(x, e, g, energy_grad: EnergyGrad, h: torch.Tensor, mala: bool, generator=None):
    """One ULA/MALA step for every particle; h [n] or scalar step sizes. Returns (x, e, g, accepted [n])."""
    hb = h.view(-1, *([1] * (x.dim() - 1))) if h.dim() else h
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    y = x - hb * g + torch.sqrt(2 * hb) * noise
    ey, gy = energy_grad(y)
    if not mala:
        ok = torch.isfinite(ey)  # never move into a NaN/inf state
        acc = ok
    else:
        dims = tuple(range(1, x.dim()))
        fwd = ((y - x + hb * g) ** 2).sum(dims) / (4 * h)
        bwd = ((x - y + hb * gy) ** 2).sum(dims) / (4 * h)
        log_alpha = -ey + e - bwd + fwd
        u = torch.rand(log_alpha.shape, generator=generator, dtype=torch.float64).to(x.device)
        acc = torch.isfinite(log_alpha) & (torch.log(u) < log_alpha.double())
    a = acc.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(a, y, x), torch.where(acc, ey, e), torch.where(a, gy, g), acc


def smc(
    x0: torch.Tensor,
    source: EnergyGrad,
    target: EnergyGrad,
    n_steps: int = 100,
    step_size: float = 1e-4,
    kernel: str = "ula",
    n_moves: int = 1,
    ess_threshold: float = 1.0,
    adapt: bool = True,
    generator=None,
    progress: Callable[[int], None] | None = None,
    target0: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Anneal particles `x0` [n, ...] (exact draws of the source) to the target.

    `source(x)`/`target(x)` return (energy [n], grad [n, ...]) in kT. `ess_threshold` in [0, 1]: resample
    when the normalised ESS is below it (1.0 = every step; the last step always resamples). `target0`:
    (energy, grad) of the target at `x0` if the caller has them.
    Returns {"x" (equally weighted target samples), "ess" (normalised ESS before the last resampling),
    "ess_history", "acceptance", "step_size", "log_z" (estimate of log Z_target/Z_source), "n_resamples"}.
    """
    if kernel not in ("ula", "mala"):
        raise ValueError(f"kernel must be 'ula' or 'mala', got {kernel!r}")
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    x = x0.clone()
    n = x.shape[0]
    es, gs = source(x)
    et, gt = target(x) if target0 is None else target0  # target0: already computed at x0 (saves a call)
    logw = torch.zeros(n, dtype=torch.float64, device=x.device)
    log_z = 0.0
    h = torch.full((n,), float(step_size), dtype=x.dtype, device=x.device)
    ess_hist, acc_hist = [], []
    n_res = 0
    final_ess = 1.0
    t_prev = 0.0
    for k in range(1, n_steps + 1):
        t = k / n_steps
        inc = -(et - es).double() * (t - t_prev)
        logw = logw + torch.where(torch.isfinite(inc), inc, torch.full_like(inc, -torch.inf))
        ess = kish_ess(logw) if torch.isfinite(logw).any() else 0.0
        ess_hist.append(ess)
        if k == n_steps:
            final_ess = ess
        if ess < ess_threshold or k == n_steps:
            log_z += float(torch.logsumexp(logw, 0) - math.log(n))
            idx = systematic_resample(logw, n, generator)
            x, es, gs, et, gt, h = x[idx], es[idx], gs[idx], et[idx], gt[idx], h[idx]
            logw = torch.zeros_like(logw)
            n_res += 1

        def energy_grad(y, t=t):
            e1, g1 = source(y)
            e2, g2 = target(y)
            energy_grad.parts = (e1, g1, e2, g2)
            return (1 - t) * e1 + t * e2, (1 - t) * g1 + t * g2

        e = (1 - t) * es + t * et
        g = (1 - t) * gs + t * gt
        for _ in range(n_moves):
            x_new, e, g, acc = _langevin_move(x, e, g, energy_grad, h, kernel == "mala", generator)
            e1, g1, e2, g2 = energy_grad.parts
            a = acc.view(-1, *([1] * (x.dim() - 1)))
            es, et = torch.where(acc, e1, es), torch.where(acc, e2, et)
            gs, gt = torch.where(a, g1, gs), torch.where(a, g2, gt)
            x = x_new
            rate = float(acc.double().mean())
            acc_hist.append(rate)
            if kernel == "mala" and adapt:
                h = h * (1.1 if rate > 0.6 else (1 / 1.1 if rate < 0.55 else 1.0))
        t_prev = t
        if progress is not None:
            progress(1)
    return {
        "x": x,
        "ess": final_ess,
        "ess_history": ess_hist,
        "acceptance": float(sum(acc_hist) / max(len(acc_hist), 1)),
        "step_size": float(h.mean()),
        "log_z": log_z,
        "n_resamples": n_res,
        "energy_target": et,
    }
