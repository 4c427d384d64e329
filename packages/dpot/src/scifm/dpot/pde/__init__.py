"""PDE data generators: each ``generate(n, ..., seed, device, progress) -> (data, attrs)`` returns a float32
array in the ``data_specs/pde`` layout ``[N, X, (Y,) T, C]`` and the spec attributes (without the version)."""

from __future__ import annotations

from scifm.dpot.pde import burgers, diffusion_reaction, navier_stokes, shallow_water

GENERATOR_VERSION = "scifm-dpot-pde/1"

EQUATIONS = {
    "navier_stokes": navier_stokes.generate,
    "burgers": burgers.generate,
    "diffusion_reaction": diffusion_reaction.generate,
    "shallow_water": shallow_water.generate,
}
