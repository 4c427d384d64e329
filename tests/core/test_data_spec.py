import os
import shutil

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from scifm.core.data.atomistic import AtomisticH5, validate_file, write_frames
from scifm.core.data.extxyz import read_extxyz, write_extxyz
from scifm.core.data.splits import split_by_trajectory
from scifm.core.errors import DataError


def _frames(n=6, stress=True):
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy()
        if stress:
            a.get_stress()
        a.arrays["charges"] = np.zeros(len(a))
        a.info.update(traj_id=k // 2, step=k % 2, dipole=np.array([0.1, 0.2, 0.3]))
        out.append(a)
    return out


def test_h5_round_trip_all_labels(tmp_path):
    frames = _frames()
    path = write_frames(tmp_path / "d.h5", frames, attrs={"level_of_theory": "EMT"})
    ds = AtomisticH5(path)
    assert len(ds) == 6 and ds.attrs["level_of_theory"] == "EMT"
    for k, a in enumerate(frames):
        b = ds.to_atoms(k)
        np.testing.assert_allclose(b.positions, a.positions)
        np.testing.assert_allclose(b.get_forces(), a.get_forces())
        np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-12)
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy())
        assert b.info["traj_id"] == k // 2 and b.info["step"] == k % 2
        np.testing.assert_allclose(b.info["dipole"], [0.1, 0.2, 0.3])


def test_extxyz_round_trip(tmp_path):
    frames = _frames(stress=False)
    write_extxyz(tmp_path / "d.extxyz", frames)
    back = read_extxyz(tmp_path / "d.extxyz")
    assert len(back) == 6
    np.testing.assert_allclose(back[3].get_forces(), frames[3].get_forces())


def test_split_by_trajectory_is_disjoint_and_reproducible():
    traj = np.repeat(np.arange(20), 5)
    s1 = split_by_trajectory(traj, {"train": 0.8, "valid": 0.1, "test": 0.1}, seed=3)
    s2 = split_by_trajectory(traj, {"train": 0.8, "valid": 0.1, "test": 0.1}, seed=3)
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])
    sets = [set(traj[v]) for v in s1.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(v) for v in s1.values()) == 100 and len(sets[0]) == 16


# --- the validator rejects each malformed file ---------------------------------------------------------


def _copy(tmp_path, src, name):
    dst = tmp_path / name
    shutil.copy(src, dst)
    return dst


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h: h["positions"].__setitem__((0, 0), np.nan), "NaN or inf"),
        (lambda h: h["forces"].__setitem__((2, 1), np.inf), "NaN or inf"),
        (lambda h: h["numbers"].__setitem__(0, 0), "unknown element"),
        (lambda h: h["numbers"].__setitem__(1, 150), "unknown element"),
        (lambda h: h["positions"].__setitem__(1, h["positions"][0] + 0.01), "closer than 0.1"),
        (lambda h: h.__delitem__("forces"), "missing dataset 'forces'"),
        (lambda h: h.attrs.__setitem__("spec", "other"), "not an atomistic spec"),
    ],
)
def test_validator_rejects_malformed_files(tmp_path, mutate, message):
    good = write_frames(tmp_path / "good.h5", _frames(3))
    bad = _copy(tmp_path, good, "bad.h5")
    with h5py.File(bad, "r+") as h:
        mutate(h)
    with pytest.raises(DataError, match=message) as err:
        validate_file(bad)
    assert "bad.h5" in str(err.value)


def test_truncated_h5_is_reported(tmp_path):
    good = write_frames(tmp_path / "good.h5", _frames(3))
    data = good.read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="trunc.h5.*(truncated|corrupt)"):
        AtomisticH5(bad)


def test_writer_refuses_bad_frames_and_leaves_nothing(tmp_path):
    frames = _frames(3)
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]])
    a.calc = SinglePointCalculator(a, energy=0.0, forces=np.zeros((2, 3)))
    target = tmp_path / "out.h5"
    with pytest.raises(DataError, match=r"\[frame 3\].*closer than 0.1"):
        write_frames(target, frames + [a])
    assert not target.exists() and os.listdir(tmp_path) == []


def test_writer_keeps_previous_file_when_new_data_is_bad(tmp_path):
    target = write_frames(tmp_path / "out.h5", _frames(2))
    before = target.read_bytes()
    m = molecule("H2O")  # no labels at all
    with pytest.raises(DataError, match="missing label 'energy'"):
        write_frames(target, [m])
    assert target.read_bytes() == before


def test_extxyz_wrong_atom_count_names_frame(tmp_path):
    path = tmp_path / "bad.extxyz"
    write_extxyz(path, _frames(3, stress=False))
    lines = path.read_text().splitlines()
    # Frame 1 header claims 5 atoms while 4 follow.
    n = int(lines[0])
    lines[n + 2] = str(n + 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad.extxyz.*frame 1"):
        read_extxyz(path)


def test_split_gives_every_split_a_trajectory_when_possible():
    fractions = {"train": 0.8, "valid": 0.1, "test": 0.1}
    sizes = {
        n: [len(set(v)) for v in split_by_trajectory(np.arange(n), fractions, seed=0).values()]
        for n in (3, 4, 24)
    }
    assert sizes == {3: [1, 1, 1], 4: [2, 1, 1], 24: [19, 3, 2]}
