"""CUDA kernels of the fused norm ops (csrc/norms/) vs their reference, plus the modules on a GPU.

rmsnorm_rope: the reference's float32 reduction order differs from the warp's, so rstd may differ
in its last bits and an output element by one rounding step; asserted as SQNR >= 40 dB and
|diff| <= 1 ulp of (|reference| + 1) (2^-7 for bf16, 2^-10 for fp16). group_norm_nhwc: same, its statistics being reduced in another order, and checked against
a float64 GroupNorm where the mean is 100x the standard deviation (the shifted sums at work).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gpu_helpers import capture_graph, poison_allocator, require_extension, sqnr_db

require_extension()

DEV = torch.device("cuda")
ULP = {torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}


def _assert_within_one_rounding(out, ref):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not out.isnan().any()
    o, r = out.float(), ref.float()
    # plus one ulp of 1 (the normalized values' scale): a rotary output near zero comes from two
    # products of size ~1 that cancel, so one rounding of theirs shows as more than an ulp of it
    tol = ULP[ref.dtype] * (r.abs() + 1)
    bad = ((o - r).abs() > tol).sum().item()
    assert bad == 0, f"{bad} elements differ by more than one rounding step; max diff {(o - r).abs().max().item()}"
    assert sqnr_db(out, ref) >= 40


def _rope_tables(s, d, gen):
    angles = torch.rand(s, d // 2, generator=gen) * 20
    return (angles.cos().repeat_interleave(2, -1).to(DEV), angles.sin().repeat_interleave(2, -1).to(DEV))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("with_prefix", [False, True])
@pytest.mark.parametrize("with_rope", [False, True])
def test_rmsnorm_rope_matches_reference(dtype, head_dim, with_prefix, with_rope):
    gen = torch.Generator().manual_seed(head_dim)
    b, s, s_p, h = 2, 37, 5 if with_prefix else 0, 3
    x = (torch.randn(b, s, h, head_dim, generator=gen) * 4).to(dtype).to(DEV)
    w = (torch.rand(head_dim, generator=gen) + 0.5).to(dtype).to(DEV)
    prefix = (torch.randn(b, s_p, h, head_dim, generator=gen)).to(dtype).to(DEV) if with_prefix else None
    pw = (torch.rand(head_dim, generator=gen) + 0.5).to(dtype).to(DEV) if with_prefix else None
    cos, sin = _rope_tables(s_p + s, head_dim, gen) if with_rope else (None, None)
    poison_allocator(b * (s + s_p) * h * head_dim * 2)
    out = torch.ops.qengine.rmsnorm_rope(x, w, cos, sin, 1e-6, prefix, pw)
    ref = torch.ops.qengine.rmsnorm_rope(x.cpu(), w.cpu(), None if cos is None else cos.cpu(),
                                         None if sin is None else sin.cpu(), 1e-6,
                                         None if prefix is None else prefix.cpu(), None if pw is None else pw.cpu())
    assert out.is_contiguous()
    _assert_within_one_rounding(out.cpu(), ref)


def test_rmsnorm_rope_flux_shape_and_strided_input():
    """FLUX.1 at 1024x1024: 512 text + 4096 image tokens, 24 heads of 128; q as one third of a
    fused qkv projection's output (token stride 3 * 3072)."""
    gen = torch.Generator().manual_seed(7)
    qkv = torch.randn(1, 4096, 3 * 3072, generator=gen).to(torch.bfloat16).to(DEV)
    q = qkv[..., :3072].unflatten(-1, (24, 128))
    assert not q.is_contiguous()
    txt = torch.randn(1, 512, 24, 128, generator=gen).to(torch.bfloat16).to(DEV)
    w = (torch.rand(128, generator=gen) + 0.5).to(torch.bfloat16).to(DEV)
    cos, sin = _rope_tables(4608, 128, gen)
    out = torch.ops.qengine.rmsnorm_rope(q, w, cos, sin, 1e-6, txt, w)
    ref = torch.ops.qengine.rmsnorm_rope(q.cpu().contiguous(), w.cpu(), cos.cpu(), sin.cpu(), 1e-6, txt.cpu(), w.cpu())
    _assert_within_one_rounding(out.cpu(), ref)


# Every distinct GroupNorm of the SD1.5 and SDXL UNets at their default resolution: (C, H=W).
UNET_GROUP_NORMS = sorted({
    # SD1.5 (64x64 latent)
    (320, 64), (320, 32), (640, 32), (640, 16), (1280, 16), (1280, 8), (2560, 8), (1920, 8), (1920, 16),
    (960, 16), (960, 32), (640, 64), (960, 64), (2560, 16),
    # SDXL (128x128 latent)
    (320, 128), (640, 64), (1280, 32), (2560, 32), (1920, 32), (1920, 64), (960, 64), (960, 128), (640, 128),
    (320, 64), (1280, 64),
})


@pytest.mark.parametrize("c,hw", UNET_GROUP_NORMS)
def test_group_norm_nhwc_unet_shapes(c, hw):
    gen = torch.Generator().manual_seed(c + hw)
    x = (torch.randn(1, c, hw, hw, generator=gen) * 2 + 0.5).to(torch.bfloat16).to(DEV)
    x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.rand(c, generator=gen) + 0.5).to(torch.bfloat16).to(DEV)
    bias = torch.randn(c, generator=gen).to(torch.bfloat16).to(DEV)
    poison_allocator(x.numel() * 2)
    out = torch.ops.qengine.group_norm_nhwc(x, 32, w, bias, 1e-5, False)
    ref = torch.ops.qengine.group_norm_nhwc(x.cpu(), 32, w.cpu(), bias.cpu(), 1e-5, False)
    assert out.is_contiguous(memory_format=torch.channels_last)
    _assert_within_one_rounding(out.cpu(), ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,c,h,w,g", [(4, 64, 7, 9, 32), (2, 320, 13, 5, 32), (1, 4096, 3, 3, 32),
                                       (3, 96, 1, 1, 16), (1, 256, 31, 17, 128)])
@pytest.mark.parametrize("silu", [False, True])
def test_group_norm_nhwc_batches_odd_sizes_silu(dtype, n, c, h, w, g, silu):
    gen = torch.Generator().manual_seed(n * c + h)
    x = torch.randn(n, c, h, w, generator=gen).to(dtype).to(DEV).contiguous(memory_format=torch.channels_last)
    weight = (torch.rand(c, generator=gen) + 0.5).to(dtype).to(DEV)
    out = torch.ops.qengine.group_norm_nhwc(x, g, weight, None, 1e-6, silu)
    ref = torch.ops.qengine.group_norm_nhwc(x.cpu(), g, weight.cpu(), None, 1e-6, silu)
    _assert_within_one_rounding(out.cpu(), ref)


def test_group_norm_nhwc_large_mean_keeps_precision():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(1, 320, 64, 64, generator=gen, dtype=torch.float64) * 4 + 1000.0
    xh = x.to(torch.float16)  # a 0.5 step at 1000: the data keep ~3 bits below the std
    out = torch.ops.qengine.group_norm_nhwc(xh.to(DEV).contiguous(memory_format=torch.channels_last), 32, None, None,
                                            1e-5, False)
    exact = torch.nn.functional.group_norm(xh.double(), 32, eps=1e-5)
    # E[x^2] / var = 6e4 here: unshifted float32 sums would lose the variance to cancellation
    assert sqnr_db(out.cpu().double(), exact) >= 50


def test_fused_norms_capture_in_cuda_graphs_and_compile():
    gen = torch.Generator().manual_seed(12)
    gn = qengine_group_norm(640, gen)
    x = torch.randn(1, 640, 32, 32, generator=gen).to(torch.bfloat16).to(DEV).contiguous(
        memory_format=torch.channels_last)
    eager = gn(x)
    graph, static_y = capture_graph(gn, x)
    graph.replay()
    assert torch.equal(static_y, eager)
    compiled = torch.compile(gn, fullgraph=True)
    assert torch.equal(compiled(x), eager)


def qengine_group_norm(c, gen):
    from qengine import FusedGroupNorm

    ref = nn.GroupNorm(32, c)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        ref.bias.copy_(torch.randn(c, generator=gen))
    return FusedGroupNorm.from_module(ref).to(torch.bfloat16).to(DEV)


def test_fused_modules_on_small_flux_and_unet():
    import qengine
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel

    gen = torch.Generator().manual_seed(13)
    torch.manual_seed(13)
    flux = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                                  attention_head_dim=128, num_attention_heads=4, joint_attention_dim=256,
                                  pooled_projection_dim=128, guidance_embeds=True,
                                  axes_dims_rope=(16, 56, 56)).to(torch.bfloat16).to(DEV).eval()
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(16.0), torch.arange(16.0), indexing="ij"), -1)
    inputs = dict(hidden_states=torch.randn(1, 256, 64, generator=gen).to(torch.bfloat16).to(DEV),
                  encoder_hidden_states=torch.randn(1, 32, 256, generator=gen).to(torch.bfloat16).to(DEV),
                  pooled_projections=torch.randn(1, 128, generator=gen).to(torch.bfloat16).to(DEV),
                  timestep=torch.tensor([0.5], device=DEV, dtype=torch.bfloat16),
                  guidance=torch.tensor([3.5], device=DEV, dtype=torch.bfloat16),
                  img_ids=ids.reshape(-1, 3).to(DEV), txt_ids=torch.zeros(32, 3, device=DEV), return_dict=False)
    with torch.no_grad():
        expect = flux(**inputs)[0]
        assert qengine.enable_fused_kernels(flux)["flux_attention"] == 4
        out = flux(**inputs)[0]
    assert sqnr_db(out.float(), expect.float()) >= 30

    unet = UNet2DConditionModel(block_out_channels=(64, 128), layers_per_block=1, cross_attention_dim=64,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), sample_size=32,
                                norm_num_groups=32).to(torch.bfloat16).to(DEV).eval()
    unet = unet.to(memory_format=torch.channels_last)
    sample = torch.randn(1, 4, 32, 32, generator=gen).to(torch.bfloat16).to(DEV).contiguous(
        memory_format=torch.channels_last)
    text = torch.randn(1, 7, 64, generator=gen).to(torch.bfloat16).to(DEV)
    with torch.no_grad():
        expect = unet(sample, 500, text).sample
        assert qengine.enable_fused_kernels(unet)["group_norm"] > 0
        out = unet(sample, 500, text).sample
    assert sqnr_db(out.float(), expect.float()) >= 30
