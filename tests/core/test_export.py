"""Exported models: safetensors + JSON round trip, atomic writes, clear errors, no pickle."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from scifm.core.errors import ConfigError, DataError
from scifm.core.export import FORMAT_VERSION, load_model, save_model


class Tied(nn.Module):
    """An MLP whose output layer shares its weight with the input embedding (aliased tensors)."""

    def __init__(self, n: int = 5, width: int = 8):
        super().__init__()
        self.embed = nn.Embedding(n, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, n, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor([2.0, 0.5]).repeat(4)[::2])  # non-contiguous view

    def forward(self, idx):
        return self.out(torch.tanh(self.hidden(self.embed(idx))) * self.scale[0])


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = Tied().double()
    cfg = {"n": 5, "width": 8}
    meta = {"units": {"energy": "eV"}, "val_mae": 0.12}
    save_model(tmp_path / "m", name="tied-mlp", config=cfg, state_dict=model.state_dict(), meta=meta)
    name, config, sd, meta_back = load_model(tmp_path / "m")
    assert (name, config, meta_back) == ("tied-mlp", cfg, meta)
    assert set(sd) == set(model.state_dict())
    rebuilt = Tied(**config).double()
    rebuilt.load_state_dict(sd)
    idx = torch.arange(5)
    assert torch.equal(model(idx), rebuilt(idx))
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert record["format"] == "scifm-model" and record["format_version"] == FORMAT_VERSION
    assert record["dtype"] == "float64" and record["created"] and "scifm_version" in record
    # loading from the JSON path works too; only the two files exist (temporary files were renamed)
    assert load_model(tmp_path / "m" / "model.json")[0] == "tied-mlp"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]


def test_weights_file_is_not_a_pickle(tmp_path):
    save_model(tmp_path, "lin", {}, nn.Linear(2, 2).state_dict())
    head = (tmp_path / "model.safetensors").read_bytes()[:16]
    assert not head.startswith(b"\x80") and not head.startswith(b"PK")  # neither pickle nor torch zip


def test_overwrite_replaces_both_files(tmp_path):
    save_model(tmp_path, "a", {"k": 1}, {"w": torch.zeros(3)})
    save_model(tmp_path, "b", {"k": 2}, {"w": torch.ones(3)})
    name, cfg, sd, meta = load_model(tmp_path)
    assert (name, cfg, meta) == ("b", {"k": 2}, None) and torch.equal(sd["w"], torch.ones(3))


def test_corrupt_weights_rejected(tmp_path):
    save_model(tmp_path, "lin", {}, nn.Linear(4, 4).state_dict())
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # flip one byte of tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        load_model(tmp_path)
    # without a checksum to catch it, a truncated file is still a DataError, not a crash
    record = json.loads((tmp_path / "model.json").read_text())
    del record["weights_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(record))
    weights.write_bytes(bytes(data[:40]))
    with pytest.raises(DataError, match="safetensors"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(format="something-else"), "not a sci-fm model"),
        (lambda r: r.update(format_version=FORMAT_VERSION + 1), "newer"),
        (lambda r: r.update(format_version="1"), "format_version"),
        (lambda r: r.pop("config"), "config"),
        (lambda r: r.update(weights_file="../elsewhere.safetensors"), "weights_file"),
    ],
)
def test_bad_json_rejected(tmp_path, edit, message):
    save_model(tmp_path, "lin", {}, nn.Linear(2, 2).state_dict())
    record = json.loads((tmp_path / "model.json").read_text())
    edit(record)
    (tmp_path / "model.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=message):
        load_model(tmp_path)


def test_missing_files_and_garbage_json(tmp_path):
    with pytest.raises(DataError, match="model.json"):
        load_model(tmp_path)
    save_model(tmp_path, "lin", {}, nn.Linear(2, 2).state_dict())
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        load_model(tmp_path)
    save_model(tmp_path, "lin", {}, nn.Linear(2, 2).state_dict())
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(DataError, match="missing"):
        load_model(tmp_path)


def test_bad_inputs_to_save_are_config_errors_and_write_nothing(tmp_path):
    with pytest.raises(ConfigError, match="not a tensor"):
        save_model(tmp_path / "x", "m", {}, {"w": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="JSON"):
        save_model(tmp_path / "y", "m", {"f": object()}, {"w": torch.zeros(1)})
    with pytest.raises(ConfigError, match="name"):
        save_model(tmp_path / "z", "", {}, {"w": torch.zeros(1)})
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    assert not (tmp_path / "y" / "model.json").exists()


def test_task_export_uses_averaged_weights(tmp_path):
    from scifm.core.train import Task

    class T(Task):
        def loss(self, batch, stage):
            return self.model(batch).sum(), {}

    model = nn.Linear(2, 1)
    task = T(model, ema_decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    task.ema.update(model)  # first update with warm-up: decay 0.1, average = theta0 + 0.9
    task.export(tmp_path, name="lin", config={"in": 2}, meta={"note": "ema"})
    _, _, sd, _ = load_model(tmp_path)
    torch.testing.assert_close(sd["weight"], model.weight.detach() - 0.1)
