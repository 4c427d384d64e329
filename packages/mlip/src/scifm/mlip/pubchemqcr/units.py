"""PubChemQCR units and isolated-atom reference energies.

The conversion factors are the ones the official loader uses (TDN ``data.py``), so that numbers we read
match the published ones digit for digit, and so that our generator, which divides by the same factors,
round-trips exactly. They are *not* CODATA: Hartree = 27.211386 eV and 1/Bohr = 1.8897261 Å^-1, so energies
are low by ~1.4e-6 relative and forces by ~1.5e-5 relative. That is far below any model error.
"""

from __future__ import annotations

HARTREE_TO_EV = 27.2114  # eV per Hartree (official loader's value)
BOHR_PER_ANGSTROM = 1.8897  # Å^-1 -> Bohr^-1 (official loader's value)
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM = HARTREE_TO_EV * BOHR_PER_ANGSTROM

# Isolated-atom energies in Hartree, B3LYP/6-31G* (the PubChemQC level of theory), spin-unrestricted
# Kohn-Sham ground states, computed with PySCF 2.14 (``xc="b3lyp"``, the VWN-RPA variant that Gaussian
# and GAMESS's B3LYP use; conv_tol 1e-10). H agrees with the official table's -0.5002727762 Ha to 7e-9 Ha.
# The official table also covers Sc-Cu; open-shell 3d atoms need care with SCF states, so they are left
# out here: pass your own table (``atom_refs=FILE.json``, symbol -> Hartree) for those.
ATOM_REFS_B3LYP_631GS: dict[str, float] = {
    "H": -0.5002727827,
    "Be": -14.6680629453,
    "B": -24.6538353982,
    "C": -37.8446940894,
    "N": -54.5828756031,
    "O": -75.0594041991,
    "F": -99.7145782665,
    "Si": -289.3697948921,
    "P": -341.2553445194,
    "S": -398.1019145318,
    "Cl": -460.1327881237,
    "Ga": -1924.5874073708,
    "Ge": -2076.6855871266,
    "As": -2235.5613285412,
    "Se": -2401.2268062966,
    "Br": -2573.8309450176,
}
