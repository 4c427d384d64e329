"""Glue between a trained flow, one peptide and its OpenMM target: proposals, SNIS and SMC in kT.

Coordinates handed around are standardised (nm / std_nm). Proposal energy (anchor §1.8, §3.2):

    E_source(x) = -log q(x) + log p_com(c),   c = mean atom position,  sigma = 1 / sqrt(N),

with `com_correction="chi3"` (the anchor's choice):
log p_com = log(|c|^2 / (sqrt(2) sigma^3 Gamma(3/2))) - |c|^2 / (2 sigma^2), the log-density of the chi_3
(Maxwell) law of |c|; `"gaussian"`: log N(c; 0, sigma^2 I),
which removes the flow's CoM density exactly when q factorises into a shape part and N(c; 0, sigma^2 I);
`"none"`: no correction. The target is translation invariant, so only the shape part should be reweighted.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from scifm.core.errors import ConfigError
from scifm.prose import sampling
from scifm.prose.tarflow import ProseFlow

__all__ = ["ProseSampler", "peptide_inputs"]


def peptide_inputs(topology, num_blocks: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Conditioning {key: [1, N]} and orderings [1, K, N] of one peptide topology."""
    from scifm.prose.encoding import block_orderings, encode_topology

    cond = {k: torch.as_tensor(v)[None] for k, v in encode_topology(topology).items()}
    perms = torch.as_tensor(block_orderings(topology))[None]
    return cond, perms


def com_log_density(x: torch.Tensor, kind: str) -> torch.Tensor:
    """log density of the centroid c of x [n, N, 3] under the flow's CoM law (see module docstring)."""
    N = x.shape[1]
    sigma2 = 1.0 / N
    r2 = x.mean(dim=1).pow(2).sum(-1)
    if kind == "chi3":
        return (
            torch.log(r2.clamp_min(1e-30))
            - 0.5 * math.log(2)
            - 1.5 * math.log(sigma2)
            - math.lgamma(1.5)
            - r2 / (2 * sigma2)
        )
    if kind == "gaussian":
        return -r2 / (2 * sigma2) - 1.5 * math.log(2 * math.pi * sigma2)
    if kind == "none":
        return torch.zeros_like(r2)
    raise ConfigError(f"com_correction must be chi3, gaussian or none, got {kind!r}")


class ProseSampler:
    """Sample one peptide with a Prose flow and reweight towards its Boltzmann distribution.

    Args:
        flow: a `ProseFlow` (eval mode is set here).
        topology: OpenMM topology of the peptide (its atom order is the flow's token order).
        target: a `TargetEnergy` (standardised coordinates -> kT); None for proposals only.
        com_correction: "chi3" (anchor), "gaussian" or "none".
        batch_size: flow batch size.
    """

    def __init__(
        self, flow: ProseFlow, topology, target=None, com_correction: str = "chi3", batch_size: int = 512
    ):
        self.flow = flow.eval()
        self.cond, self.perms = peptide_inputs(topology)
        dev = next(flow.parameters()).device
        self.cond = {k: v.to(dev) for k, v in self.cond.items()}
        self.perms = self.perms.to(dev)
        self.n_atoms = self.perms.shape[-1]
        self.target = target
        self.com_correction = com_correction
        com_log_density(torch.zeros(1, 2, 3), com_correction)  # validates the name
        self.batch_size = int(batch_size)
        self.std_nm = float(flow.config.std_nm)

    # ------------------------------------------------------------------ energies (standardised units)
    def propose(self, n: int, generator=None, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
        """n flow samples x [n, N, 3] and their source energies E_source [n]."""
        x, logq = self.flow.sample(n, self.cond, self.perms, self.batch_size, generator, progress)
        return x, -logq + com_log_density(x, self.com_correction)

    def source_energy_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        es, gs = [], []
        for xb in x.split(self.batch_size):
            with torch.enable_grad():
                xb = xb.detach().requires_grad_(True)
                b = xb.shape[0]
                lp = self.flow.log_prob(
                    xb, {k: v.expand(b, -1) for k, v in self.cond.items()}, self.perms.expand(b, -1, -1)
                )
                e = -lp + com_log_density(xb, self.com_correction)
                (g,) = torch.autograd.grad(e.sum(), xb)
            es.append(e.detach())
            gs.append(g)
        return torch.cat(es), torch.cat(gs)

    def target_energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x.detach())

    def target_energy_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target.energy_and_grad(x.detach())

    def to_nm(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().double().numpy() * self.std_nm

    # ------------------------------------------------------------------ methods
    def run(
        self,
        method: str,
        n: int,
        clip: float = 0.002,
        energy_cutoff: float | None = None,
        smc_steps: int = 100,
        smc_kernel: str = "ula",
        step_size: float | None = None,
        ess_threshold: float = 1.0,
        generator=None,
        progress=None,
    ) -> dict:
        """`method` in proposal | snis | smc. Returns arrays in nm and kT plus counters.

        Keys: proposal_nm [n, N, 3], proposal_energy [n] (kT, target; NaN for method=proposal),
        samples_nm (resampled/annealed), samples_energy, logw, ess, energy_evaluations, wall_time_s, ...
        """
        if method not in ("proposal", "snis", "smc"):
            raise ConfigError(f"method must be proposal, snis or smc, got {method!r}")
        if method != "proposal" and self.target is None:
            raise ConfigError(f"method {method} needs a target energy")
        t0 = time.perf_counter()
        evals0 = self.target.n_evaluations if self.target is not None else 0
        x, es = self.propose(n, generator, progress)
        out: dict = {"method": method, "n_proposals": n, "proposal_nm": self.to_nm(x)}
        if self.target is None:
            out.update(
                samples_nm=out["proposal_nm"],
                proposal_energy=np.full(n, np.nan),
                samples_energy=np.full(n, np.nan),
                ess=float("nan"),
                energy_evaluations=0,
                wall_time_s=time.perf_counter() - t0,
            )
            return out
        if method == "smc":  # forces too: SMC needs them at the start
            et, gt = self.target_energy_grad(x)
        else:
            et = self.target_energy(x)
        out["proposal_energy"] = et.double().cpu().numpy()
        if method == "proposal":
            r = sampling.snis(es, et, clip=clip, generator=generator)  # weights only reported
            out.update(
                samples_nm=out["proposal_nm"],
                samples_energy=out["proposal_energy"],
                logw=r["logw"].numpy(),
                ess=r["ess"],
            )
        elif method == "snis":
            keep = torch.ones_like(et, dtype=torch.bool)
            if energy_cutoff is not None:
                keep = et < energy_cutoff
            r = sampling.snis(
                es, torch.where(keep, et, torch.full_like(et, torch.inf)), clip=clip, generator=generator
            )
            idx = r["indices"]
            out.update(
                samples_nm=out["proposal_nm"][idx.numpy()],
                samples_energy=out["proposal_energy"][idx.numpy()],
                logw=r["logw"].numpy(),
                ess=r["ess"],
                resample_indices=idx.numpy(),
            )
        else:
            logw = (es - et).double()
            keep = sampling.clip_log_weights(logw, clip)
            if energy_cutoff is not None:
                keep &= et < energy_cutoff
            if int(keep.sum()) < 2:
                raise ConfigError("SMC: fewer than 2 proposals survive the energy cutoff and weight clipping")
            r0 = sampling.snis(es[keep], et[keep], clip=0.0)
            h = step_size if step_size is not None else (1e-7 if smc_kernel == "ula" else 1e-5)
            res = sampling.smc(
                x[keep],
                self.source_energy_grad,
                self.target_energy_grad,
                n_steps=smc_steps,
                step_size=h,
                kernel=smc_kernel,
                ess_threshold=ess_threshold,
                generator=generator,
                target0=(et[keep], gt[keep]),
            )
            out.update(
                samples_nm=self.to_nm(res["x"]),
                samples_energy=res["energy_target"].double().cpu().numpy(),
                logw=torch.where(keep, logw, torch.full_like(logw, -torch.inf)).numpy(),
                ess=r0["ess"],
                smc_final_ess=res["ess"],
                smc_acceptance=res["acceptance"],
                smc_step_size=res["step_size"],
                smc_log_z=res["log_z"],
                smc_resamples=res["n_resamples"],
                n_particles=int(keep.sum()),
            )
        out["energy_evaluations"] = int(self.target.n_evaluations - evals0)
        out["wall_time_s"] = time.perf_counter() - t0
        return out
