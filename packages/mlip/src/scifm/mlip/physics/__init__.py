"""Physics terms for MLIPs: predicted charges, electrostatics (damped all-pairs Coulomb, Ewald) and
DFT-D3 dispersion (an ASE-side correction at MD time)."""

from .charges import bounded_charges, dipole_moment, shift_to_total_charge
from .coulomb import (
    COULOMB_CONSTANT,
    coulomb_node_energy,
    damped_inverse_distance,
    ewald_energy,
    ewald_parameters,
)

__all__ = [
    "COULOMB_CONSTANT",
    "bounded_charges",
    "coulomb_node_energy",
    "damped_inverse_distance",
    "dipole_moment",
    "ewald_energy",
    "ewald_parameters",
    "shift_to_total_charge",
]
