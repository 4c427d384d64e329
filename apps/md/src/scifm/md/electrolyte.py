"""Electrolyte boxes from a composition: parse, count molecules for a target density, pack with packmol.

Compositions (``parse_composition``):

- ratio form ``"EC:DMC 1:1 + LiPF6 1.0 M"``: solvents by name with a mole ratio (append ``wt`` for a mass
  ratio: ``"EC:DMC 3:7 wt + LiPF6 1.0 M"``), then any number of salts with a molarity (mol per litre of
  solution). The total number of solvent molecules is ``n_solvent``.
- count form ``"EC x 50 + DMC x 50 + LiPF6 x 5"`` or with SMILES: ``"C1COC(=O)O1 x 50 + [Li+] x 5 +
  F[P-](F)(F)(F)(F)F x 5"``. Terms are separated by `` + `` with spaces (SMILES contain ``+`` themselves).

Known names (``SPECIES``): the solvents of the BAMBOO anchor (EC, DMC, EMC, DEC, PC, FEC, VC, EA, MA, ACT,
Novec7000) and salts LiPF6, LiFSI (split into their ions). Anything else is parsed as SMILES.

Counting at density ρ (g/cm³) for molarity c (mol/L): with solvent mass m_s (g) and salt molar mass M,
V = m_s / (ρ·1e-24 - c·1e-27·M) Å³ and n_salt = round(c·N_A·V·1e-27); the box volume is then recomputed from
the integer counts so the density is exact: V = m_total / (ρ·1e-24).

The box (``build_box``) is filled by packmol with periodic boundaries (``pbc``, packmol ≥ 20.15) and a
minimum distance ``tolerance`` (Å). Each atom carries ``arrays["mol_id"]`` (molecule index),
``arrays["formal_charge"]`` (RDKit formal charges, summing to each molecule's charge), and the box has
``info["species"]`` (one name per molecule type) and ``info["charge"]`` (total, 0 for neutral mixtures).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scifm.core.errors import ConfigError, DataError

AVOGADRO = 6.02214076e23

#: name -> SMILES (solvents) or list of ion SMILES (salts)
SPECIES: dict[str, str] = {
    "EC": "C1COC(=O)O1",
    "DMC": "COC(=O)OC",
    "EMC": "CCOC(=O)OC",
    "DEC": "CCOC(=O)OCC",
    "PC": "CC1COC(=O)O1",
    "FEC": "O=C1OCC(F)O1",
    "VC": "O=C1OC=CO1",
    "EA": "CCOC(C)=O",
    "MA": "COC(C)=O",
    "ACT": "CC(C)=O",
    "Novec7000": "COC(F)(F)C(F)(F)C(F)(F)F",
    "Li": "[Li+]",
    "PF6": "F[P-](F)(F)(F)(F)F",
    "FSI": "O=S(=O)(F)[N-]S(=O)(=O)F",
}
SALTS: dict[str, tuple[str, ...]] = {"LiPF6": ("Li", "PF6"), "LiFSI": ("Li", "FSI")}


@dataclass(frozen=True)
class Species:
    """One molecule type: name, SMILES, atomic numbers [n], an embedded geometry [n,3] Å, formal charges
    [n] e, molar mass g/mol."""

    name: str
    smiles: str
    numbers: np.ndarray
    positions: np.ndarray
    formal_charges: np.ndarray
    molar_mass: float

    @property
    def charge(self) -> int:
        return int(round(self.formal_charges.sum()))


def relax_template(numbers: np.ndarray, positions: np.ndarray, charge: int, fmax: float = 0.02) -> np.ndarray:
    """GFN2-xTB (tblite) minimum of one molecule in vacuum, BFGS to `fmax` eV/Å (at most 500 steps)."""
    from ase import Atoms
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    atoms = Atoms(numbers=numbers, positions=positions)
    electrons = int(numbers.sum()) - int(charge)
    atoms.calc = TBLite(method="GFN2-xTB", charge=int(charge), multiplicity=1 + electrons % 2, verbosity=0)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    return np.array(atoms.positions, dtype=np.float64)


TEMPLATE_ATTEMPTS = 5  # RDKit embeddings tried per species before a template is refused


def make_species(name: str, smiles: str, seed: int = 0, relax: str = "xtb") -> Species:
    """Parse and embed one molecule: RDKit ETKDG, MMFF clean-up when MMFF has parameters, then (``relax=
    "xtb"``, the default) a GFN2-xTB minimisation, the level of theory of the cluster labels.

    The xTB step matters: ETKDG alone leaves hypervalent ions badly distorted (PF6- with F-P-F angles from
    35° to 154° instead of 90°/180°, about 50 eV above its minimum in GFN2-xTB), and every molecule of a
    packed box starts from its template. ``relax="none"`` keeps the force-field geometry."""
    if relax not in ("xtb", "none"):
        raise ConfigError(f"template relaxation must be 'xtb' or 'none', got {relax!r}")
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem, Descriptors

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ConfigError(
            f"composition: {name!r} is neither a known species ({', '.join(SPECIES)}, "
            f"{', '.join(SALTS)}) nor a valid SMILES"
        )
    mol = Chem.AddHs(mol)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    fc = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.float64)
    if mol.GetNumAtoms() == 1:
        return Species(name, smiles, numbers, np.zeros((1, 3)), fc, float(Descriptors.MolWt(mol)))
    # A badly distorted embedding (ETKDG of PF6- with some seeds) can leave the xTB SCF unconverged; the
    # next embeddings are tried before giving up (the relaxed template does not depend on the embedding).
    failures = []
    for attempt in range(TEMPLATE_ATTEMPTS):
        params = AllChem.ETKDGv3()
        params.randomSeed = 1000 + seed + 7919 * attempt
        if AllChem.EmbedMolecule(mol, params) != 0:
            failures.append(f"embedding {attempt}: RDKit could not embed")
            continue
        try:
            AllChem.MMFFOptimizeMolecule(mol)
        except Exception:  # no MMFF parameters (e.g. PF6-): xTB below, or the ETKDG geometry
            pass
        pos = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
        if relax == "xtb":
            from ase.calculators.calculator import CalculationFailed

            try:
                pos = relax_template(numbers, pos, int(round(fc.sum())))
            except CalculationFailed as exc:
                failures.append(f"embedding {attempt}: GFN2-xTB {exc}")
                continue
        return Species(name, smiles, numbers, pos - pos.mean(axis=0), fc, float(Descriptors.MolWt(mol)))
    raise ConfigError(
        f"composition: no usable template for {name!r} ({smiles}) after {TEMPLATE_ATTEMPTS} embeddings: "
        + "; ".join(failures)
    )


@dataclass(frozen=True)
class Composition:
    """Parsed composition: either ``counts`` {name: n} (count form) or solvent mole/mass fractions and salt
    molarities (ratio form). ``smiles`` maps every species name to its SMILES."""

    smiles: dict[str, str]
    counts: dict[str, int] | None = None
    solvent_ratio: dict[str, float] | None = None
    ratio_basis: str = "mole"
    salts: dict[str, float] | None = None  # salt name -> mol/L


_COUNT = re.compile(r"^(\S+)\s+[x×*]\s*(\d+)$")


def _species_smiles(name: str) -> dict[str, str]:
    if name in SALTS:
        return {ion: SPECIES[ion] for ion in SALTS[name]}
    return {name: SPECIES.get(name, name)}


def parse_composition(text: str) -> Composition:
    """See the module docstring. Raises ConfigError with the offending term."""
    text = " ".join(str(text).split())
    terms = [t.strip() for t in re.split(r"\s\+\s", text) if t.strip()]
    if not terms:
        raise ConfigError("composition is empty")
    if all(_COUNT.match(t) for t in terms):
        counts: dict[str, int] = {}
        smiles: dict[str, str] = {}
        for t in terms:
            name, n = _COUNT.match(t).groups()
            for ion, smi in _species_smiles(name).items():
                counts[ion] = counts.get(ion, 0) + int(n)
                smiles[ion] = smi
        return Composition(smiles=smiles, counts=counts)
    head, salts_terms = terms[0], terms[1:]
    parts = head.split()
    if len(parts) == 1:
        names, ratios, basis = parts[0].split(":"), ["1"] * len(parts[0].split(":")), "mole"
    elif len(parts) in (2, 3):
        names, ratios = parts[0].split(":"), parts[1].split(":")
        basis = "mass" if len(parts) == 3 and parts[2].lower() in ("wt", "mass", "w") else "mole"
        if len(parts) == 3 and basis == "mole" and parts[2].lower() not in ("mol", "mole"):
            raise ConfigError(f"composition: ratio basis {parts[2]!r} not understood (use wt or mol)")
    else:
        raise ConfigError(f"composition: cannot parse the solvent term {head!r} (e.g. 'EC:DMC 1:1')")
    if len(names) != len(ratios):
        raise ConfigError(f"composition: {len(names)} solvents but {len(ratios)} ratio numbers in {head!r}")
    try:
        ratio = {n: float(r) for n, r in zip(names, ratios, strict=True)}
    except ValueError:
        raise ConfigError(f"composition: ratio {':'.join(ratios)!r} is not numeric") from None
    if any(v < 0 for v in ratio.values()) or sum(ratio.values()) <= 0:
        raise ConfigError(f"composition: ratios must be >= 0 and not all 0 in {head!r}")
    smiles = {n: SPECIES.get(n, n) for n in names}
    salts: dict[str, float] = {}
    for t in salts_terms:
        m = re.match(r"^(\S+)\s+([0-9.eE+-]+)\s*M$", t)
        if not m:
            raise ConfigError(f"composition: salt term {t!r} must look like 'LiPF6 1.0 M'")
        name, conc = m.group(1), float(m.group(2))
        if conc < 0:
            raise ConfigError(f"composition: negative concentration in {t!r}")
        if name not in SALTS:
            raise ConfigError(
                f"composition: unknown salt {name!r}; known: {', '.join(SALTS)} (or give ions with counts)"
            )
        salts[name] = conc
        for ion in SALTS[name]:
            smiles[ion] = SPECIES[ion]
    total = sum(ratio.values())
    return Composition(
        smiles=smiles, solvent_ratio={k: v / total for k, v in ratio.items()}, ratio_basis=basis, salts=salts
    )


def molecule_counts(
    comp: Composition, species: dict[str, Species], density: float, n_solvent: int
) -> tuple[dict[str, int], float]:
    """(counts per species, box volume Å³) for the target ``density`` g/cm³ (module docstring)."""
    if not density > 0:
        raise ConfigError(f"--density {density}: must be > 0 g/cm³")
    if comp.counts is not None:
        counts = dict(comp.counts)
    else:
        if n_solvent < 1:
            raise ConfigError(f"--n-solvent {n_solvent}: must be >= 1")
        frac = dict(comp.solvent_ratio)
        if comp.ratio_basis == "mass":  # mass fractions -> mole fractions
            mol = {k: v / species[k].molar_mass for k, v in frac.items()}
            s = sum(mol.values())
            frac = {k: v / s for k, v in mol.items()}
        counts = _round_to_total(frac, n_solvent)
        m_solv = sum(counts[k] * species[k].molar_mass for k in frac) / AVOGADRO  # g
        m_salt = sum(c * sum(species[ion].molar_mass for ion in SALTS[s]) for s, c in comp.salts.items())
        denom = density * 1e-24 - 1e-27 * m_salt
        if denom <= 0:
            raise ConfigError("composition: the salt alone is denser than the target density")
        volume = m_solv / denom
        for salt, conc in comp.salts.items():
            n = int(round(conc * AVOGADRO * volume * 1e-27))
            for ion in SALTS[salt]:
                counts[ion] = counts.get(ion, 0) + n
    counts = {k: v for k, v in counts.items() if v > 0}
    if not counts:
        raise ConfigError("composition gives no molecules")
    mass = sum(n * species[k].molar_mass for k, n in counts.items()) / AVOGADRO
    return counts, mass / (density * 1e-24)


def _round_to_total(frac: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts with the given fractions summing exactly to ``total`` (largest remainders)."""
    raw = {k: v * total for k, v in frac.items()}
    out = {k: int(np.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - out[k], reverse=True)[: total - sum(out.values())]:
        out[k] += 1
    return out


def packmol_binary() -> Path:
    """The packmol executable shipped by the ``packmol`` PyPI package (``packmol.cli.get_binary_path``)."""
    try:
        from packmol.cli import get_binary_path
    except ImportError as exc:
        raise ConfigError(f"the packmol package is not installed ({exc})") from None
    return Path(get_binary_path())


def _xyz(path: Path, sp: Species) -> None:
    from ase.data import chemical_symbols

    lines = [str(len(sp.numbers)), sp.name]
    lines += [
        f"{chemical_symbols[z]} {x:.6f} {y:.6f} {w:.6f}"
        for z, (x, y, w) in zip(sp.numbers, sp.positions, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def pack(
    species: dict[str, Species],
    counts: dict[str, int],
    box: float,
    tolerance: float = 2.0,
    seed: int = 0,
    timeout: float = 600.0,
):
    """Run packmol; returns ``ase.Atoms`` (cubic periodic cell, edge ``box`` Å) with mol_id/formal_charge."""
    from ase import Atoms

    exe = packmol_binary()
    order = [k for k in species if counts.get(k, 0) > 0]
    with tempfile.TemporaryDirectory(prefix="scifm-packmol-") as tmp:
        tmp = Path(tmp)
        lines = [
            f"tolerance {tolerance}",
            "filetype xyz",
            "output packed.xyz",
            f"seed {seed + 1}",
            f"pbc 0. 0. 0. {box:.6f} {box:.6f} {box:.6f}",
            "",
        ]
        for k, name in enumerate(order):
            _xyz(tmp / f"s{k}.xyz", species[name])
            lines += [
                f"structure s{k}.xyz",
                f"  number {counts[name]}",
                f"  inside box 0. 0. 0. {box:.6f} {box:.6f} {box:.6f}",
                "end structure",
                "",
            ]
        (tmp / "pack.inp").write_text("\n".join(lines))
        with open(tmp / "pack.inp") as stdin:
            try:
                proc = subprocess.run(
                    [str(exe)],
                    stdin=stdin,
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
            except subprocess.TimeoutExpired:
                raise DataError(
                    "packmol", f"did not finish within {timeout:.0f} s (box too dense?)"
                ) from None
        out = tmp / "packed.xyz"
        if not out.is_file() or "Success" not in proc.stdout:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise DataError(
                "packmol", "packing failed (try a lower density or tolerance): " + " | ".join(tail)
            )
        import ase.io

        packed = ase.io.read(out, format="xyz")
    numbers, mol_id, fc, names = [], [], [], []
    m = 0
    for name in order:
        sp = species[name]
        for _ in range(counts[name]):
            numbers.append(sp.numbers)
            fc.append(sp.formal_charges)
            mol_id.append(np.full(len(sp.numbers), m))
            m += 1
        names.append(name)
    numbers = np.concatenate(numbers)
    if not np.array_equal(numbers, packed.get_atomic_numbers()):
        raise DataError("packmol", "output atoms do not match the input molecules")
    atoms = Atoms(numbers=numbers, positions=packed.positions, cell=np.eye(3) * box, pbc=True)
    atoms.arrays["mol_id"] = np.concatenate(mol_id)
    atoms.arrays["formal_charge"] = np.concatenate(fc)
    atoms.info["species"] = " ".join(f"{n}:{counts[n]}" for n in names)
    atoms.info["charge"] = float(round(atoms.arrays["formal_charge"].sum()))
    return atoms


def build_box(
    composition: str, density: float, n_solvent: int = 100, tolerance: float = 2.0, seed: int = 0
) -> tuple:
    """(atoms, report): a packed periodic box; report holds counts, box edge Å, volume Å³, density g/cm³,
    molarity mol/L per salt ion, total charge."""
    comp = parse_composition(composition)
    species = {name: make_species(name, smi, seed) for name, smi in comp.smiles.items()}
    counts, volume = molecule_counts(comp, species, density, n_solvent)
    box = volume ** (1.0 / 3.0)
    atoms = pack(species, counts, box, tolerance=tolerance, seed=seed)
    from .thermo import density_g_cm3

    report = {
        "composition": composition,
        "counts": counts,
        "charges": {k: species[k].charge for k in counts},
        "box_A": box,
        "volume_A3": volume,
        "density_g_cm3": density_g_cm3(atoms),
        "n_atoms": len(atoms),
        "n_molecules": int(sum(counts.values())),
        "total_charge": float(atoms.info["charge"]),
        "concentration_mol_L": {
            k: counts[k] / (AVOGADRO * volume * 1e-27) for k in counts if species[k].charge != 0
        },
    }
    return atoms, report
