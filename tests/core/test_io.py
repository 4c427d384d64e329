"""Safe loading: weights-only torch checkpoints and the restricted unpickler refuse code execution."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from scifm.core.errors import DataError
from scifm.core.io import (
    BUILTIN_GLOBALS,
    NUMPY_GLOBALS,
    atomic_output,
    load_checkpoint,
    safe_pickle_load,
    safe_pickle_loads,
)


class Payload:
    """A class a weights-only / restricted load must refuse to construct."""

    def __init__(self):
        self.x = 1


# ------------------------------------------------------------------ torch checkpoints
def test_load_checkpoint_plain_state(tmp_path):
    state = {"state_dict": {"w": torch.arange(3.0)}, "epoch": 2, "names": ["a", "b"], "lr": 1e-3}
    torch.save(state, tmp_path / "ok.ckpt")
    back = load_checkpoint(tmp_path / "ok.ckpt")
    assert (
        back["epoch"] == 2
        and back["names"] == ["a", "b"]
        and torch.equal(back["state_dict"]["w"], state["state_dict"]["w"])
    )


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DataError, match="garbage.ckpt"):
        load_checkpoint(tmp_path / "garbage.ckpt")
    torch.save({"w": torch.zeros(1000)}, tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.ckpt"):
        load_checkpoint(tmp_path / "truncated.ckpt")


def test_load_checkpoint_refuses_foreign_globals(tmp_path):
    torch.save({"obj": Payload()}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="Payload"):
        load_checkpoint(tmp_path / "foreign.pt")
    # explicitly allowed classes do load
    back = load_checkpoint(tmp_path / "foreign.pt", safe_globals=[Payload])
    assert isinstance(back["obj"], Payload) and back["obj"].x == 1


# ------------------------------------------------------------------ restricted unpickler
def test_os_system_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    # protocol 0 by hand: os.system("touch <marker>")
    evil = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    with pytest.raises(DataError, match=r"os\.system") as info:
        safe_pickle_loads(evil, source="data.lmdb", record="key 7")
    assert "data.lmdb [key 7]" in str(info.value)
    assert not marker.exists()

    class Evil:  # the same attack through __reduce__ at a modern protocol (STACK_GLOBAL)
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    modern = pickle.dumps({"ok": 1, "bad": Evil()}, protocol=5)
    with pytest.raises(DataError, match=r"posix\.system|os\.system"):
        safe_pickle_loads(modern)
    assert not marker.exists()


def test_builtin_tricks_are_refused():
    getattr_trick = pickle.dumps(getattr)  # a builtin that is not a container
    with pytest.raises(DataError, match=r"builtins\.getattr"):
        safe_pickle_loads(getattr_trick)
    with pytest.raises(DataError, match="Payload"):
        safe_pickle_loads(pickle.dumps(Payload()))
    with pytest.raises(DataError, match="corrupt"):
        safe_pickle_loads(b"\x80\x05garbage")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_round_trips(protocol):
    obj = {
        "d": {"a": 1, "b": [1.5, -2, None, True]},
        "t": (1, "two", b"three"),
        "s": {1, 2, 3},
        "f": frozenset({"x"}),
        "c": 1 + 2j,
        "o": collections.OrderedDict(z=1, a=2),
    }
    assert safe_pickle_loads(pickle.dumps(obj, protocol=protocol)) == obj


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_only_when_allowed(protocol):
    arrays = {
        "pos": np.arange(6.0).reshape(2, 3),
        "z": np.array([1, 8], dtype=np.int64),
        "e": np.float64(-1.5),
    }
    data = pickle.dumps(arrays, protocol=protocol)
    with pytest.raises(DataError, match="numpy"):
        safe_pickle_loads(data)
    back = safe_pickle_loads(data, allowed=BUILTIN_GLOBALS | NUMPY_GLOBALS)
    np.testing.assert_array_equal(back["pos"], arrays["pos"])
    assert back["z"].dtype == np.int64 and back["e"] == -1.5
    # object arrays still go through the allow-list for their elements
    obj = np.array([Payload()], dtype=object)
    with pytest.raises(DataError, match="Payload"):
        safe_pickle_loads(pickle.dumps(obj, protocol=protocol), allowed=BUILTIN_GLOBALS | NUMPY_GLOBALS)


def test_allowed_accepts_strings_and_file_paths(tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(collections.Counter("aab"), protocol=2))
    with pytest.raises(DataError, match=r"data\.pkl.*collections\.Counter"):
        safe_pickle_load(path)
    assert safe_pickle_load(path, allowed={"collections.Counter"}) == {"a": 2, "b": 1}
    with pytest.raises(DataError, match="not found"):
        safe_pickle_load(tmp_path / "nope.pkl")


def test_atomic_output_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
