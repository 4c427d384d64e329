"""Target energy in units of kT from OpenMM, batched over conformations, with forces (anchor §3.1).

`OpenMMEnergy` evaluates U(x)/kT and -dU/dx / kT (kT/nm) for many conformations [B, N, 3] (nm). With
`n_workers > 1` each worker process holds its own Context (one OpenMM thread each) and gets a contiguous
slice of the batch; with one worker the Context lives in this process. `TargetEnergy` wraps it for torch:
standardised coordinates in, kT out, gradients through OpenMM's forces (a custom autograd function), and
it counts every energy evaluation. Non-finite energies (clashing proposals) are returned as +inf with zero
force, so they get zero importance weight instead of stopping a run.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from scifm.prose.peptides import select_platform

__all__ = ["OpenMMEnergy", "TargetEnergy", "select_platform"]

_WORKER: dict = {}


def _make_context(system_xml: str, platform: str):
    import openmm as mm

    system = mm.XmlSerializer.deserialize(system_xml)
    plat, props = select_platform(platform)
    return mm.Context(system, mm.VerletIntegrator(0.001), plat, props)


def _evaluate(ctx, x_nm: np.ndarray, kT: float, forces: bool) -> tuple[np.ndarray, np.ndarray | None]:
    import openmm.unit as u

    B = x_nm.shape[0]
    e = np.empty(B)
    f = np.zeros_like(x_nm) if forces else None
    for i in range(B):
        ctx.setPositions(x_nm[i] * u.nanometer)  # float64 array; OpenMM copies it
        st = ctx.getState(getEnergy=True, getForces=forces)
        ei = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) / kT
        if not np.isfinite(ei):
            e[i] = np.inf
            continue
        e[i] = ei
        if forces:
            fi = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) / kT
            f[i] = np.where(np.isfinite(fi), fi, 0.0)
    return e, f


def _worker_init(system_xml: str, platform: str, kT: float) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    _WORKER["ctx"] = _make_context(system_xml, platform)
    _WORKER["kT"] = kT


def _worker_eval(x_nm: np.ndarray, forces: bool):
    return _evaluate(_WORKER["ctx"], x_nm, _WORKER["kT"], forces)


class OpenMMEnergy:
    """U/kT of one molecule for batches of conformations.

    Args:
        system: an `openmm.System`, or its XML serialisation.
        temperature_K: the temperature that defines kT.
        n_workers: processes, one Context each (1: a Context in this process).
        platform: "CPU", "CUDA", "OpenCL" or "auto".
    """

    def __init__(self, system, temperature_K: float, n_workers: int = 1, platform: str = "CPU"):
        import openmm as mm

        from scifm.prose.peptides import kT_kJ_per_mol

        self.system_xml = system if isinstance(system, str) else mm.XmlSerializer.serialize(system)
        self.kT = kT_kJ_per_mol(temperature_K)
        self.temperature_K = float(temperature_K)
        self.n_workers = max(1, int(n_workers))
        self.platform = platform
        self.n_evaluations = 0
        self._ctx = None
        self._pool = None

    def _local(self):
        if self._ctx is None:
            self._ctx = _make_context(self.system_xml, self.platform)
        return self._ctx

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(
                self.n_workers,
                mp_context=mp.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.system_xml, self.platform, self.kT),
            )
        return self._pool

    def __call__(self, x_nm: np.ndarray, forces: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """x_nm [B, N, 3] -> (energy [B] in kT, forces [B, N, 3] in kT/nm or None)."""
        x_nm = np.ascontiguousarray(np.asarray(x_nm, dtype=np.float64))
        if x_nm.ndim != 3 or x_nm.shape[2] != 3:
            raise ValueError(f"conformations must be [B, N, 3], got {x_nm.shape}")
        self.n_evaluations += x_nm.shape[0]
        if self.n_workers == 1 or x_nm.shape[0] < 2 * self.n_workers:
            return _evaluate(self._local(), x_nm, self.kT, forces)
        chunks = np.array_split(x_nm, self.n_workers)
        results = list(self._get_pool().map(_worker_eval, chunks, [forces] * len(chunks)))
        e = np.concatenate([r[0] for r in results])
        f = np.concatenate([r[1] for r in results]) if forces else None
        return e, f

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        self._ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class _EnergyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target):
        e, f = target._eval(x, forces=True)
        ctx.save_for_backward(f)
        return e

    @staticmethod
    def backward(ctx, grad_e):
        (f,) = ctx.saved_tensors
        return -f * grad_e[:, None, None], None


class TargetEnergy:
    """E_target(x) in kT for standardised coordinates x [B, N, 3] (nm = x * std_nm); differentiable."""

    def __init__(self, openmm_energy: OpenMMEnergy, std_nm: float):
        self.energy = openmm_energy
        self.std_nm = float(std_nm)

    @property
    def n_evaluations(self) -> int:
        return self.energy.n_evaluations

    def _eval(self, x: torch.Tensor, forces: bool):
        e, f = self.energy(x.detach().cpu().double().numpy() * self.std_nm, forces=forces)
        e_t = torch.as_tensor(e, dtype=x.dtype, device=x.device)
        if not forces:
            return e_t, None
        # d/dx of U(std * x) = std * dU/dnm, so the "force" in standardised units is std * F.
        return e_t, torch.as_tensor(f * self.std_nm, dtype=x.dtype, device=x.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return _EnergyFn.apply(x, self)
        return self._eval(x, forces=False)[0]

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e, f = self._eval(x, forces=True)
        return e, -f
