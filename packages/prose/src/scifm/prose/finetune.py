"""Self-improvement on an unseen sequence (anchor §3.5): SNIS buffers + teacher-regularised likelihood.

Each round: draw `proposals` samples, SNIS-resample them (top 0.2 % log-weights dropped) into a buffer,
then take `steps` AdamW steps of maximum likelihood on buffer batches (centred, randomly rotated, CoM noise
as in training) plus `teacher_weight` * mean((log q_theta(x) - log q_teacher(x))^2), the teacher being a
frozen copy of the starting flow. No EMA. Energy budget = rounds x proposals (+ the final evaluation).
"""

from __future__ import annotations

import copy

import torch

from scifm.prose.sampler import ProseSampler
from scifm.prose.train import augment

__all__ = ["self_improve"]


def self_improve(
    sampler: ProseSampler,
    rounds: int = 4,
    proposals: int = 2000,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 5e-6,
    weight_decay: float = 4e-4,
    teacher_weight: float = 0.5,
    clip: float = 0.002,
    generator=None,
    log=print,
) -> list[dict]:
    """Fine-tune `sampler.flow` in place; returns per-round logs (ess, mean loss, energy evaluations)."""
    flow = sampler.flow
    teacher = copy.deepcopy(flow).eval().requires_grad_(False)
    opt = torch.optim.AdamW(flow.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    cond, perms = sampler.cond, sampler.perms
    history = []
    for r in range(rounds):
        flow.eval()
        res = sampler.run("snis", proposals, clip=clip, generator=generator)
        buf = torch.as_tensor(res["samples_nm"] / sampler.std_nm, dtype=next(flow.parameters()).dtype)
        buf = buf - buf.mean(dim=1, keepdim=True)
        flow.train()
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, len(buf), (batch_size,), generator=generator)
            mask = torch.ones(batch_size, buf.shape[1], dtype=torch.bool)
            x = augment(buf[idx], mask, generator)
            c = {k: v.expand(batch_size, -1) for k, v in cond.items()}
            p = perms.expand(batch_size, -1, -1)
            lp = flow.log_prob(x, c, p, mask)
            with torch.no_grad():
                lp_t = teacher.log_prob(x, c, p, mask)
            loss = (-lp / (3 * buf.shape[1])).mean() + teacher_weight * ((lp - lp_t) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
        entry = {
            "round": r + 1,
            "ess": res["ess"],
            "loss": sum(losses) / max(len(losses), 1),
            "energy_evaluations": res["energy_evaluations"],
        }
        history.append(entry)
        if log is not None:
            log(f"self-improve round {r + 1}/{rounds}: SNIS ESS {res['ess']:.4f}, loss {entry['loss']:.4f}")
    flow.eval()
    return history
