"""Per-atom conditioning integers and the chemistry-aware atom orderings of the blocks (anchor §1.3, §1.4).

Conditioning, four integers per atom (0 is reserved for padding):
* `atom_type`: standardised Amber atom name (a hydrogen name ending in 1/2/3 drops the digit, except ring
  hydrogens HD*/HE*/HZ*/HH* of HIS/HIE/PHE/TRP/TYR; OD1/OD2 of Asp -> OD, OE1/OE2 of Glu -> OE, so
  chemically equivalent atoms share a class);
* `residue_type`: 20 amino acids + ACE + NME; `residue_index`: 1-based; `seq_len`: residues in the molecule.

Orderings: residues N->C; within a residue the backbone atoms "before" the side chain (N, H*, CA, HA*),
then the side chain, then the "after" atoms (C, O, OXT). The side chain is walked depth first from CB
(each heavy atom followed by its hydrogens); the `variant` walk takes branches in the reverse order, which
reverses ring traversal (PHE, TYR, TRP, HIE, PRO) and branch order (ILE, LEU, THR, VAL) as the anchor's
hand-written variants do. `backbone-first` lists every residue's heavy backbone atoms first. `_flip`
reverses the whole ordering. Caps are walked depth first from their first atom.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ATOM_TYPES",
    "BLOCK_ORDERINGS",
    "RESIDUE_TYPES",
    "atom_ordering",
    "encode_topology",
    "standard_atom_name",
]

ATOM_TYPES = (
    "C", "CA", "CB", "CD", "CD1", "CD2", "CE", "CE1", "CE2", "CE3", "CG", "CG1", "CG2", "CH2", "CH3", "CZ",
    "CZ2", "CZ3", "H", "HA", "HB", "HD", "HD1", "HD2", "HE", "HE1", "HE2", "HE3", "HG", "HG1", "HG2", "HH",
    "HH1", "HH2", "HH3", "HZ", "HZ2", "HZ3", "N", "ND1", "ND2", "NE", "NE1", "NE2", "NH1", "NH2", "NZ", "O",
    "OD", "OD1", "OE", "OE1", "OG", "OG1", "OH", "OXT", "SD", "SG",
)  # fmt: skip
RESIDUE_TYPES = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIE", "ILE", "LEU", "LYS", "MET", "PHE", "PRO",
    "SER", "THR", "TRP", "TYR", "VAL", "ACE", "NME",
)  # fmt: skip
_ATOM_INDEX = {n: i + 1 for i, n in enumerate(ATOM_TYPES)}
_RES_INDEX = {n: i + 1 for i, n in enumerate(RESIDUE_TYPES)} | {"HIS": RESIDUE_TYPES.index("HIE") + 1}
_RING = {"HIS", "HIE", "HID", "HIP", "PHE", "TRP", "TYR"}

_BEFORE = ("N", "H", "H1", "H2", "H3", "CA", "HA", "HA2", "HA3")
_AFTER = ("C", "O", "OXT")
_BACKBONE_HEAVY = ("N", "CA", "C", "O", "OXT")

# Prose's 8 blocks, data -> noise direction (anchor §1.4).
BLOCK_ORDERINGS = (
    "n2c_backbone-first_standard",
    "n2c_residue-by-residue_standard_flip",
    "n2c_backbone-first_standard_flip",
    "n2c_residue-by-residue_standard",
    "n2c_backbone-first_variant",
    "n2c_residue-by-residue_variant_flip",
    "n2c_backbone-first_variant_flip",
    "n2c_residue-by-residue_variant",
)


def standard_atom_name(name: str, residue: str) -> str:
    """The atom class of an Amber atom name in a residue (see module docstring)."""
    if len(name) > 1 and name[0] == "H" and name[-1] in "123":
        if residue in _RING and name[:2] in ("HD", "HE", "HZ", "HH"):
            return name
        return name[:-1]
    if residue == "ASP" and name in ("OD1", "OD2"):
        return "OD"
    if residue == "GLU" and name in ("OE1", "OE2"):
        return "OE"
    return name


def _residues(topology) -> list[list[tuple[int, str, str]]]:
    """[(atom index, atom name, element symbol), ...] per residue in chain order."""
    out = []
    for res in topology.residues():
        out.append(
            [(a.index, a.name, a.element.symbol if a.element is not None else "") for a in res.atoms()]
        )
    return out


def encode_topology(topology) -> dict[str, np.ndarray]:
    """`{"atom_type", "residue_type", "residue_index", "seq_len"}`, each int64 [N] (values >= 1).

    Raises KeyError naming an atom or residue outside the vocabulary.
    """
    residues = list(topology.residues())
    n = topology.getNumAtoms()
    atom_type = np.zeros(n, dtype=np.int64)
    res_type = np.zeros(n, dtype=np.int64)
    res_index = np.zeros(n, dtype=np.int64)
    for r_i, res in enumerate(residues):
        if res.name not in _RES_INDEX:
            raise KeyError(f"residue {res.name} not in the Prose vocabulary")
        for a in res.atoms():
            std = standard_atom_name(a.name, res.name)
            if std not in _ATOM_INDEX:
                raise KeyError(f"atom {a.name} of {res.name}{r_i + 1} not in the Prose vocabulary")
            atom_type[a.index] = _ATOM_INDEX[std]
            res_type[a.index] = _RES_INDEX[res.name]
            res_index[a.index] = r_i + 1
    return {
        "atom_type": atom_type,
        "residue_type": res_type,
        "residue_index": res_index,
        "seq_len": np.full(n, len(residues), dtype=np.int64),
    }


def _bond_graph(topology) -> dict[int, list[int]]:
    nbr: dict[int, list[int]] = {a.index: [] for a in topology.atoms()}
    for b in topology.bonds():
        i, j = b[0].index, b[1].index
        nbr[i].append(j)
        nbr[j].append(i)
    return nbr


def _walk(
    start: int, allowed: set[int], nbr: dict[int, list[int]], hydrogen: set[int], variant: bool
) -> list[int]:
    """Depth-first walk over heavy atoms of `allowed`, each followed by its hydrogens."""
    order: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        seen.add(i)
        order.append(i)
        for h in sorted(j for j in nbr[i] if j in hydrogen and j in allowed and j not in seen):
            seen.add(h)
            order.append(h)
        kids = sorted(j for j in nbr[i] if j in allowed and j not in hydrogen and j not in seen)
        for k in reversed(kids) if variant else kids:
            if k not in seen:
                visit(k)

    visit(start)
    # Anything the walk could not reach (should not happen for standard residues) goes last, in file order.
    order += [i for i in sorted(allowed) if i not in seen]
    return order


def atom_ordering(topology, name: str) -> np.ndarray:
    """Atom indices [N] in the named ordering, e.g. `n2c_backbone-first_variant_flip`."""
    parts = name.split("_")
    direction, layout, chain = parts[0], parts[1], parts[2]
    flip = len(parts) > 3 and parts[3] == "flip"
    if direction not in ("n2c", "c2n") or layout not in ("backbone-first", "residue-by-residue"):
        raise ValueError(f"unknown ordering {name!r}")
    if chain not in ("standard", "variant"):
        raise ValueError(f"unknown ordering {name!r}")
    variant = chain == "variant"
    nbr = _bond_graph(topology)
    hydrogen = {a.index for a in topology.atoms() if a.element is not None and a.element.symbol == "H"}
    residues = _residues(topology)
    if direction == "c2n":
        residues = residues[::-1]
    heavy_backbone: list[int] = []
    per_residue: list[list[int]] = []
    for atoms in residues:
        by_name = {nm: i for i, nm, _ in atoms}
        idx = {i for i, _, _ in atoms}
        if "CA" not in by_name:  # a cap: one depth-first walk from its first heavy atom
            first = next(i for i, _, el in atoms if el != "H")
            per_residue.append(_walk(first, idx, nbr, hydrogen, variant))
            continue
        before = [by_name[nm] for nm in _BEFORE if nm in by_name]
        after = [by_name[nm] for nm in _AFTER if nm in by_name]
        side_set = idx - set(before) - set(after)
        side = _walk(by_name["CB"], side_set, nbr, hydrogen, variant) if "CB" in by_name else sorted(side_set)
        heavy_backbone += [by_name[nm] for nm in _BACKBONE_HEAVY if nm in by_name]
        per_residue.append(before + side + after)
    if layout == "residue-by-residue":
        order = [i for r in per_residue for i in r]
    else:
        hb = set(heavy_backbone)
        order = heavy_backbone + [i for r in per_residue for i in r if i not in hb]
    out = np.asarray(order[::-1] if flip else order, dtype=np.int64)
    if sorted(out.tolist()) != list(range(topology.getNumAtoms())):
        raise RuntimeError(f"ordering {name} is not a permutation of the atoms")
    return out


def block_orderings(topology, names: tuple[str, ...] = BLOCK_ORDERINGS) -> np.ndarray:
    """[K, N] int64: one ordering per flow block."""
    return np.stack([atom_ordering(topology, n) for n in names])
