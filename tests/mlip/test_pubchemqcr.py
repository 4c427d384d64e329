"""PubChemQCR: reader on our own generated shards (every quirk), restricted unpickling, splits, metrics."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

pytest.importorskip("lmdb")
pytest.importorskip("tblite")
pytest.importorskip("rdkit")

from scifm.core.errors import ConfigError, DataError  # noqa: E402
from scifm.mlip.pubchemqcr.generate import (  # noqa: E402
    CID_BASE,
    GenSettings,
    StageProtocol,
    encode_value,
    generate_dataset,
    read_smiles,
    write_shards,
)
from scifm.mlip.pubchemqcr.metrics import (  # noqa: E402
    bond_graph,
    heavy_atom_rmsd,
    kabsch_rmsd,
    relaxation_summary,
    s2ef_metrics,
    same_bond_graph,
)
from scifm.mlip.pubchemqcr.reader import (  # noqa: E402
    PubChemQCR,
    PubChemQCRFrames,
    open_pubchemqcr,
    open_spec,
    parse_spec,
)
from scifm.mlip.pubchemqcr.splits import paper_split, read_split_file  # noqa: E402
from scifm.mlip.pubchemqcr.units import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV  # noqa: E402

FAST = {
    "pm3": StageProtocol("GFN1-xTB", 0.5, 15, "BFGS"),
    "hf": StageProtocol("GFN1-xTB", 0.2, 15, "LBFGS"),
    "DFT_1st": StageProtocol("GFN2-xTB", 0.2, 15, "BFGS"),
    "DFT_2nd": StageProtocol("GFN2-xTB", 0.1, 15, "LBFGS"),
}
MOLS = [(0, "O", "water"), (1, "CCO", "ethanol"), (2, "C", "methane"), (3, "CC(=O)O", "acetic_acid")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 molecules, 2 per shard; molecule 0 has DFT_1st None, molecule 1 planted bad steps, 3 is SMASH."""
    out = tmp_path_factory.mktemp("pcqr")
    summary = generate_dataset(
        out,
        MOLS,
        settings=GenSettings(protocol=FAST, smash_every=4),
        plant=True,
        progress=False,
        shard_size=2,
    )
    assert summary["n_failed"] == 0 and summary["shards"] == ["Data00.lmdb", "Data01.lmdb"]
    return out


def _raw(shards, cid):
    from scifm.mlip.pubchemqcr.reader import _open_env  # one handle per file and process (py-lmdb rule)

    for p in sorted(shards.glob("*.lmdb")):
        with _open_env(p).begin() as txn:
            v = txn.get(f"{cid:09d}".encode())
        if v is not None:
            return pickle.loads(gzip.decompress(v))  # our own trusted test data
    raise KeyError(cid)


def test_layout_matches_the_original(shards):
    rec = _raw(shards, CID_BASE + 2)
    assert set(rec) == {"pm3", "hf", "DFT_1st", "DFT_2nd"}
    step = rec["DFT_1st"][0]
    assert set(step) == {"coordinates", "energy", "gradient"}
    assert set(step["coordinates"][0]) == {"atom", "charge", "x", "y", "z"}
    assert set(step["gradient"][0]) == {"atom", "charge", "dx", "dy", "dz"}
    assert isinstance(step["energy"], float) and -50 < step["energy"] < 0  # Hartree, not eV
    # the last geometry of one stage is the first of the next
    for a, b in (("pm3", "hf"), ("hf", "DFT_1st"), ("DFT_1st", "DFT_2nd")):
        last = [[c[k] for k in "xyz"] for c in rec[a][-1]["coordinates"]]
        first = [[c[k] for k in "xyz"] for c in rec[b][0]["coordinates"]]
        assert last == first, (a, b)
    assert rec["DFT_1st"] and _raw(shards, CID_BASE)["DFT_1st"] is None  # planted "HF copied" quirk
    assert "charge" not in _raw(shards, CID_BASE + 3)["DFT_1st"][0]["coordinates"][0]  # SMASH-style


def test_every_quirk_is_skipped_and_counted(shards):
    mols = PubChemQCR(shards, stage="1st")
    ds = PubChemQCRFrames(mols)
    c = ds.report.counts
    assert (
        c["stage_none"],
        c["step_no_energy"],
        c["step_no_gradient"],
        c["step_atom_mismatch"],
        c["step_non_finite"],
    ) == (1, 1, 1, 1, 1)
    n_smash = len(_raw(shards, CID_BASE + 3)["DFT_1st"])
    assert c["step_no_charge"] == 1 + n_smash  # kept, flagged
    n_raw = sum(len(_raw(shards, CID_BASE + k)["DFT_1st"]) for k in (1, 2, 3))
    assert len(ds) == n_raw - 4 == ds.report.steps_kept
    assert ds.report.molecules_kept == 3 and ds.report.molecules_read == 4
    assert "stage_none=1" in ds.report.summary()
    no_q = [ds[k] for k in range(len(ds)) if "charges" not in ds[k].arrays]
    assert len(no_q) == 1 + n_smash
    assert all(len(a) == len(ds[0]) or a.info["cid"] != CID_BASE + 1 for a in (ds[k] for k in range(len(ds))))


def test_units_invert_the_generator_exactly(shards):
    """Reader energies/forces equal GFN2-xTB at the stored geometry (the generator's eV, round-tripped)."""
    from tblite.ase import TBLite

    a = open_pubchemqcr(f"pubchemqcr:{shards}?stage=2nd")[-1]
    b = a.copy()
    b.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-7
    # forces are linear in the SCF residual (energy quadratic): a fresh SCF vs the optimizer's restarted one
    # differ by ~1e-4 eV/Å; a unit slip (Bohr vs Å, eV vs Ha) would be off by a factor 1.9 or 27
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-3)
    assert a.info["stage"] == "DFT_2nd" and a.info["traj_id"] == a.info["cid"] >= CID_BASE
    assert HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM == HARTREE_TO_EV * 1.8897


def test_stages_relaxed_reference_and_targets(shards):
    first = open_pubchemqcr(f"pubchemqcr:{shards}?stage=1st")
    second = open_pubchemqcr(f"pubchemqcr:{shards}?stage=2nd")
    mixing = open_pubchemqcr(f"pubchemqcr:{shards}?stage=mixing")
    assert len(mixing) == len(first) + len(second)  # molecule 0's missing DFT_1st: DFT_2nd only
    m = PubChemQCR(shards, stage="mixing")
    t = m.trajectory(1)
    assert t.relaxed.raw_stage == "DFT_2nd" and t.relaxed is t.steps[-1]
    steps = [s.index for s in t.steps]
    assert steps == sorted(steps)
    # the paper's per-atom target: (E - sum of atom references) / N with the generator's xTB atoms
    a = mixing[0]
    refs = json.loads((shards / "atom_refs.json").read_text())["DFT_2nd"]
    e_atoms = sum(refs[s] for s in a.get_chemical_symbols()) * HARTREE_TO_EV
    assert a.info["energy_per_atom"] == pytest.approx((a.get_potential_energy() - e_atoms) / len(a), abs=1e-9)
    assert -10 < a.info["energy_per_atom"] < -1  # an atomisation energy per atom, eV
    ref = open_pubchemqcr(f"pubchemqcr:{shards}?stage=mixing&energy=referenced")[0]
    assert ref.get_potential_energy() == pytest.approx(a.get_potential_energy() - e_atoms, abs=1e-9)
    np.testing.assert_array_equal(ref.get_forces(), a.get_forces())
    smash = PubChemQCR(shards, stage="1st_smash")
    kept = list(smash.trajectories())
    assert [t.cid for t in kept] == [CID_BASE + 3] and smash.report.counts["not_smash"] == 2
    assert len(open_pubchemqcr(f"pubchemqcr:{shards}?stage=pm3")) == len(_raw(shards, CID_BASE)["pm3"]) + sum(
        len(_raw(shards, CID_BASE + k)["pm3"]) for k in (1, 2, 3)
    )


def _malicious_shard(path, value: bytes, key=b"000000042"):
    import lmdb

    env = lmdb.open(str(path), subdir=False, map_size=1 << 22, lock=False)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    shard = tmp_path / "Data00.lmdb"
    _malicious_shard(shard, gzip.compress(pickle.dumps({"pm3": [_Evil(marker)]})))
    mols = PubChemQCR(shard, stage="pm3")
    with pytest.raises(DataError) as err:
        mols.trajectory(0)
    msg = str(err.value)
    assert "Data00.lmdb" in msg and "000000042" in msg and "system" in msg
    assert not marker.exists()


def test_corrupt_values_and_bad_keys(tmp_path):
    shard = tmp_path / "Data00.lmdb"
    _malicious_shard(shard, b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        PubChemQCR(shard).trajectory(0)
    bad = tmp_path / "bad"
    bad.mkdir()
    write_shards([(5, encode_value({"pm3": None}))], bad)
    _malicious_shard(bad / "Data01.lmdb", encode_value({}), key=b"abc")
    mols = PubChemQCR(bad, stage="pm3")
    assert len(mols) == 1 and mols.report.counts["bad_key"] == 1
    with pytest.raises(DataError, match="no .*lmdb"):
        PubChemQCR(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="stage"):
        PubChemQCR(bad, stage="dft")
    with pytest.raises(ConfigError, match="unknown option"):
        parse_spec("pubchemqcr:x?stagee=1st")


def test_synthetic_steps_malformed_and_too_close(tmp_path):
    good = {
        "coordinates": [
            {"atom": "H", "charge": 0.0, "x": 0.0, "y": 0.0, "z": 0.0},
            {"atom": "H", "charge": 0.0, "x": 0.74, "y": 0.0, "z": 0.0},
        ],
        "energy": -1.17,
        "gradient": [
            {"atom": "H", "dx": 0.01, "dy": 0.0, "dz": 0.0},
            {"atom": "H", "dx": -0.01, "dy": 0.0, "dz": 0.0},
        ],
    }
    close = json.loads(json.dumps(good))
    close["coordinates"][1]["x"] = 0.01
    malformed = {"coordinates": [{"atom": "H"}], "energy": 1.0, "gradient": [{}]}
    write_shards([(7, {"hf": [good, close, malformed, "junk"]})], tmp_path)
    m = PubChemQCR(tmp_path, stage="hf")
    t = m.trajectory(0, m.report)
    assert len(t.steps) == 1 and m.report.counts["step_atoms_too_close"] == 1
    assert m.report.counts["step_malformed"] == 2
    np.testing.assert_allclose(t.steps[0].forces[0], [-0.01 * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, 0, 0])
    assert m.report.counts["stage_missing"] == 0
    m2 = PubChemQCR(tmp_path, stage="pm3")
    assert m2.trajectory(0, m2.report) is None and m2.report.counts["stage_missing"] == 1


def test_paper_split_disjoint_reproducible():
    cids = np.arange(1000, 1010)
    a = paper_split(cids, subset=True)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [6, 2, 2]
    assert sorted(np.concatenate(list(a.values()))) == list(cids)
    b = paper_split(cids, subset=True)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    full = paper_split(np.arange(100), subset=False)
    assert [len(full[k]) for k in ("train", "valid", "test")] == [80, 10, 10]
    assert not np.array_equal(paper_split(cids, True, seed=1)["train"], a["train"])
    import random

    idx = list(range(10))
    random.seed(42)
    random.shuffle(idx)  # the paper's recipe
    assert list(a["train"]) == [1000 + i for i in idx[:6]]


def test_split_file(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"train": ["000000001", 2], "val": [3], "test": [4]}))
    s = read_split_file(f)
    assert list(s["train"]) == [1, 2] and list(s["valid"]) == [3]
    f.write_text(json.dumps({"train": [1, 2], "test": [2]}))
    with pytest.raises(DataError, match="share"):
        read_split_file(f)


def test_spec_splits_are_disjoint_by_cid(shards, tmp_path):
    parts = {k: open_spec(f"pubchemqcr:{shards}?split={k}&stage=2nd") for k in ("train", "valid", "test")}
    cids = {k: set(ds.traj_ids.tolist()) for k, ds in parts.items()}
    assert not (cids["train"] & cids["valid"] or cids["train"] & cids["test"] or cids["valid"] & cids["test"])
    assert set().union(*cids.values()) == {CID_BASE + k for k in range(4)}
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": [CID_BASE + 1], "valid": [], "test": [CID_BASE + 2]}))
    test = open_spec(f"pubchemqcr:{shards}?split=test&split_file={f}&stage=2nd")
    assert set(test.traj_ids.tolist()) == {CID_BASE + 2}


def test_lazy_frames_pickle_and_index_cache(shards, tmp_path):
    cache = tmp_path / "index.npz"
    ds = open_spec(f"pubchemqcr:{shards}?stage=1st&index_cache={cache}")
    assert cache.is_file()
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker / DDP rank receives
    for k in (0, len(ds) - 1):
        np.testing.assert_array_equal(clone[k].positions, ds[k].positions)
    again = open_spec(f"pubchemqcr:{shards}?stage=1st&index_cache={cache}")
    np.testing.assert_array_equal(again.mol_index, ds.mol_index)
    assert again.report.counts == ds.report.counts


def test_convert_to_atomistic_h5(shards, tmp_path):
    from scifm.core.data.atomistic import AtomisticH5
    from scifm.mlip.pubchemqcr.convert import convert

    out = tmp_path / "pcqr.h5"
    s = convert(str(shards), out, stage="1st", progress=False)
    frames = open_pubchemqcr(f"pubchemqcr:{shards}?stage=1st")
    h5 = AtomisticH5(out)
    assert len(h5) == len(frames) == s["n_frames"]
    b = h5.to_atoms(3)
    assert b.get_potential_energy() == pytest.approx(frames[3].get_potential_energy(), abs=1e-9)
    assert b.info["traj_id"] == frames[3].info["cid"]
    assert json.loads((tmp_path / "pcqr.skipped.json").read_text())["counts"]["stage_none"] == 1
    assert set(json.loads((tmp_path / "pcqr.splits.json").read_text())) == {"train", "valid", "test"}
    parts = convert(str(shards), tmp_path / "multi.h5", frames_per_file=5, progress=False)
    assert len(parts["files"]) > 1 and sum(len(AtomisticH5(f)) for f in parts["files"]) == len(frames)


def test_generator_is_reproducible(tmp_path):
    one = {k: v for k, v in FAST.items()}
    s = GenSettings(protocol=one, smash_every=0)
    generate_dataset(tmp_path / "a", [(0, "O", "water")], settings=s, progress=False)
    generate_dataset(tmp_path / "b", [(0, "O", "water")], settings=s, progress=False)
    assert _raw(tmp_path / "a", CID_BASE) == _raw(tmp_path / "b", CID_BASE)
    with pytest.raises(ConfigError, match="already holds"):
        generate_dataset(tmp_path / "a", [(0, "O", "water")], settings=s, progress=False)


def test_bundled_smiles_list():
    from rdkit import Chem

    mols = read_smiles()
    assert len(mols) >= 300 and len({n for _, n in mols}) == len(mols)
    for smi, name in mols:
        m = Chem.AddHs(Chem.MolFromSmiles(smi))
        assert m.GetNumAtoms() <= 40, name
        assert {a.GetSymbol() for a in m.GetAtoms()} <= {"C", "H", "N", "O", "F", "S", "Cl"}, name
        assert Chem.GetFormalCharge(m) == 0, name


def test_s2ef_metrics_by_hand():
    # frame 0: 2 atoms, dE = 0.01 eV; frame 1: 1 atom, dE = -0.03 eV
    e_ref, e_pred, n = [1.0, 2.0], [1.01, 1.97], [2, 1]
    f_ref = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    f_pred = f_ref + np.array([[0.03, 0.04, 0], [0, 0, 0], [0.0, 0, 0.02]])
    m = s2ef_metrics(e_pred, e_ref, n, f_pred, f_ref)
    assert m["energy_mae_meV_per_atom"] == pytest.approx(1000 * (0.005 + 0.03) / 2)
    # frame 0: sqrt((0.05^2 + 0) / 2); frame 1: 0.02
    assert m["forces_rmse_meV_per_A"] == pytest.approx(1000 * (np.sqrt(0.0025 / 2) + 0.02) / 2)
    assert m["forces_mae_meV_per_A"] == pytest.approx(1000 * 0.09 / 9)
    # frame 0: |dE| 0.01 < 0.02 but 0.04 > 0.03 -> fail; frame 1: |dE| 0.03 > 0.02 -> fail
    assert m["efwt"] == 0.0
    assert s2ef_metrics([1.0], [1.001], [1], [[0.0, 0, 0.01]], [[0, 0, 0.0]])["efwt"] == 1.0
    cos0 = (1.03) / np.linalg.norm([1.03, 0.04, 0])
    assert m["forces_cosine"] == pytest.approx((cos0 + 1 + 1) / 3)


def test_kabsch_rmsd():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(7, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    assert kabsch_rmsd(p @ q.T + [1.0, -2.0, 3.0], p) == pytest.approx(0, abs=1e-10)
    # moving one of 4 atoms by 0.2 Å along z off a planar square: RMSD is known after alignment
    sq = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]])
    moved = sq.copy()
    moved[0, 2] = 0.2
    r = kabsch_rmsd(moved, sq)
    assert 0 < r <= np.sqrt(0.2**2 / 4) + 1e-12
    # a mirror image is not superposable by a proper rotation
    chiral = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0], [0.3, 0.2, 0.1]])
    assert kabsch_rmsd(chiral * [1, 1, -1], chiral) > 0.1
    numbers = np.array([8, 1, 1])
    assert heavy_atom_rmsd(numbers, p[:3], p[:3])[1] == "all"
    assert heavy_atom_rmsd(np.array([6, 6, 6, 1]), sq, sq)[1] == "heavy"


def test_relaxation_summary_by_hand():
    res = [
        {"converged": True, "steps": 10, "seconds": 1.0, "energy_error_meV_per_atom": 2.0, "rmsd_A": 0.05},
        {"converged": False, "steps": 30, "seconds": 3.0, "energy_error_meV_per_atom": -4.0, "rmsd_A": 0.2},
        {
            "converged": False,
            "steps": 0,
            "seconds": 0.5,
            "energy_error_meV_per_atom": None,
            "rmsd_A": None,
            "error": "boom",
        },
    ]
    s = relaxation_summary(res)
    assert s["n_molecules"] == 3 and s["n_failed"] == 1
    assert s["success_rate"] == pytest.approx(1 / 3)
    assert s["energy_error_meV_per_atom_mae"] == pytest.approx(3.0)
    assert s["rmsd_A_mean"] == pytest.approx(0.125) and s["rmsd_A_median"] == pytest.approx(0.125)
    assert s["frac_rmsd_below_0.1A"] == pytest.approx(1 / 3) and s["frac_rmsd_below_0.3A"] == pytest.approx(
        2 / 3
    )
    assert s["steps_mean"] == pytest.approx(40 / 3) and s["seconds_per_relaxation"] == pytest.approx(1.5)
    assert s["converged_rate"] == pytest.approx(1 / 3) and s["bonds_kept_rate"] == pytest.approx(2 / 3)
    # a converged relaxation into a collapsed geometry is not a success
    res[0]["bonds_kept"] = False
    s = relaxation_summary(res)
    assert s["success_rate"] == 0.0 and s["converged_rate"] == pytest.approx(1 / 3)


def test_bond_graph_of_water_and_a_collapsed_water():
    numbers = np.array([8, 1, 1])
    water = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.9266, 0.0]])
    adj = bond_graph(numbers, water)
    assert adj.tolist() == [[False, True, True], [True, False, False], [True, False, False]]
    assert same_bond_graph(numbers, water + 0.05, water)  # a small displacement keeps the bonds
    collapsed = water.copy()
    collapsed[2] = collapsed[1] + [0.1, 0.0, 0.0]  # the two H on top of each other: a new H-H bond
    assert not same_bond_graph(numbers, collapsed, water)
    broken = water.copy()
    broken[1] = [3.0, 0.0, 0.0]  # O-H stretched to 3 Å: bond broken
    assert not same_bond_graph(numbers, broken, water)
