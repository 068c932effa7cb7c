"""Calibration: streamed observers, per-layer searches, mixed precision, the result file, and
``quantize(calibration=...)`` end to end on tiny diffusers models (random weights: these test the
mechanics; the quality numbers come from the trained reference models, see notes/calibration.md)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import qengine
from qengine.api import build_empty_layer, calibrated_layer, layer_spec
from qengine.calib import CalibrationError, CalibrationResult, SearchOptions, calibrate, mixed_precision_plan
from qengine.calib.observers import Reservoir, collect, skip_concat_splits
from qengine.calib.search import search_conv, search_linear, top_svd
from qengine.config import LayerQuantConfig, QuantConfig
from qengine.nn.quantize_weight import lowrank_split

pytest.importorskip("diffusers")
from qengine.integrations.tiny_models import build_tiny  # noqa: E402

STEPS = 4  # the tiny samplers run 4 steps


def _psnr(a, b):
    return float(10 * torch.log10(b.pow(2).mean() / (a - b).pow(2).mean()))


def test_reservoir_is_bounded_and_uniform_over_steps():
    res = Reservoir(400, torch.Generator().manual_seed(0))
    for step in range(20):  # 20 "steps" of 200 rows each, tagged by their step
        res.add(torch.full((200, 3), float(step)))
    kept = res.get()[:, 0].long()
    assert kept.shape == (400,) and res.seen == 4000
    counts = torch.bincount(kept, minlength=20).float()
    assert counts.min() > 5 and counts.max() < 40  # every step represented, none dominating (expected 20)


def test_observers_see_every_step_and_find_skip_concats():
    model, sample = build_tiny("unet2d")
    names = ["down_blocks.0.resnets.0.conv1", "up_blocks.0.resnets.0.conv_shortcut",
             "down_blocks.1.attentions.0.to_q"]
    obs, tracker = collect(model, names, lambda: sample(model), rows=64, maps=8, probes=3,
                           steps_per_trajectory=STEPS)
    assert tracker.calls == STEPS and len(tracker.probes) == 3
    for name in names:
        o = obs[name]
        ranges = o.step_ranges()
        assert ranges.shape[0] == STEPS
        assert torch.equal(ranges.amax(0), o.absmax)
    assert obs["down_blocks.1.attentions.0.to_q"].reservoir.get().shape[0] == 64
    assert obs["down_blocks.0.resnets.0.conv1"].reservoir.get().dim() == 4
    splits = skip_concat_splits(model)
    for name, at in splits.items():
        conv = model.get_submodule(name)
        assert 0 < at < conv.in_channels
    # up block 0, first resnet: hidden from the mid block (64) + skip from the last down block (64)
    assert splits["up_blocks.0.resnets.0.conv_shortcut"] == 64
    assert "down_blocks.0.resnets.0.conv1" not in splits


def test_top_svd_matches_full_svd():
    w = torch.randn(96, 160)
    w[:, 5] *= 30
    d1, u1 = top_svd(w, 16)
    d2, u2 = lowrank_split(w, 16)
    assert torch.allclose(u1 @ d1, u2 @ d2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheme,group,rank", [("w4a4", 64, 16), ("w8a8-int8", 0, 0)])
def test_smoothing_search_beats_rtn_on_outlier_channels(scheme, group, rank):
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    x = torch.randn(512, 128)
    x[:, [3, 77]] *= 40  # activation outlier channels: what smoothing is for
    cfg = LayerQuantConfig(scheme, group, rank)
    found = search_linear(lin, cfg, x, x.abs().amax(0), SearchOptions())
    assert found.notes["alpha"] is not None and found.notes["alpha"] > 0
    assert found.err < 0.5 * found.err_rtn
    off = search_linear(lin, cfg, x, x.abs().amax(0), SearchOptions(smooth=False))
    assert off.notes["alpha"] is None and "smooth" not in off.calib
    assert found.err < off.err


def test_calibrated_layer_clips_the_residual_and_matches_from_float():
    torch.manual_seed(1)
    lin = nn.Linear(128, 64)
    cfg = LayerQuantConfig("w4a8", 64, 16)
    s = torch.rand(128) + 0.5
    down, up = lowrank_split(lin.weight.detach() * s, 16)
    calib = {"smooth": s, "lora_down": down, "lora_up": up}
    x = torch.randn(8, 128)
    plain = qengine.nn.QLinear.from_float(lin, cfg, smooth=s, lowrank=(down, up))
    same = qengine.api.calibrated_layer(lin, cfg, {**calib, "clip": 1.0})
    torch.testing.assert_close(same(x), plain(x), rtol=1e-5, atol=1e-5)
    clipped = qengine.api.calibrated_layer(lin, cfg, {**calib, "clip": 0.5})
    # the stored group scales are half the unclipped ones: the residual was clipped to 0.5 x absmax
    torch.testing.assert_close(clipped.weight_scale, plain.weight_scale * 0.5, rtol=1e-4, atol=1e-8)


def test_conv_search_reports_split_halves():
    torch.manual_seed(2)
    conv = nn.Conv2d(32, 16, 1)
    x = torch.randn(8, 32, 6, 6)
    x[:, 16:] *= 30  # skip half with a much larger range
    ranges = x.abs().amax(dim=(0, 2, 3))[None]
    found = search_conv(conv, LayerQuantConfig("w8a8-int8"), x, ranges, SearchOptions(), split=16)
    split = found.notes["split"]
    assert split["range_ratio"] > 10
    assert split["err_dynamic"] < found.err  # what a two-scale op would buy
    assert split["err_static"] < found.err
    scales = found.calib["split_input_scale"]  # what a checkpoint of a two-scale conv would carry
    assert scales.shape == (2,) and found.calib["split_at"] == 16
    assert scales.max() / scales.min() > 5  # the halves' ranges differ > 10x
    assert found.err <= found.err_rtn
    # ... and the quantized conv uses them (two static scales, one per half), through a checkpoint too.
    assert found.notes["input_scale"] == "static per half (split shortcut)"
    q = calibrated_layer(conv, LayerQuantConfig("w8a8-int8"), found.calib, backend="reference")
    assert q.split == 16 and torch.equal(q.input_scale, scales)
    spec = layer_spec(q)
    assert spec["split"] == 16
    empty = build_empty_layer(spec, torch.float32, "cpu", "reference")
    assert empty.split == 16 and empty.input_scale.shape == (2,)


def test_mixed_precision_plan_respects_budget_and_density():
    c4 = LayerQuantConfig("w4a8", 64, 0)
    c8 = LayerQuantConfig("w8a8-int8")
    rows = {"a": {"params": 100, "sensitivity": 1.0, "config": c4},
            "b": {"params": 10, "sensitivity": 0.5, "config": c8},
            "c": {"params": 890, "sensitivity": 2.0, "config": c4}}
    assert mixed_precision_plan(rows, 0.0) == {}
    plan = mixed_precision_plan(rows, 0.12)  # 120 of 1000 params: b (density .05) then a (.01); c does not fit
    assert plan == {"b": {"scheme": "none"}, "a": {"scheme": "w8a8-int8", "group_size": 0}}


@pytest.mark.parametrize("arch,scheme", [("unet2d", "w8a8-int8"), ("dit", "w4a4")])
def test_calibrate_end_to_end(arch, scheme, tmp_path):
    model, sample = build_tiny(arch)
    ref = sample(model)
    fast = SearchOptions(alphas=(0.0, 0.5, 0.8), clips=(1.0, 0.9))  # a coarse grid keeps the test quick
    res = calibrate(model, scheme, lambda: sample(model), steps_per_trajectory=STEPS, rows=256, maps=8,
                    probes=2, budget=0.1, options=fast, progress=False, log=lambda s: None)
    assert res.meta["promoted"], "a 10% budget promotes at least one layer"
    assert len(res.report) == len(res.layers) + sum(r["as"].startswith("16-bit") for r in res.report)
    path = res.save(tmp_path / "c.safetensors")
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary behind
    loaded = CalibrationResult.load(path)
    assert loaded.config == res.config and set(loaded.layers) == set(res.layers)

    naive = qengine.quantize(copy.deepcopy(model), QuantConfig.preset(scheme, rank=0))
    calibrated = qengine.quantize(copy.deepcopy(model), calibration=loaded)
    assert _psnr(sample(calibrated), ref) > _psnr(sample(naive), ref)
    state = calibrated.qengine_state
    for name in res.meta["promoted"]:
        assert name in state.kept or state.layers[name]["scheme"] == "w8a8-int8"

    # the calibrated model round-trips through a qengine checkpoint (smooth vectors, static scales)
    qengine.save(calibrated, tmp_path / "ckpt")
    reloaded = qengine.load(copy.deepcopy(model), tmp_path / "ckpt")
    torch.testing.assert_close(sample(reloaded), sample(calibrated))


def test_quantize_rejects_a_calibration_for_another_config():
    model, sample = build_tiny("dit")
    res = calibrate(model, "w8a8-int8", lambda: sample(model), steps_per_trajectory=STEPS, rows=64, probes=1,
                    budget=0.0, options=SearchOptions(alphas=(0.5,), clips=(1.0,)), progress=False,
                    log=lambda s: None)
    with pytest.raises(ValueError, match="calibrated for"):
        qengine.quantize(copy.deepcopy(model), "w8a8-fp8", calibration=res)


def test_load_rejects_files_that_are_not_calibrations(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(p))
    with pytest.raises(CalibrationError, match="not a qengine calibration"):
        CalibrationResult.load(p)
    with pytest.raises(CalibrationError, match="does not exist"):
        CalibrationResult.load(tmp_path / "missing.safetensors")
