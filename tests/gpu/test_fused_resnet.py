"""CUDA: GroupNorm (+ temb add) + SiLU writing a quantized conv's 8-bit input, the conv of a
pre-quantized input, and the fused UNet resnet forward (qengine/nn/fused_resnet.py).

The fused kernels are held to the unfused CUDA ops bit for bit: the GroupNorm with ``add`` equals
the GroupNorm of the eager sum; ``group_norm_quant_*`` equals the GroupNorm followed by the conv's
own pre-pass (``qengine._C.conv_quantize_input``); the conv of the pre-quantized input equals the
conv that quantizes. The block-level tests compare with diffusers' forward on the same model.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_helpers import capture_graph, poison_allocator, require_extension, sdxl_style_unet, sqnr_db  # noqa: E402

EXT = require_extension()

import qengine  # noqa: E402
from qengine.calib import calibrate_static_scales  # noqa: E402
from qengine.config import LayerQuantConfig, QuantConfig  # noqa: E402
from qengine.nn import QConv2d, fused_resnet  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402

DEV = torch.device("cuda")
if any(op in MISSING_CUDA_KERNELS for op in ("group_norm_quant_fp8", "w8a8_fp8_conv2d")):
    pytest.skip("qengine._C has no CUDA kernel for group_norm_quant / the conv", allow_module_level=True)

QDTYPE = {"w8a8-fp8": "float8_e4m3fn", "w8a8-int8": "int8"}
GN_OP = {"w8a8-fp8": torch.ops.qengine.group_norm_quant_fp8, "w8a8-int8": torch.ops.qengine.group_norm_quant_int8}
# (N, C, H, W, groups): SDXL's resnet norms at 1024x1024 and odd sizes
SHAPES = [(1, 320, 128, 128, 32), (1, 640, 64, 64, 32), (1, 1280, 32, 32, 32), (2, 2560, 32, 32, 32),
          (2, 960, 64, 64, 32), (3, 64, 7, 9, 32), (1, 96, 5, 3, 16), (2, 4096, 3, 3, 32)]


def _operands(n, c, h, w, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=gen) * 2 + 0.3).to(dtype).to(DEV).contiguous(
        memory_format=torch.channels_last)
    gamma = (torch.rand(c, generator=gen) + 0.5).to(dtype).to(DEV)
    beta = torch.randn(c, generator=gen).to(dtype).to(DEV)
    add = (torch.randn(n, c, generator=gen) * 3).to(dtype).to(DEV)
    return x, gamma, beta, add


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,c,h,w,g", SHAPES)
def test_group_norm_add_equals_norm_of_the_eager_sum(dtype, n, c, h, w, g):
    x, gamma, beta, add = _operands(n, c, h, w, dtype, c + h)
    poison_allocator(x.numel() * 2)
    got = torch.ops.qengine.group_norm_nhwc(x, g, gamma, beta, 1e-5, True, add)
    summed = (x + add[:, :, None, None]).contiguous(memory_format=torch.channels_last)
    expect = torch.ops.qengine.group_norm_nhwc(summed, g, gamma, beta, 1e-5, True)
    assert torch.equal(got, expect)


@pytest.mark.parametrize("scheme", list(QDTYPE))
@pytest.mark.parametrize("with_add", [False, True])
@pytest.mark.parametrize("n,c,h,w,g", SHAPES)
def test_group_norm_quant_equals_norm_then_the_conv_prepass(scheme, with_add, n, c, h, w, g):
    x, gamma, beta, add = _operands(n, c, h, w, torch.bfloat16, c * 7 + w)
    add = add if with_add else None
    y = torch.ops.qengine.group_norm_nhwc(x, g, gamma, beta, 1e-6, True, add)
    scale = (y.float().abs().amax() / (448.0 if scheme == "w8a8-fp8" else 127.0) * 0.8).reshape(1)  # some clip
    poison_allocator(x.numel() * 2)
    q = GN_OP[scheme](x, g, gamma, beta, 1e-6, True, add, scale)
    expect, _ = EXT.conv_quantize_input(y.permute(0, 2, 3, 1), scale, QDTYPE[scheme])
    assert q.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(q.permute(0, 2, 3, 1).view(torch.uint8), expect.view(torch.uint8))


def test_group_norm_quant_without_silu_and_fp16():
    x, gamma, beta, add = _operands(2, 640, 16, 16, torch.float16, 3)
    scale = torch.tensor([0.01], device=DEV)
    q = torch.ops.qengine.group_norm_quant_fp8(x, 32, gamma, beta, 1e-5, False, add, scale)
    y = torch.ops.qengine.group_norm_nhwc(x, 32, gamma, beta, 1e-5, False, add)
    expect, _ = EXT.conv_quantize_input(y.permute(0, 2, 3, 1), scale, "float8_e4m3fn")
    assert torch.equal(q.permute(0, 2, 3, 1).view(torch.uint8), expect.view(torch.uint8))


@pytest.mark.parametrize("scheme", list(QDTYPE))
@pytest.mark.parametrize("c,o,k,stride,hw", [(320, 320, 3, 1, 128), (640, 640, 3, 1, 64), (1280, 1280, 3, 1, 32),
                                             (640, 640, 3, 2, 64), (960, 640, 1, 1, 64), (64, 48, 3, 1, 9)])
def test_conv_of_prequantized_input_equals_the_conv_that_quantizes(scheme, c, o, k, stride, hw):
    torch.manual_seed(c + o + k)
    conv = torch.nn.Conv2d(c, o, k, stride=stride, padding=k // 2).to(DEV, torch.bfloat16)
    x = torch.randn(1, c, hw, hw, device=DEV).bfloat16().contiguous(memory_format=torch.channels_last)
    scale = (x.float().abs().amax() / (448.0 if scheme == "w8a8-fp8" else 127.0)).reshape(1)
    q = QConv2d.from_float(conv, LayerQuantConfig(scheme), input_scale=scale)
    ho = (hw + 2 * (k // 2) - k) // stride + 1
    residual = torch.randn(1, o, ho, ho, device=DEV).bfloat16().contiguous(memory_format=torch.channels_last)
    xq, _ = EXT.conv_quantize_input(x.permute(0, 2, 3, 1), scale, QDTYPE[scheme])
    poison_allocator(residual.numel() * 4)
    got = q.forward_prequantized(xq.permute(0, 3, 1, 2), torch.bfloat16, residual)
    ref = q(x) + residual  # the conv that quantizes itself, then the eager add (rounds twice)
    nhwc = x.permute(0, 2, 3, 1)
    op = torch.ops.qengine.w8a8_fp8_conv2d if scheme == "w8a8-fp8" else torch.ops.qengine.w8a8_int8_conv2d
    fused_ref = op(  # the op quantizing x itself, residual in its epilogue
        nhwc, q.weight, q.weight_scale, q.bias, scale, list(q.stride), list(q.padding), list(q.dilation), None, None,
        residual.permute(0, 2, 3, 1).contiguous())
    assert torch.equal(got.permute(0, 2, 3, 1), fused_ref)  # same kernel, same bytes in
    assert sqnr_db(got.float(), ref.float()) >= 40


@pytest.mark.parametrize("config", ["im2col_gemm_sm80", "sm90_128x128x128_s4", "sm90_128x128x128_s4_split2"])
@pytest.mark.parametrize("scheme", list(QDTYPE))
def test_prequantized_input_on_every_conv_path(config, scheme):
    if not EXT.conv_config_available(config, QDTYPE[scheme], 0):
        pytest.skip(f"{config} is not compiled for {QDTYPE[scheme]} or does not run on this GPU")
    torch.manual_seed(7)
    conv = torch.nn.Conv2d(64, 48, 3, padding=1).to(DEV, torch.bfloat16)
    x = torch.randn(2, 64, 11, 9, device=DEV).bfloat16().contiguous(memory_format=torch.channels_last)
    scale = (x.float().abs().amax() / 100).reshape(1)
    q = QConv2d.from_float(conv, LayerQuantConfig(scheme), input_scale=scale)
    nhwc = x.permute(0, 2, 3, 1)
    residual = torch.randn(2, 11, 9, 48, device=DEV).bfloat16()
    args = (q.weight, q.weight_scale, q.bias, scale, [1, 1], [1, 1], [1, 1], config)
    expect = EXT.qconv2d_with_config(nhwc, *args, residual=residual)
    xq, _ = EXT.conv_quantize_input(nhwc, scale, QDTYPE[scheme])
    poison_allocator(expect.numel() * 4)
    got = EXT.qconv2d_with_config(xq, *args, residual=residual, out_dtype="bfloat16")
    assert torch.equal(got, expect)
    half = EXT.qconv2d_with_config(xq, *args, residual=residual.half(), out_dtype="float16")
    assert half.dtype == torch.float16 and sqnr_db(half.float(), expect.float()) >= 40


def test_prequantized_conv_errors_name_the_problem():
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(DEV, torch.bfloat16)
    q = QConv2d.from_float(conv, LayerQuantConfig("w8a8-fp8"), input_scale=torch.tensor([0.01], device=DEV))
    xq = torch.zeros(1, 8, 8, 64, device=DEV).to(torch.float8_e4m3fn)
    op = torch.ops.qengine.w8a8_fp8_conv2d
    args = (q.weight, q.weight_scale, q.bias)
    with pytest.raises(Exception, match="x_scale"):
        op(xq, *args, None, [1, 1], [1, 1], [1, 1], None, None, None, torch.bfloat16)
    with pytest.raises(Exception, match="out_dtype"):
        op(xq, *args, q.input_scale, [1, 1], [1, 1], [1, 1])
    with pytest.raises(Exception, match="x2"):
        op(xq, *args, q.input_scale, [1, 1], [1, 1], [1, 1], xq, None, None, torch.bfloat16)
    with pytest.raises(Exception, match="scale"):
        x = torch.zeros(1, 64, 4, 4, device=DEV).bfloat16().contiguous(memory_format=torch.channels_last)
        torch.ops.qengine.group_norm_quant_fp8(x, 32, None, None, 1e-5, True, None, torch.ones(2, device=DEV))


def _calibrated_unet(scheme):
    model, (sample, t, text) = sdxl_style_unet()
    model = model.to(memory_format=torch.channels_last)
    sample = sample.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        bf16 = model(sample, t, text).sample
    qengine.quantize(model, QuantConfig.preset(scheme, conv_scheme=scheme, fuse_qkv=True))
    gen = torch.Generator(device=DEV).manual_seed(5)
    calib = [torch.randn(sample.shape, device=DEV, generator=gen).bfloat16() for _ in range(2)]
    calibrate_static_scales(model, lambda: [model(c, t, text) for c in calib])
    return model, (sample, t, text), bf16


def _stock(model, inputs):
    import unittest.mock as mock

    with torch.no_grad(), mock.patch.object(fused_resnet, "_fusable", lambda block, x: False):
        return model(*inputs).sample


@pytest.mark.parametrize("scheme", list(QDTYPE))
def test_fused_resnets_match_diffusers_block_by_block(scheme):
    model, inputs, bf16 = _calibrated_unet(scheme)
    resnets = [m for m in model.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert resnets and all(getattr(m, fused_resnet._MARK) is True for m in resnets)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((m, a))) for m in resnets]
    with torch.no_grad():
        got = model(*inputs).sample
    for h in hooks:
        h.remove()
    assert len(seen) == len(resnets)
    with torch.no_grad():
        for block, args in seen:
            assert fused_resnet._fusable(block, args[0])
            out, ref = block(*args), type(block).forward(block, *args)
            # the residual add rounds once (in conv2's epilogue) instead of twice
            tol = 2 * torch.finfo(torch.bfloat16).eps * ref.float().abs().amax()
            assert (out.float() - ref.float()).abs().max() <= tol
    # Whole model: those one-rounding differences flip 8-bit rounding steps in the layers after
    # them, so fused and stock outputs differ like two quantizations do (22.4 dB apart for FP8 on
    # an H100, session 15 call 2; the CPU test shows the same without the epilogue add, bit-exact
    # with it: tests/test_fused_resnet.py). What must hold: the fused model is as close to bf16.
    stock = _stock(model, inputs)
    assert sqnr_db(got.float(), bf16.float()) >= sqnr_db(stock.float(), bf16.float()) - 1.0


def test_fused_unet_compiles_and_replays_in_a_cuda_graph():
    model, (sample, t, text), bf16 = _calibrated_unet("w8a8-fp8")
    with torch.no_grad():
        eager = model(sample, t, text).sample
        compiled = torch.compile(model)
        out = compiled(sample, t, text).sample
        # inductor rounds the glue ops its own way, which flips 8-bit rounding steps downstream
        # (23.2 dB from eager, session 15 call 2): held to eager's distance from bf16 instead
        assert sqnr_db(out.float(), bf16.float()) >= sqnr_db(eager.float(), bf16.float()) - 1.0
        graph, static_y = capture_graph(lambda s: model(s, t, text).sample, sample)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(static_y, eager)
    calls = []
    real = torch.ops.qengine.group_norm_quant_fp8
    import unittest.mock as mock

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    with torch.no_grad(), mock.patch.object(torch.ops.qengine, "group_norm_quant_fp8", spy):
        model(sample, t, text)
    assert len(calls) == 2 * sum(type(m).__name__ == "ResnetBlock2D" for m in model.modules())
