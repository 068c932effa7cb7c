"""Checkpoints: round trip, atomic save, and every kind of bad checkpoint leaving the model untouched."""
import json
import os

import pytest
import torch
from torch import nn

import qengine
from qengine import CheckpointError


class Tiny(nn.Module):
    def __init__(self, hidden=128):
        super().__init__()
        self.config = {"hidden": hidden}  # stands in for a diffusers config
        self.proj_in = nn.Linear(64, hidden)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.proj_out = nn.Linear(hidden, 64)

    def forward(self, x, img):
        return self.proj_out(torch.relu(self.proj_in(x))), self.conv(img)


class Other(Tiny):
    pass


def make(hidden=128, seed=0):
    torch.manual_seed(seed)
    return Tiny(hidden)


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 64, generator=g), torch.randn(1, 16, 6, 6, generator=g)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


def assert_unchanged(model, snap):
    state, types = snap
    assert [type(m) for m in model.modules()] == types
    now = model.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)
    assert not qengine.is_quantized(model)


@pytest.fixture
def ckpt(tmp_path):
    model = qengine.quantize(make(), qengine.QuantConfig.preset("w4a8", rank=16, conv_scheme="w8a8-fp8"))
    path = qengine.save(model, tmp_path / "ckpt")
    return model, path


def test_round_trip_gives_identical_outputs(ckpt):
    model, path = ckpt
    fresh = make(seed=99)  # different float weights: everything must come from the checkpoint
    qengine.load(fresh, path)
    x, img = inputs()
    for a, b in zip(model(x, img), fresh(x, img)):
        assert torch.equal(a, b)
    assert type(fresh.proj_in).__name__ == "QLinear" and fresh.proj_in.lora_up.shape == (128, 16)
    assert type(fresh.conv).__name__ == "QConv2d"
    meta = json.loads((path / "config.json").read_text())
    assert meta["format_version"] == qengine.formats.FORMAT_VERSION
    assert meta["layers"]["proj_in"]["scheme"] == "w4a8"


def test_load_into_meta_model(ckpt):
    model, path = ckpt
    with torch.device("meta"):
        fresh = Tiny()
    qengine.load(fresh, path)
    assert all(t.device.type == "cpu" for t in fresh.state_dict().values())
    x, img = inputs()
    assert torch.equal(model(x, img)[0], fresh(x, img)[0])


def test_save_requires_a_quantized_model(tmp_path):
    with pytest.raises(CheckpointError, match="not quantized"):
        qengine.save(make(), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_failed_save_leaves_the_old_checkpoint_intact(ckpt, monkeypatch):
    model, path = ckpt
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        qengine.save(model, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(os.listdir(path.parent)) == ["ckpt"]  # no temporary folders left behind
    monkeypatch.undo()
    qengine.load(make(), path)


def test_save_replaces_an_existing_checkpoint(ckpt, tmp_path):
    _, path = ckpt
    other = qengine.quantize(make(seed=5), "w8a8-int8")
    qengine.save(other, path)
    fresh = qengine.load(make(), path)
    assert fresh.proj_in.layer_config.scheme == "w8a8-int8"
    assert sorted(os.listdir(path.parent)) == ["ckpt"]


def corrupt_config(path):
    (path / "config.json").write_text("{ not json")


def wrong_version(path):
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 999
    (path / "config.json").write_text(json.dumps(meta))


def truncate_tensors(path):
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def flip_a_byte(path):
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))


def remove_tensors(path):
    (path / "model.safetensors").unlink()


def bad_scheme(path):
    meta = json.loads((path / "config.json").read_text())
    meta["layers"]["proj_in"]["scheme"] = "w3a3"
    (path / "config.json").write_text(json.dumps(meta))


CORRUPTIONS = {
    corrupt_config: "not valid JSON",
    wrong_version: "format version 999",
    truncate_tensors: "truncated or replaced",
    flip_a_byte: "SHA-256.*corrupt",
    remove_tensors: "model.safetensors is missing",
    bad_scheme: "invalid quantization config.*w3a3",
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=lambda f: f.__name__)
def test_bad_checkpoint_leaves_model_unchanged(ckpt, corrupt):
    _, path = ckpt
    corrupt(path)
    model = make()
    snap = snapshot(model)
    with pytest.raises(CheckpointError, match=CORRUPTIONS[corrupt]):
        qengine.load(model, path)
    assert_unchanged(model, snap)


def test_corrupt_header_without_hash_check(ckpt):
    _, path = ckpt
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:16] = b"\x00garbage"  # inside the JSON header
    f.write_bytes(bytes(data))
    model = make()
    snap = snapshot(model)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        qengine.load(model, path, verify_hash=False)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("model_fn,match", [
    (lambda: Other(), "saved from a Tiny, not a Other"),
    (lambda: make(hidden=256), r"different config \(hidden: checkpoint 128 vs model 256\)"),
])
def test_mismatched_model_is_refused(ckpt, model_fn, match):
    _, path = ckpt
    model = model_fn()
    snap = snapshot(model)
    with pytest.raises(CheckpointError, match=match):
        qengine.load(model, path)
    assert_unchanged(model, snap)


def test_shape_mismatch_without_config_is_refused(ckpt):
    _, path = ckpt
    model = make(hidden=256)
    model.config = None  # no config to compare: the layer shapes still catch it
    snap = snapshot(model)
    with pytest.raises(CheckpointError, match="out_features=256 in the model, 128 in the checkpoint"):
        qengine.load(model, path)
    assert_unchanged(model, snap)


def test_missing_and_already_quantized(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="does not exist"):
        qengine.load(make(), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        qengine.load(make(), tmp_path / "empty")
    model, path = ckpt
    with pytest.raises(CheckpointError, match="already quantized"):
        qengine.load(model, path)
