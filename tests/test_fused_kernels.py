"""Fused norm ops (reference = CPU kernel) and the modules that use them, on the CPU.

The CUDA kernels are compared with these references in tests/gpu/test_fused_norms.py. Here:
the references reproduce diffusers' eager math exactly, the fused modules (forced onto the
reference by pointing their device check at the CPU) give the stock modules' outputs, and bad
input gets a clear error.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import qengine
from qengine.nn import fused
from qengine.ops import OpInputError
from qengine.ops.reference_norms import apply_rope

diffusers = pytest.importorskip("diffusers")


@pytest.fixture
def fused_on_cpu(monkeypatch):
    """Run the fused path on CPU tensors (through the ops' reference kernels)."""
    monkeypatch.setattr(fused, "_kernel_device", lambda t, op: True)


def _bf16(*shape, gen, scale=1.0, offset=0.0):
    return (torch.randn(*shape, generator=gen) * scale + offset).to(torch.bfloat16)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_rmsnorm_rope_reference_matches_diffusers_math(head_dim):
    from diffusers.models.embeddings import apply_rotary_emb

    gen = torch.Generator().manual_seed(0)
    x, prefix = _bf16(2, 9, 3, head_dim, gen=gen, scale=3), _bf16(2, 4, 3, head_dim, gen=gen)
    norm, norm_p = nn.RMSNorm(head_dim, eps=1e-6), nn.RMSNorm(head_dim, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(head_dim, generator=gen) + 0.5)
        norm_p.weight.copy_(torch.rand(head_dim, generator=gen) + 0.5)
    norm, norm_p = norm.to(torch.bfloat16), norm_p.to(torch.bfloat16)
    angles = torch.rand(13, head_dim // 2, generator=gen) * 6
    cos, sin = angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)

    with torch.no_grad():
        expect = apply_rotary_emb(torch.cat([norm_p(prefix), norm(x)], 1), (cos, sin), sequence_dim=1)
        out = torch.ops.qengine.rmsnorm_rope(x, norm.weight, cos, sin, 1e-6, prefix, norm_p.weight)
        no_rope = torch.ops.qengine.rmsnorm_rope(x, norm.weight, None, None, 1e-6)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 13, 3, head_dim)
    assert torch.equal(out, expect)
    assert torch.equal(no_rope, norm(x))
    assert torch.equal(apply_rope(no_rope, cos[4:], sin[4:]), out[:, 4:])


@pytest.mark.parametrize("silu", [False, True])
def test_group_norm_nhwc_reference_matches_torch(silu):
    gen = torch.Generator().manual_seed(1)
    gn = nn.GroupNorm(4, 24, eps=1e-5)
    with torch.no_grad():
        gn.weight.copy_(torch.rand(24, generator=gen) + 0.5)
        gn.bias.copy_(torch.randn(24, generator=gen))
    gn = gn.to(torch.bfloat16)
    x = _bf16(2, 24, 5, 7, gen=gen, scale=2, offset=1).contiguous(memory_format=torch.channels_last)
    out = torch.ops.qengine.group_norm_nhwc(x, 4, gn.weight, gn.bias, 1e-5, silu)
    with torch.no_grad():
        ref = torch.nn.functional.group_norm(x.float(), 4, gn.weight.float(), gn.bias.float(), 1e-5).to(torch.bfloat16)
        if silu:
            ref = torch.nn.functional.silu(ref.float()).to(torch.bfloat16)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, ref)
    # the bf16 eager module (what diffusers runs) agrees within bf16 rounding
    with torch.no_grad():
        eager = gn(x)
        if silu:
            eager = torch.nn.functional.silu(eager)
    torch.testing.assert_close(out.float(), eager.float(), rtol=2 ** -7, atol=2 ** -7)


def test_fused_op_errors_name_the_problem():
    gen = torch.Generator().manual_seed(2)
    x = _bf16(1, 4, 2, 64, gen=gen)
    w = torch.ones(64, dtype=torch.bfloat16)
    with pytest.raises(OpInputError, match="head_dim=48"):
        torch.ops.qengine.rmsnorm_rope(_bf16(1, 4, 2, 48, gen=gen), torch.ones(48, dtype=torch.bfloat16), None, None, 1e-6)
    with pytest.raises(OpInputError, match="x must have dtype"):
        torch.ops.qengine.rmsnorm_rope(x.float(), w.float(), None, None, 1e-6)
    with pytest.raises(OpInputError, match=r"cos must have shape \[4, 64\]"):
        torch.ops.qengine.rmsnorm_rope(x, w, torch.ones(5, 64), torch.ones(5, 64), 1e-6)
    with pytest.raises(OpInputError, match="prefix and prefix_weight"):
        torch.ops.qengine.rmsnorm_rope(x, w, None, None, 1e-6, x)
    g = _bf16(1, 20, 3, 3, gen=gen)
    with pytest.raises(OpInputError, match="channels_last"):
        torch.ops.qengine.group_norm_nhwc(g, 2, None, None, 1e-5)
    g = g.contiguous(memory_format=torch.channels_last)
    with pytest.raises(OpInputError, match="groups=4 with C=20"):  # odd group size (5)
        torch.ops.qengine.group_norm_nhwc(g, 4, None, None, 1e-5)
    with pytest.raises(OpInputError, match="weight must have shape"):
        torch.ops.qengine.group_norm_nhwc(g, 2, torch.ones(10, dtype=torch.bfloat16), None, 1e-5)


def _tiny(arch):
    from qengine.integrations.tiny_models import build_tiny

    model, _ = build_tiny(arch)
    return model.to(torch.bfloat16).eval()


def _flux_inputs(model, gen):
    cfg = model.config
    img, txt = 16, 5
    ids_img = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    return dict(hidden_states=_bf16(1, img, cfg.in_channels, gen=gen),
                encoder_hidden_states=_bf16(1, txt, cfg.joint_attention_dim, gen=gen),
                pooled_projections=_bf16(1, cfg.pooled_projection_dim, gen=gen),
                timestep=torch.tensor([0.7], dtype=torch.bfloat16), guidance=torch.tensor([3.5], dtype=torch.bfloat16),
                img_ids=ids_img.reshape(-1, 3), txt_ids=torch.zeros(txt, 3), return_dict=False)


def _flux_head_dim_64():
    """A small FLUX (one double, one single block); the shipped tiny FLUX has head_dim 32, below
    the kernel's 64."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=64, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=16, guidance_embeds=True,
                                  axes_dims_rope=(16, 24, 24)).to(torch.bfloat16).eval()


def test_flux_fused_processor_gives_the_stock_output(fused_on_cpu):
    gen = torch.Generator().manual_seed(3)
    model = _flux_head_dim_64()
    inputs = _flux_inputs(model, gen)
    with torch.no_grad():
        expect = model(**inputs)[0]
    counts = qengine.enable_fused_kernels(model)
    assert counts == {"group_norm": 0, "flux_attention": 2, "lowrank_cat": 0, "gelu_cat": 0,
                      "layer_norm_quant": 0, "resnet": 0}
    procs = {type(m.processor).__name__ for m in model.modules() if hasattr(m, "processor")}
    assert procs == {"FusedFluxAttnProcessor"}
    calls = []
    real = torch.ops.qengine.rmsnorm_rope

    class Spy:
        def __call__(self, *a, **k):
            calls.append(a[0].shape)
            return real(*a, **k)

    import unittest.mock as mock

    with torch.no_grad(), mock.patch.object(torch.ops.qengine, "rmsnorm_rope", Spy()):
        out = model(**inputs)[0]
    assert len(calls) == 4  # q and k of the double block and of the single block
    assert torch.equal(out, expect)


def test_flux_fused_processor_falls_back_off_the_kernel_device():
    import unittest.mock as mock

    gen = torch.Generator().manual_seed(4)
    model = _flux_head_dim_64()
    inputs = _flux_inputs(model, gen)
    with torch.no_grad():
        expect = model(**inputs)[0]
        assert qengine.enable_fused_kernels(model)["flux_attention"] == 2
        # CPU tensors, no compiled kernel: the stock path, the fused op never called
        with mock.patch.object(torch.ops.qengine, "rmsnorm_rope", side_effect=AssertionError("fused op called")):
            assert torch.equal(model(**inputs)[0], expect)


def test_group_norm_swap_keeps_state_and_output(fused_on_cpu):
    gen = torch.Generator().manual_seed(5)
    model = _tiny("unet2d_condition").to(memory_format=torch.channels_last)
    keys = list(model.state_dict())
    n_gn = sum(type(m) is nn.GroupNorm for m in model.modules())
    cfg = model.config
    sample = _bf16(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, gen=gen).contiguous(
        memory_format=torch.channels_last)
    text = _bf16(1, 7, cfg.cross_attention_dim, gen=gen)
    t = torch.tensor([500.0])
    with torch.no_grad():
        expect = model(sample, t, text).sample
    counts = qengine.enable_fused_kernels(model)
    assert counts["group_norm"] == n_gn > 0
    assert qengine.enable_fused_kernels(model) == {"group_norm": 0, "flux_attention": 0, "lowrank_cat": 0,
                                                 "gelu_cat": 0, "layer_norm_quant": 0, "resnet": 0}  # idempotent
    assert not any(type(m) is nn.GroupNorm for m in model.modules())
    assert list(model.state_dict()) == keys
    calls = []
    real = torch.ops.qengine.group_norm_nhwc
    import unittest.mock as mock

    with torch.no_grad(), mock.patch.object(torch.ops.qengine, "group_norm_nhwc",
                                            lambda *a: calls.append(a[0].shape) or real(*a)):
        out = model(sample, t, text).sample
    assert len(calls) == n_gn  # every GroupNorm took the fused path
    # The reference rounds GroupNorm's fp32 result to bf16 once, as torch's bf16 CUDA kernel does;
    # torch's CPU bf16 GroupNorm rounds at other points, so the UNet outputs agree to bf16 noise.
    err = (out.float() - expect.float()).pow(2).sum() / expect.float().pow(2).sum()
    assert err < 1e-4


def test_enable_fused_kernels_takes_a_pipeline():
    from qengine.integrations.tiny_models import build_tiny_pipeline

    pipe = build_tiny_pipeline("unet2d_condition")
    n_gn = sum(type(m) is nn.GroupNorm for m in pipe.unet.modules())
    assert qengine.enable_fused_kernels(pipe)["group_norm"] == n_gn > 0
    with pytest.raises(TypeError, match="diffusers pipeline"):
        qengine.enable_fused_kernels(object())


def test_quantize_enables_fused_kernels_and_can_opt_out():
    m1, m2 = _tiny("unet2d_condition"), _tiny("unet2d_condition")
    qengine.quantize(m1, "w8a8-int8")
    qengine.quantize(m2, "w8a8-int8", fused_kernels=False)
    assert any(isinstance(m, qengine.FusedGroupNorm) for m in m1.modules())
    assert not any(isinstance(m, qengine.FusedGroupNorm) for m in m2.modules())


def test_group_norm_fake_accepts_symbolic_spatial_sizes(fused_on_cpu):
    """Regional compilation marks H and W dynamic after the first resolutions; the op's fake must
    take the channels_last input then. On the H100 the fake's is_contiguous(channels_last) check
    read False for symbolic H, W inside the SDXL UNet (the fake no longer checks the layout); this
    CPU graph does not reproduce that, it checks the dynamic-shape compile end to end."""
    gn = qengine.FusedGroupNorm.from_module(nn.GroupNorm(4, 16)).to(torch.bfloat16)
    compiled = torch.compile(gn, fullgraph=True, dynamic=True)
    for hw in (4, 6, 10):
        x = torch.randn(1, 16, hw, hw + 1, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert torch.equal(compiled(x), gn(x))
