"""QuantConfig: presets, JSON round trip, per-module resolution, and errors."""
import pytest
import torch
from torch import nn

import qengine
from qengine import ConfigError, LayerQuantConfig, QuantConfig


@pytest.mark.parametrize("name", qengine.PRESETS)
def test_presets_round_trip_through_json(name):
    cfg = QuantConfig.preset(name, skip=["a.*"], overrides={"b": {"scheme": "w8a8-int8"}})
    back = QuantConfig.from_json(cfg.to_json())
    assert back == cfg and back.to_dict() == cfg.to_dict()
    assert back.scheme == name


def test_preset_values():
    # per-channel INT4 (group 0): the layout the sm_90a kernel runs (notes/w4a8.md)
    assert QuantConfig.preset("w4a8").linear_config() == LayerQuantConfig("w4a8", 0, 32)
    assert QuantConfig.preset("w8a8-fp8").conv_scheme == "w8a8-fp8"
    assert QuantConfig.preset("w4a4", rank=0).rank == 0


def test_unknown_and_invalid_configs():
    with pytest.raises(ConfigError, match="unknown preset 'int3'.*w8a8-fp8"):
        QuantConfig.preset("int3")
    with pytest.raises(ConfigError, match="group sizes"):
        QuantConfig(scheme="w4a8", group_size=32)
    with pytest.raises(ConfigError, match="multiple of 16"):
        QuantConfig(scheme="w8a8-int8", rank=20)
    with pytest.raises(ConfigError, match="version 99 is not supported"):
        QuantConfig.from_dict({**QuantConfig().to_dict(), "version": 99})
    with pytest.raises(ConfigError, match="unknown config keys"):
        QuantConfig.from_dict({"scheme": "w8a8-fp8", "bits": 3})
    with pytest.raises(ConfigError, match="not valid JSON"):
        QuantConfig.from_json("{scheme")
    with pytest.raises(ConfigError, match="override 'x': .*group sizes"):
        QuantConfig(scheme="w8a8-fp8", overrides={"x": {"scheme": "w4a8", "group_size": 96}})
    with pytest.raises(ConfigError, match="unknown keys"):
        QuantConfig(overrides={"x": {"bits": 4}})
    with pytest.raises(ConfigError, match="conv_scheme"):
        QuantConfig(conv_scheme="w4a8")


def test_resolution_order():
    cfg = QuantConfig.preset(
        "w8a8-fp8",
        skip=["blocks.1.*"],
        overrides={"blocks.*.ff": {"scheme": "w4a8"}, "blocks.2.ff": {"scheme": "none"}, "embed": {"rank": 16}},
    )
    lin = nn.Linear(64, 64)
    keep = ("embed",)
    assert cfg.resolve("blocks.0.attn", lin, False, keep)[0] == LayerQuantConfig("w8a8-fp8")
    assert cfg.resolve("blocks.0.ff", lin, False, keep)[0] == LayerQuantConfig("w4a8", 0)
    assert cfg.resolve("blocks.1.attn", lin, False, keep) == (None, "skip pattern")
    assert cfg.resolve("blocks.2.ff", lin, False, keep)[0] is None
    # an override re-enables a layer the architecture keeps 16-bit
    assert cfg.resolve("embed", lin, False, keep)[0] == LayerQuantConfig("w8a8-fp8", 0, 16)
    assert cfg.resolve("other", lin, False, ("other",))[1] == "architecture default: kept 16-bit"
    assert cfg.resolve("conv", nn.Conv2d(16, 16, 1), True)[0] == LayerQuantConfig("w8a8-fp8")
    no_conv = QuantConfig(conv_scheme="none")
    assert no_conv.resolve("conv", nn.Conv2d(16, 16, 1), True)[0] is None


def test_filter_fn_and_plan_report():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 40), nn.Linear(40, 64), nn.Linear(64, 64))
    cfg = QuantConfig.preset("w8a8-int8", filter_fn=lambda name, mod: name != "3")
    assert "filter_fn" not in cfg.to_dict()
    plan = {p.name: p for p in qengine.plan(model, cfg)}
    assert plan["0"].config == LayerQuantConfig("w8a8-int8")
    assert plan["1"].config is not None  # K=64 is fine; N=40 has no constraint
    assert plan["2"].config is None and "K=40" in plan["2"].reason
    assert plan["3"].config is None and plan["3"].reason == "filter_fn"
    qengine.quantize(model, cfg)
    assert [type(m).__name__ for m in model] == ["QLinear", "QLinear", "Linear", "Linear"]
    summary = qengine.summary(model)
    assert "2  linear w8a8-int8" in summary and "kept 16-bit: filter_fn" in summary


def test_small_layers_drop_the_lowrank_branch():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(128, 256))
    qengine.quantize(model, QuantConfig.preset("w4a8", rank=32))
    assert model[0].lora_up is None and model[0].layer_config.rank == 0  # 32 > 64 / 4
    assert model[1].lora_up.shape == (256, 32)


def test_quantize_twice_is_an_error():
    model = nn.Sequential(nn.Linear(64, 64))
    qengine.quantize(model, "w8a8-fp8")
    with pytest.raises(ValueError, match="already quantized"):
        qengine.quantize(model, "w8a8-fp8")


def test_quantize_rejects_non_models():
    with pytest.raises(TypeError):
        qengine.quantize(torch.zeros(3), "w8a8-fp8")
