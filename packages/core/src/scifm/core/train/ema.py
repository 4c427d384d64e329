"""Exponential moving average of model weights.

After optimiser step n the average is  ema_n = d_n * ema_{n-1} + (1 - d_n) * theta_n,  with
ema_0 = theta_0 (the weights at construction) and, with warm-up (the default), d_n = min(decay, n / (n + 9))
(the usual warm-up, as in TensorFlow's ExponentialMovingAverage with num_updates), else d_n = decay.
Without warm-up a decay of 0.999 still holds 0.999^1000 = 37 % of the random initial weights after 1000
steps and 5 % after 3000, which ruins short trainings evaluated with the average (flows above all).
Floating-point parameters *and* floating buffers are averaged; integer buffers (counters such as
BatchNorm's num_batches_tracked) are copied.

`EMA` is an `nn.Module` holding a frozen copy of the model, so it follows the task through `.to()`,
`.double()` and is saved in (and restored from) Lightning checkpoints as plain tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """EMA of the weights of `model`.

    Args:
        model: the module being trained (its current weights initialise the average).
        decay: weight of the old average per update, in [0, 1).
        warmup: use d_n = min(decay, n / (n + 9)) at update n (1, 2, ...), so that early averages follow
            the live weights instead of holding on to the initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _pairs(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(average, live) tensors for every parameter and buffer, matched by name."""
        live = dict(model.named_parameters())
        live.update(model.named_buffers())
        for name, avg in [*self.module.named_parameters(), *self.module.named_buffers()]:
            if name not in live:
                raise KeyError(f"EMA: model has no tensor named {name!r} (did the architecture change?)")
            yield avg, live[name]

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        n = int(self.num_updates) + 1
        return min(self.decay, n / (n + 9.0))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current weights of `model` (call after each optimiser step)."""
        decay = self.current_decay()
        for avg, cur in self._pairs(model):
            cur = cur.detach()
            if avg.is_floating_point() or avg.is_complex():
                # lerp_: avg += (1 - decay) * (cur - avg)
                avg.lerp_(cur.to(avg.dtype), 1.0 - decay)
            else:
                avg.copy_(cur)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the weights of `model` with the average."""
        for avg, cur in self._pairs(model):
            cur.copy_(avg)

    @contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the averaged weights into `model`; the live weights come back on exit."""
        backup = {id(cur): cur.detach().clone() for _, cur in self._pairs(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for _, cur in self._pairs(model):
                    cur.copy_(backup[id(cur)])

    def averaged_model(self, like: nn.Module | None = None) -> nn.Module:
        """A fresh module with the averaged weights (a copy of `like` if given, keeping its grad flags)."""
        if like is None:
            return copy.deepcopy(self.module)
        out = copy.deepcopy(like)
        self.copy_to(out)
        return out

    def extra_repr(self) -> str:
        return f"decay={self.decay}, warmup={self.warmup}"
