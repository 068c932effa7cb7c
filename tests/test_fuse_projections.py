"""q/k/v projection fusion (QuantConfig.fuse_qkv): same function, fused layer names, and the
quantize / checkpoint / calibration paths that must agree on them."""
from __future__ import annotations

import copy

import pytest
import torch

import qengine
from qengine import CheckpointError
from qengine.checkpoint import read_config
from qengine.config import ConfigError, QuantConfig

pytest.importorskip("diffusers")
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0  # noqa: E402

from qengine.calib import SearchOptions, calibrate  # noqa: E402
from qengine.integrations.fuse_projections import (  # noqa: E402
    fusable_attention_names, fuse_qkv_projections, unfuse_qkv_projections)
from qengine.integrations.tiny_models import build_tiny  # noqa: E402


@pytest.fixture
def tiny_unet():
    return build_tiny("unet2d_condition")


def attentions(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, Attention)}


def test_fusion_keeps_the_function_and_removes_the_separate_layers(tiny_unet):
    model, sample = tiny_unet
    ref = sample(model)
    n_params = sum(p.numel() for p in model.parameters())
    names = fusable_attention_names(model)
    assert names and set(names) == set(attentions(model))  # every tiny-UNet attention runs AttnProcessor2_0
    records = fuse_qkv_projections(model)
    assert [r.name for r in records] == names
    for name, attn in attentions(model).items():
        if attn.is_cross_attention:
            assert hasattr(attn, "to_kv") and hasattr(attn, "to_q") and not hasattr(attn, "to_k")
        else:
            assert hasattr(attn, "to_qkv") and not any(hasattr(attn, n) for n in ("to_q", "to_k", "to_v"))
    assert sum(p.numel() for p in model.parameters()) == n_params  # no weight is held twice
    torch.testing.assert_close(sample(model), ref, rtol=1e-4, atol=1e-5)


def test_fusion_is_idempotent_and_undone_exactly(tiny_unet):
    model, _ = tiny_unet
    before = {k: v.clone() for k, v in model.state_dict().items()}
    procs = {n: type(a.processor) for n, a in attentions(model).items()}
    records = fuse_qkv_projections(model)
    assert records and fuse_qkv_projections(model) == []
    unfuse_qkv_projections(records)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert {n: type(a.processor) for n, a in attentions(model).items()} == procs


def test_other_processors_are_left_alone(tiny_unet):
    model, _ = tiny_unet
    first = next(iter(attentions(model).values()))
    first.set_processor(AttnProcessor())  # not the processor FusedAttnProcessor2_0 reproduces
    fused = {r.name for r in fuse_qkv_projections(model)}
    assert fused == {n for n, a in attentions(model).items() if a is not first}
    assert isinstance(first.processor, AttnProcessor) and hasattr(first, "to_k")


def quantized_unfused_and_fused(model, scheme="w8a8-int8"):
    """The model quantized as it is and with fuse_qkv (each from its own copy)."""
    return (qengine.quantize(copy.deepcopy(model), QuantConfig.preset(scheme)),
            qengine.quantize(copy.deepcopy(model), QuantConfig.preset(scheme, fuse_qkv=True)))


def test_quantized_fused_model_matches_unfused(tiny_unet):
    model, sample = tiny_unet
    plain, fused = quantized_unfused_and_fused(model)
    layers = fused.qengine_state.layers
    assert any(n.endswith("attn1.to_qkv") for n in layers) and any(n.endswith("attn2.to_kv") for n in layers)
    assert not any(n.endswith(("attn1.to_q", "attn1.to_k", "attn2.to_v")) for n in layers)
    assert len(layers) < len(plain.qengine_state.layers)
    # Same per-token activation scales and per-channel weight scales: only summation order differs.
    torch.testing.assert_close(sample(fused), sample(plain), rtol=1e-3, atol=1e-4)
    # and it is the same conversion of one layer: stacked rows of the separate layers' weights
    name = next(n for n in layers if n.endswith("attn1.to_qkv"))
    base = name.rsplit(".", 1)[0]
    parts = [plain.get_submodule(f"{base}.{p}") for p in ("to_q", "to_k", "to_v")]
    q = fused.get_submodule(name)
    assert torch.equal(q.weight, torch.cat([p.weight for p in parts]))
    assert torch.equal(q.weight_scale, torch.cat([p.weight_scale for p in parts]))


def test_fused_checkpoint_loads_into_a_float_model(tiny_unet, tmp_path):
    model, sample = tiny_unet
    fused = qengine.quantize(copy.deepcopy(model), QuantConfig.preset("w8a8-fp8", fuse_qkv=True))
    path = qengine.save(fused, tmp_path / "ckpt")
    assert read_config(path)["quant_config"]["fuse_qkv"] is True
    fresh, _ = build_tiny("unet2d_condition", seed=7)  # other float weights: all must come from the file
    qengine.load(fresh, path)
    assert fresh.qengine_state.config.fuse_qkv
    torch.testing.assert_close(sample(fresh), sample(fused), rtol=0, atol=0)


def test_failed_fused_load_leaves_the_model_unfused(tiny_unet, tmp_path):
    model, _ = tiny_unet
    path = qengine.save(qengine.quantize(copy.deepcopy(model), QuantConfig.preset("w8a8-fp8", fuse_qkv=True)),
                        tmp_path / "ckpt")
    tensors = next(path.glob("*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:-100])  # truncated
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="bytes"):
        qengine.load(model, path)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(getattr(a, "fused_projections", False) for a in attentions(model).values())
    assert all(isinstance(a.processor, AttnProcessor2_0) for a in attentions(model).values())
    assert not qengine.is_quantized(model)


def test_calibration_of_fused_layers_quantizes_an_unfused_model(tiny_unet):
    model, sample = tiny_unet
    ref = sample(model)
    cfg = QuantConfig.preset("w8a8-int8", fuse_qkv=True)
    calib_model = copy.deepcopy(model)
    res = calibrate(calib_model, cfg, lambda: sample(calib_model), steps_per_trajectory=4, rows=64, probes=1,
                    budget=0.0, options=SearchOptions(alphas=(0.0, 0.5), clips=(1.0,)), progress=False,
                    log=lambda s: None)
    assert any(n.endswith("attn1.to_qkv") for n in res.layers)
    q = qengine.quantize(copy.deepcopy(model), calibration=res)  # model itself is unfused: quantize fuses it
    assert q.qengine_state.config.fuse_qkv and set(q.qengine_state.layers) == set(res.layers)
    err = (sample(q) - ref).pow(2).mean() / ref.pow(2).mean()
    assert err < 1e-2


def test_config_field():
    assert QuantConfig.from_dict({k: v for k, v in QuantConfig().to_dict().items() if k != "fuse_qkv"}).fuse_qkv is False
    assert QuantConfig.from_json(QuantConfig(fuse_qkv=True).to_json()).fuse_qkv is True
    with pytest.raises(ConfigError, match="fuse_qkv"):
        QuantConfig(fuse_qkv="yes")


# FLUX: FluxAttention with diffusers' FluxAttnProcessor (or qengine's fused-norm subclass), which
# read attn.fused_projections and then call to_qkv / to_added_qkv themselves.
@pytest.fixture
def tiny_flux():
    return build_tiny("flux")


def flux_attentions(model):
    return {n: m for n, m in model.named_modules() if type(m).__name__ == "FluxAttention"}


def test_flux_fusion_keeps_the_function_and_undoes_exactly(tiny_flux):
    model, sample = tiny_flux
    ref = sample(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attns = flux_attentions(model)
    procs = {n: a.processor for n, a in attns.items()}
    assert set(fusable_attention_names(model)) == set(attns)
    records = fuse_qkv_projections(model)
    assert {r.name for r in records} == set(attns) and fuse_qkv_projections(model) == []
    for name, attn in attns.items():
        assert attn.fused_projections and hasattr(attn, "to_qkv") and not hasattr(attn, "to_q")
        joint = attn.added_kv_proj_dim is not None  # double blocks: the text stream's projections too
        assert hasattr(attn, "to_added_qkv") == joint and not hasattr(attn, "add_q_proj")
        assert attn.processor is procs[name]
    assert any(a.added_kv_proj_dim is not None for a in attns.values())
    assert any(a.added_kv_proj_dim is None for a in attns.values())  # single blocks
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in before.values())
    torch.testing.assert_close(sample(model), ref, rtol=1e-4, atol=1e-5)
    unfuse_qkv_projections(records)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(not a.fused_projections and a.processor is procs[n] for n, a in attns.items())


def test_flux_fused_quantized_model_matches_unfused_and_round_trips(tiny_flux, tmp_path):
    model, sample = tiny_flux
    plain, fused = quantized_unfused_and_fused(model)
    layers = fused.qengine_state.layers
    assert any(n.endswith("attn.to_qkv") for n in layers) and any(n.endswith("attn.to_added_qkv") for n in layers)
    assert not any(n.endswith(("attn.to_q", "attn.to_k", "attn.add_v_proj")) for n in layers)
    torch.testing.assert_close(sample(fused), sample(plain), rtol=1e-3, atol=1e-4)
    path = qengine.save(fused, tmp_path / "ckpt")
    fresh, _ = build_tiny("flux", seed=7)
    qengine.load(fresh, path)
    torch.testing.assert_close(sample(fresh), sample(fused), rtol=0, atol=0)


def test_flux_fusion_with_the_fused_norm_processor(tiny_flux):
    # enable_fused_kernels swaps in qengine's FluxAttnProcessor subclass (before or after the
    # fusion); either way the fused projections are what it calls.
    model, sample = tiny_flux
    ref = sample(model)
    qengine.enable_fused_kernels(model)
    assert all(type(a.processor).__name__ == "FusedFluxAttnProcessor" for a in flux_attentions(model).values())
    assert fuse_qkv_projections(model)
    torch.testing.assert_close(sample(model), ref, rtol=1e-4, atol=1e-5)


# SD3 (-medium: no q/k RMSNorm): diffusers' JointAttnProcessor2_0 -> FusedJointAttnProcessor2_0.
def test_sd3_joint_attention_fuses_both_streams_and_undoes_exactly():
    model, sample = build_tiny("sd3")
    ref = sample(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attns = attentions(model)
    assert attns and all(type(a.processor).__name__ == "JointAttnProcessor2_0" for a in attns.values())
    records = fuse_qkv_projections(model)
    assert {r.name for r in records} == set(attns)
    for attn in attns.values():
        assert hasattr(attn, "to_qkv") and hasattr(attn, "to_added_qkv")
        separate = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")
        assert not any(hasattr(attn, n) for n in separate)
        assert type(attn.processor).__name__ == "FusedJointAttnProcessor2_0"
    torch.testing.assert_close(sample(model), ref, rtol=1e-4, atol=1e-5)
    unfuse_qkv_projections(records)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(type(a.processor).__name__ == "JointAttnProcessor2_0" for a in attns.values())


def test_sd3_attention_with_qk_norms_is_left_alone():
    # SD3.5 normalizes q and k (RMSNorm per head); the fused joint processor would skip that.
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                  attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                                  caption_projection_dim=64, pooled_projection_dim=16, pos_embed_max_size=8,
                                  qk_norm="rms_norm")
    assert fusable_attention_names(model) == [] and fuse_qkv_projections(model) == []
    assert all(hasattr(a, "to_q") and hasattr(a, "add_q_proj") for a in attentions(model).values())


def test_sd3_fused_quantized_model_matches_unfused():
    model, sample = build_tiny("sd3")
    plain, fused = quantized_unfused_and_fused(model)
    layers = fused.qengine_state.layers
    assert any(n.endswith("attn.to_qkv") for n in layers) and any(n.endswith("attn.to_added_qkv") for n in layers)
    torch.testing.assert_close(sample(fused), sample(plain), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("arch", ["unet2d_condition", "flux", "sd3"])
def test_plan_of_a_fuse_qkv_config_shows_the_fused_layers(arch):
    # qengine.plan on the float model lists what quantize will make of it: the fused layers, each
    # once, with the fused shape's decision, and none of the projections they replace.
    model, _ = build_tiny(arch)
    cfg = QuantConfig.preset("w8a8-int8", fuse_qkv=True)
    planned = {p.name: p for p in qengine.plan(model, cfg)}
    fused = qengine.quantize(copy.deepcopy(model), cfg)
    kinds = (torch.nn.Linear, torch.nn.Conv2d, qengine.QLinear, qengine.QConv2d)
    assert set(planned) == {n for n, m in fused.named_modules() if isinstance(m, kinds)}
    assert {n for n, p in planned.items() if p.config is not None} == set(fused.qengine_state.layers)
    assert any(n.endswith("to_qkv") for n in planned)
    assert not any(n.endswith((".to_k", ".add_k_proj")) for n in planned)
