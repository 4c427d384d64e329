"""Maximum-likelihood training of the flow (anchor §1.6–1.8, §1.10) and run export/loading.

Loss: per-molecule NLL -log q(x) divided by 3 x (real atoms), batch mean. Training augmentation, in order:
(coordinates already centred and divided by std_nm) -> uniform random rotation -> one N(0, I/N) vector added
to every real atom (so the CoM law of the data equals that of a standard-normal prior sample). No
dequantisation noise. Validation/test use the un-augmented frames.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scifm.core.export import load_model, save_model
from scifm.core.train import Task
from scifm.prose.data import cond_of
from scifm.prose.tarflow import ProseConfig, ProseFlow

MODEL_NAME = "prose-tarflow"

__all__ = ["MODEL_NAME", "ProseTask", "augment", "export_run", "load_run", "nll_loss", "random_rotations"]


def random_rotations(n: int, dtype=torch.float32, generator=None) -> torch.Tensor:
    """n uniformly distributed rotation matrices [n, 3, 3] (unit quaternions from a 4-D Gaussian)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=1,
    ).view(n, 3, 3)  # fmt: skip
    return R.to(dtype)


def augment(x: torch.Tensor, mask: torch.Tensor, generator=None) -> torch.Tensor:
    """Random rotation + CoM noise N(0, I/N) on centred, standardised x [B, N, 3] (pads stay zero)."""
    B = x.shape[0]
    m = mask[..., None].to(x.dtype)
    R = random_rotations(B, x.dtype, generator).to(x.device)
    x = torch.einsum("bij,bnj->bni", R, x)
    n = mask.sum(1).clamp_min(1).to(x.dtype)
    com = torch.randn(B, 1, 3, generator=generator, dtype=x.dtype).to(x.device) / n.sqrt()[:, None, None]
    return (x + com) * m


def nll_loss(model: ProseFlow, batch: dict, train: bool = True, generator=None) -> tuple[torch.Tensor, dict]:
    """NLL per dimension (batch mean) and logs; augments when `train`."""
    x, mask = batch["x"], batch["mask"]
    if train:
        x = augment(x, mask, generator)
    lp = model.log_prob(x, cond_of(batch), batch["perms"], mask)
    dims = 3 * mask.sum(1).to(lp.dtype)
    loss = (-lp / dims).mean()
    return loss, {"nll": (-lp).mean().detach()}


class ProseTask(Task):
    """Core-trainer task for the flow (optionally with a teacher regulariser, see finetune.py)."""

    def loss(self, batch, stage):
        return nll_loss(self.model, batch, train=(stage == "train"))


def _flow_classes() -> dict[str, tuple[type, type]]:
    """Saved model name -> (flow class, config class) of every flow `sci-fm train prose` writes."""
    from scifm.prose.icflow import MODEL_NAME as IC_NAME
    from scifm.prose.icflow import ICFlow, ICFlowConfig
    from scifm.prose.ictransfer import MODEL_NAME as ICT_NAME
    from scifm.prose.ictransfer import ICTransferConfig, ICTransferFlow

    return {
        MODEL_NAME: (ProseFlow, ProseConfig),
        IC_NAME: (ICFlow, ICFlowConfig),
        ICT_NAME: (ICTransferFlow, ICTransferConfig),
    }


def export_run(run_dir: str | Path, model: ProseFlow, meta: dict) -> Path:
    name = next(n for n, (cls, _) in _flow_classes().items() if type(model) is cls)
    return save_model(
        Path(run_dir) / "model",
        name=name,
        config=model.config.to_dict(),
        state_dict=model.state_dict(),
        meta=meta,
    )


def load_run(path: str | Path, device: str = "cpu") -> tuple[ProseFlow, dict]:
    """A run directory (with model/), a model directory or a model.json -> (flow, meta)."""
    from scifm.core.errors import DataError

    p = Path(path)
    if (p / "model" / "model.json").is_file():
        p = p / "model"
    name, config, state, meta = load_model(p, device=device)
    flows = _flow_classes()
    if name not in flows:
        known = ", ".join(repr(n) for n in flows)
        raise DataError(p, f"model {name!r} is not a Prose flow ({known})")
    cls, cfg_cls = flows[name]
    model = cls(cfg_cls.from_dict(config)).to(device)
    model.load_state_dict(state)
    return model.eval(), meta or {}
