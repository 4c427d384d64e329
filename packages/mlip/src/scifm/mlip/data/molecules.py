"""The bundled list of small neutral organic molecules that the default MLIP data set is generated from.

Chosen to span common functional groups (alcohol, ether, acid, amine, amide, ketone, nitrile, aromatic
ring, heteroaromatic ring, amino acid) with C, H, N, O only and 6 to 12 atoms including hydrogens, so that a
small model trained on a few minutes of CPU sees varied bonding.
"""

from __future__ import annotations

# (name, SMILES); names are unique, lower case, and are what ``--molecules`` accepts.
MOLECULES: tuple[tuple[str, str], ...] = (
    ("methanol", "CO"),
    ("ethanol", "CCO"),
    ("dimethyl_ether", "COC"),
    ("acetic_acid", "CC(=O)O"),
    ("methylamine", "CN"),
    ("formamide", "NC=O"),
    ("urea", "NC(N)=O"),
    ("acetone", "CC(C)=O"),
    ("acetonitrile", "CC#N"),
    ("benzene", "c1ccccc1"),
    ("pyridine", "c1ccncc1"),
    ("glycine", "NCC(=O)O"),
)


def bundled_names() -> list[str]:
    """Names of the bundled molecules, in their fixed order."""
    return [name for name, _ in MOLECULES]


def lookup(names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``(name, smiles)`` for each requested bundled name, in the order given.

    Raises ``KeyError`` naming the first unknown name (the caller turns it into a ``ConfigError``).
    """
    table = dict(MOLECULES)
    out = []
    for name in names:
        key = name.strip().lower()
        if key not in table:
            raise KeyError(name)
        out.append((key, table[key]))
    return out
