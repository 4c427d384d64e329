"""Peptides from a one-letter sequence, without tleap: RDKit heavy atoms -> OpenMM hydrogens -> a System.

Two kinds of molecule (anchor §2.1, §5 — never mix them):

* zwitterionic, uncapped peptides of 2–8 standard residues (ManyPeptidesMD): Amber ff14SB +
  GB-OBC I (`amber14-all.xml` + `implicit/obc1.xml`), `CutoffNonPeriodic` at 2.0 nm, no constraints, 310 K;
* capped Ace-X…-Nme (alanine dipeptide = Ace-A-Nme): `amber99sbildn.xml` + `amber99_obc.xml`, `NoCutoff`,
  no constraints, 300 K.

Route: `rdkit.Chem.MolFromSequence` (PDB atom names) -> caps added by hand -> ETKDG 3-D embedding ->
heavy-atom PDB block -> `openmm.app.Modeller.addHydrogens(pH=7)` (NH3+, COO-, Lys+, Arg+, Asp-, Glu-;
histidine as HIE as in the anchor) -> atoms renamed to the Amber template names (H1/H2/H3 on the N
terminus, HH31..HH33 on the caps). Positions are in nm.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass

import numpy as np

from scifm.core.errors import ConfigError

__all__ = [
    "AA1_TO_3",
    "FORCE_FIELDS",
    "Peptide",
    "build_peptide",
    "create_system",
    "default_force_field",
    "minimise",
    "parse_system_name",
    "select_platform",
    "system_name",
    "topology_from_pdb",
]

AA1_TO_3 = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}  # fmt: skip
AA3_TO_1 = {v: k for k, v in AA1_TO_3.items()} | {"HIE": "H", "HID": "H", "HIP": "H"}

# name -> force-field files, nonbonded method, cutoff (nm) and the temperature (K) of that system family.
FORCE_FIELDS: dict[str, dict] = {
    "amber14-obc1": {
        "files": ["amber14-all.xml", "implicit/obc1.xml"],
        "nonbonded": "CutoffNonPeriodic",
        "cutoff_nm": 2.0,
        "temperature_K": 310.0,
    },
    "amber99sbildn-obc": {
        "files": ["amber99sbildn.xml", "amber99_obc.xml"],
        "nonbonded": "NoCutoff",
        "cutoff_nm": None,
        "temperature_K": 300.0,
    },
}

MIN_RESIDUES, MAX_RESIDUES = 1, 8
_CAPPED = re.compile(r"^ace-([a-z]+)-nme$", re.IGNORECASE)


def default_force_field(capped: bool) -> str:
    """The anchor's force field for a capped (Ace-X-Nme) or zwitterionic peptide."""
    return "amber99sbildn-obc" if capped else "amber14-obc1"


def system_name(sequence: str, capped: bool) -> str:
    """`"AK"` or `"Ace-A-Nme"`: the key of a system in data files and the name users type."""
    return f"Ace-{sequence}-Nme" if capped else sequence


def parse_system_name(text: str) -> tuple[str, bool]:
    """`"AK"` -> ("AK", False); `"Ace-A-Nme"` (any case) -> ("A", True). Validates the residues."""
    text = str(text).strip()
    m = _CAPPED.match(text)
    seq, capped = (m.group(1), True) if m else (text, False)
    seq = seq.upper()
    bad = sorted({c for c in seq if c not in AA1_TO_3})
    if not seq or bad:
        raise ConfigError(
            f"sequence {text!r}: unknown residue letter(s) {bad} (use the 20 standard one-letter codes)"
            if bad
            else "empty sequence"
        )
    lo = MIN_RESIDUES if capped else 2
    if not lo <= len(seq) <= MAX_RESIDUES:
        raise ConfigError(f"sequence {text!r}: {len(seq)} residues, supported {lo}-{MAX_RESIDUES}")
    return seq, capped


@dataclass
class Peptide:
    """A built peptide: OpenMM topology with Amber names and positions [N, 3] in nm."""

    sequence: str
    capped: bool
    topology: object  # openmm.app.Topology
    positions: np.ndarray

    @property
    def name(self) -> str:
        return system_name(self.sequence, self.capped)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def to_pdb(self, positions: np.ndarray | None = None) -> str:
        """PDB text of the topology (with CONECT records) at `positions` (nm; default the built ones)."""
        return topology_to_pdb(self.topology, self.positions if positions is None else positions)


def topology_to_pdb(topology, positions_nm: np.ndarray) -> str:
    import openmm.app as app
    import openmm.unit as u

    buf = io.StringIO()
    app.PDBFile.writeFile(topology, np.asarray(positions_nm, dtype=float) * u.nanometer, buf, keepIds=True)
    return buf.getvalue()


def topology_from_pdb(pdb_text: str):
    """(openmm Topology, positions [N, 3] nm) from PDB text written by `topology_to_pdb`.

    The PDB reader maps names to its internal ones; we restore the names as written so atom names in
    files and in memory agree.
    """
    import openmm.app as app

    pdb = app.PDBFile(io.StringIO(pdb_text))
    names = [line[12:16].strip() for line in pdb_text.splitlines() if line.startswith(("ATOM", "HETATM"))]
    atoms = list(pdb.topology.atoms())
    if len(names) == len(atoms):
        for atom, name in zip(atoms, names, strict=True):
            atom.name = name
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(pdb.positions.unit), dtype=float)
    return pdb.topology, pos * 0.1 if _looks_angstrom(pdb) else pos


def _looks_angstrom(pdb) -> bool:
    import openmm.unit as u

    return pdb.positions.unit == u.angstrom


def _heavy_atom_mol(sequence: str, capped: bool):
    """RDKit molecule of the heavy atoms with PDB residue info, caps attached when `capped`."""
    from rdkit import Chem

    mol = Chem.MolFromSequence(sequence)
    if mol is None:
        raise ConfigError(f"RDKit could not build sequence {sequence!r}")
    if not capped:
        return mol
    rw = Chem.RWMol(mol)
    n_res = len(sequence)

    def info(name: str, res: str, num: int):
        ri = Chem.AtomPDBResidueInfo()
        ri.SetName(f" {name:<3}" if len(name) < 4 else name)
        ri.SetResidueName(res)
        ri.SetResidueNumber(num)
        ri.SetChainId("A")
        ri.SetIsHeteroAtom(False)
        return ri

    def find(name: str, resnum: int) -> int:
        for a in rw.GetAtoms():
            r = a.GetPDBResidueInfo()
            if r.GetName().strip() == name and r.GetResidueNumber() == resnum:
                return a.GetIdx()
        raise RuntimeError(f"atom {name} of residue {resnum} missing")

    n_first, c_last, oxt = find("N", 1), find("C", n_res), find("OXT", n_res)
    # Renumber residues 1..n -> 2..n+1 so ACE is residue 1.
    for a in rw.GetAtoms():
        r = a.GetPDBResidueInfo()
        r.SetResidueNumber(r.GetResidueNumber() + 1)
    ace = []
    for name, elem in (("CH3", 6), ("C", 6), ("O", 8)):
        idx = rw.AddAtom(Chem.Atom(elem))
        rw.GetAtomWithIdx(idx).SetMonomerInfo(info(name, "ACE", 1))
        ace.append(idx)
    rw.AddBond(ace[0], ace[1], Chem.BondType.SINGLE)
    rw.AddBond(ace[1], ace[2], Chem.BondType.DOUBLE)
    rw.AddBond(ace[1], n_first, Chem.BondType.SINGLE)
    nme = []
    for name, elem in (("N", 7), ("C", 6)):
        idx = rw.AddAtom(Chem.Atom(elem))
        rw.GetAtomWithIdx(idx).SetMonomerInfo(info(name, "NME", n_res + 2))
        nme.append(idx)
    rw.AddBond(nme[0], nme[1], Chem.BondType.SINGLE)
    rw.AddBond(c_last, nme[0], Chem.BondType.SINGLE)
    rw.RemoveAtom(oxt)
    mol = rw.GetMol()
    Chem.SanitizeMol(mol)
    # Keep residue order in the PDB: sort atoms by residue number (stable within a residue).
    order = sorted(
        range(mol.GetNumAtoms()), key=lambda i: mol.GetAtomWithIdx(i).GetPDBResidueInfo().GetResidueNumber()
    )
    return Chem.RenumberAtoms(mol, order)


def _embed(mol, seed: int):
    """3-D heavy-atom coordinates (Å) from ETKDG with hydrogens, then hydrogens dropped again."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mh = Chem.AddHs(mol, addCoords=False)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mh, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mh, params) != 0:
            raise ConfigError("RDKit could not embed the peptide in 3-D")
    return Chem.RemoveHs(mh)


def _rename_to_amber(topology) -> None:
    """OpenMM's Modeller names -> Amber template names (N-terminal H -> H1; cap methyls HH3x/CH3)."""
    residues = list(topology.residues())
    for i, res in enumerate(residues):
        names = {a.name for a in res.atoms()}
        if res.name == "ACE":
            for a in res.atoms():
                a.name = {"H1": "HH31", "H2": "HH32", "H3": "HH33"}.get(a.name, a.name)
        elif res.name == "NME":
            for a in res.atoms():
                a.name = {"C": "CH3", "H1": "HH31", "H2": "HH32", "H3": "HH33"}.get(a.name, a.name)
        elif i == 0 and {"H2", "H3"} <= names:
            for a in res.atoms():
                if a.name == "H":
                    a.name = "H1"
        if res.name == "HIS":
            res.name = "HIE"  # the variant addHydrogens was told to build (H on NE2)


def build_peptide(sequence: str, capped: bool = False, seed: int = 0) -> Peptide:
    """Build a peptide with hydrogens (pH 7) for `sequence` (one-letter codes); positions in nm. The same
    `seed` gives the same structure (RDKit ETKDG and OpenMM's hydrogen placement are both seeded)."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u
    from rdkit import Chem

    seq, capped = parse_system_name(system_name(sequence, True) if capped else sequence)
    heavy = _embed(_heavy_atom_mol(seq, capped), seed)
    pdb = app.PDBFile(io.StringIO(Chem.MolToPDBBlock(heavy, flavor=2)))  # flavor 2: no CONECT (std bonds)
    ff = app.ForceField(*FORCE_FIELDS[default_force_field(capped)]["files"])
    modeller = app.Modeller(pdb.topology, pdb.positions)
    variants = [("HIE" if r.name == "HIS" else None) for r in modeller.topology.residues()]
    # OpenMM starts some hydrogens from positions drawn with Python's global `random` and then minimises
    # them: seed it here (and put the caller's state back) and minimise on the Reference platform (threaded
    # sums differ in the last bits), so that one seed gives one structure
    state = random.getstate()
    random.seed(int(seed))
    try:
        reference = mm.Platform.getPlatformByName("Reference")
        modeller.addHydrogens(ff, pH=7.0, variants=variants, platform=reference)
    finally:
        random.setstate(state)
    _rename_to_amber(modeller.topology)
    pos = np.asarray(modeller.getPositions().value_in_unit(u.nanometer), dtype=float)
    return Peptide(seq, capped, modeller.topology, pos)


def create_system(topology, force_field: str, hydrogen_mass_amu: float = 0.0):
    """OpenMM System for `topology` with the named force field (see `FORCE_FIELDS`), no constraints.

    `hydrogen_mass_amu` > 0: hydrogen mass repartitioning (OpenMM's `hydrogenMass`: each hydrogen gets this
    mass, taken from its bonded heavy atom, total mass unchanged). Masses do not enter the configurational
    distribution exp(-U/kT); the slower X-H stretch allows a 2 fs step without constraints."""
    import openmm.app as app
    import openmm.unit as u

    if force_field not in FORCE_FIELDS:
        raise ConfigError(f"unknown force field {force_field!r} (known: {sorted(FORCE_FIELDS)})")
    spec = FORCE_FIELDS[force_field]
    ff = app.ForceField(*spec["files"])
    kwargs = {"nonbondedMethod": getattr(app, spec["nonbonded"]), "constraints": None, "rigidWater": False}
    if spec["cutoff_nm"] is not None:
        kwargs["nonbondedCutoff"] = spec["cutoff_nm"] * u.nanometer
    if hydrogen_mass_amu > 0:
        kwargs["hydrogenMass"] = hydrogen_mass_amu * u.dalton
    system = ff.createSystem(topology, **kwargs)
    if hydrogen_mass_amu > 0:
        for atom in topology.atoms():
            if system.getParticleMass(atom.index).value_in_unit(u.dalton) <= 1.0:
                raise ConfigError(
                    f"hydrogen mass {hydrogen_mass_amu} leaves atom {atom.name} with mass <= 1 amu"
                )
    return system


def kT_kJ_per_mol(temperature_K: float) -> float:
    """k_B T in kJ/mol."""
    return 0.00831446261815324 * float(temperature_K)


def select_platform(name: str = "CPU"):
    """(openmm Platform, properties) for "CPU" (one thread), "Reference", "CUDA", "OpenCL" or "auto" (CUDA,
    else CPU).

    "Reference" (double precision, single thread) is the fast choice for one small peptide here: measured on
    this project's 2-core machine for WY (48 atoms, one thread), LangevinMiddle 1 fs, amber99sbildn +
    amber99_obc: 4,247 steps/s on Reference against 648 on CPU (the CPU platform's per-step overhead
    dominates below ~100 atoms)."""
    import openmm as mm

    names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    if name == "auto":
        name = "CUDA" if "CUDA" in names else "CPU"
    if name not in names:
        raise ConfigError(f"OpenMM platform {name!r} not available here (available: {names})")
    props = (
        {"Threads": "1"} if name == "CPU" else ({"Precision": "mixed"} if name in ("CUDA", "OpenCL") else {})
    )
    return mm.Platform.getPlatformByName(name), props


def cpu_platform():
    """OpenMM's CPU platform with one thread (parallelism comes from processes, not threads)."""
    import openmm as mm

    return mm.Platform.getPlatformByName("CPU"), {"Threads": "1"}


def minimise(
    system, positions_nm: np.ndarray, temperature_K: float, max_iterations: int = 0, tolerance: float = 10.0
) -> tuple[np.ndarray, float]:
    """Local energy minimisation; returns (positions [N, 3] nm, energy in kT). Energy may be inf/NaN
    only if the force field breaks, which callers treat as an error."""
    import openmm as mm
    import openmm.unit as u

    platform, props = cpu_platform()
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), platform, props)
    try:
        ctx.setPositions(np.asarray(positions_nm, dtype=float) * u.nanometer)
        mm.LocalEnergyMinimizer.minimize(ctx, tolerance, max_iterations)
        state = ctx.getState(getEnergy=True, getPositions=True)
        e = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        pos = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer), dtype=float)
    finally:
        del ctx
    return pos, e / kT_kJ_per_mol(temperature_K) if math.isfinite(e) else float("nan")
