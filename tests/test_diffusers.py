"""Every supported diffusers architecture (tiny configs): quantize, sample, save, load."""
import fnmatch

import pytest
import torch
import qengine
from qengine.integrations.diffusers import find_denoiser, keep_16bit_patterns
from qengine.integrations.tiny_models import ARCHS, PIPELINE_ARCHS, build_tiny, build_tiny_pipeline

# SQNR (dB) of the sampled latents (4 steps) vs the float model, with the presets (rank 16 for
# the 4-bit ones: the tiny 64-wide layers take at most rank 16). Floors are the values measured
# by benchmarks/tiny_sqnr.py minus 3 dB.
SQNR_FLOOR = {
    "unet2d_condition": {"w8a8-fp8": 19, "w8a8-int8": 26, "w4a8": 25, "w4a4": 23},
    "unet2d": {"w8a8-fp8": 14, "w8a8-int8": 23, "w4a8": 20, "w4a4": 18},
    "dit": {"w8a8-fp8": 18, "w8a8-int8": 30, "w4a8": 15, "w4a4": 9},
    "flux": {"w8a8-fp8": 33, "w8a8-int8": 47, "w4a8": 26, "w4a4": 23},
    "sd3": {"w8a8-fp8": 28, "w8a8-int8": 40, "w4a8": 22, "w4a4": 17},
}


def config(preset):
    return qengine.QuantConfig.preset(preset, rank=16 if preset.startswith("w4") else 0)


def sqnr(y, ref):
    y, ref = y.double(), ref.double()
    return (10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum())).item()


@pytest.mark.parametrize("preset", qengine.PRESETS)
@pytest.mark.parametrize("arch", ARCHS)
def test_quantize_sample_save_load(arch, preset, tmp_path):
    model, sample = build_tiny(arch)
    ref = sample(model)
    qengine.quantize(model, config(preset))
    out = sample(model)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert sqnr(out, ref) >= SQNR_FLOOR[arch][preset]

    # Layers the architecture keeps 16-bit stay float; everything else eligible is quantized.
    keep = keep_16bit_patterns(model)
    for name, mod in model.named_modules():
        if any(fnmatch.fnmatchcase(name, p) for p in keep):
            assert not isinstance(mod, (qengine.QLinear, qengine.QConv2d)), name
    n_quant = sum(isinstance(m, (qengine.QLinear, qengine.QConv2d)) for m in model.modules())
    assert n_quant == len(model.qengine_state.layers) > 0

    path = qengine.save(model, tmp_path / "ckpt")
    fresh, _ = build_tiny(arch, seed=7)  # other float weights: all must come from the checkpoint
    qengine.load(fresh, path)
    assert torch.equal(sample(fresh), out)


@pytest.mark.parametrize("arch", PIPELINE_ARCHS)
def test_pipeline_is_quantized_in_place_and_samples_as_before(arch, tmp_path):
    pipe = build_tiny_pipeline(arch)
    _, sample = build_tiny(arch)
    denoiser, attr = find_denoiser(pipe)
    assert attr in ("unet", "transformer")
    ref = sample(pipe)
    assert qengine.quantize(pipe, "w8a8-int8") is pipe
    assert qengine.is_quantized(getattr(pipe, attr))
    out = sample(pipe)  # the pipeline's own __call__, unchanged
    assert sqnr(out, ref) >= SQNR_FLOOR[arch]["w8a8-int8"]
    qengine.save(pipe, tmp_path / "ckpt")
    other = build_tiny_pipeline(arch, seed=3)
    qengine.load(other, tmp_path / "ckpt")
    assert torch.equal(sample(other), out)


def test_memory_is_saved():
    model, _ = build_tiny("sd3")
    before = qengine.model_bytes(model)
    qengine.quantize(model, "w4a4")
    quantized = sum(m.weight.numel() for m in model.modules() if isinstance(m, qengine.QLinear))
    assert quantized > 0 and qengine.model_bytes(model) < before


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    model, _ = build_tiny("sd3")
    qengine.save(qengine.quantize(model, "w8a8-fp8"), tmp_path / "sd3")
    flux, _ = build_tiny("flux")
    state = {k: v.clone() for k, v in flux.state_dict().items()}
    with pytest.raises(qengine.CheckpointError, match="saved from a SD3Transformer2DModel, not a FluxTransformer2DModel"):
        qengine.load(flux, tmp_path / "sd3")
    assert all(torch.equal(state[k], v) for k, v in flux.state_dict().items())


@pytest.mark.parametrize("arch", ARCHS)
def test_modulation_overrides_quantize_only_the_modulation_layers(arch):
    from qengine.integrations.diffusers import KEEP_16BIT, MODULATION, modulation_overrides

    model, sample = build_tiny(arch)
    mod_patterns = MODULATION[type(model).__name__]
    assert set(mod_patterns) <= set(KEEP_16BIT[type(model).__name__])  # a subset of the kept layers
    ref = sample(model)
    mods = [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(fnmatch.fnmatchcase(n, p) for p in mod_patterns)]
    assert mods, f"{arch}: no modulation layer matched"
    cfg = qengine.QuantConfig.preset("w4a8", rank=16, overrides=modulation_overrides(model, rank=0))
    plan = {p.name: p for p in qengine.plan(model, cfg)}
    qengine.quantize(model, cfg)
    for name in mods:  # quantized unless its shape is outside the kernel's limits (then the plan says so)
        quantized = isinstance(model.get_submodule(name), qengine.QLinear)
        assert quantized == (plan[name].config is not None), (name, plan[name].reason)
        if quantized:
            assert model.get_submodule(name).layer_config.rank == 0
    assert any(isinstance(model.get_submodule(n), qengine.QLinear) for n in mods)
    # the other kept layers (in/out, embeddings) stay 16-bit
    others = [p for p in keep_16bit_patterns(model) if p not in mod_patterns]
    for name, m in model.named_modules():
        if any(fnmatch.fnmatchcase(name, p) for p in others):
            assert not isinstance(m, (qengine.QLinear, qengine.QConv2d)), name
    assert torch.isfinite(sample(model)).all() and sqnr(sample(model), ref) > 10
