"""GroupNorm writing a quantized conv's input, and the fused UNet resnet forward, on the CPU.

The ops' references (the CPU kernels) are checked against their definitions: the GroupNorm of
``x + add``, then SiLU, then the conv pre-pass's quantization; the conv of a pre-quantized input
equals the conv that quantizes it itself. The fused ``ResnetBlock2D`` forward (forced onto the
references) is compared with diffusers' own. The CUDA kernels: tests/gpu/test_fused_resnet.py.
"""
from __future__ import annotations

import unittest.mock as mock

import pytest
import torch
from torch import nn

import qengine
from qengine import ops
from qengine.calib import calibrate_static_scales
from qengine.formats import Format
from qengine.nn import QConv2d, fused
from qengine.nn import fused_resnet
from qengine.ops import OpInputError
from qengine.ops import reference as ref

_QDTYPE = {"w8a8-fp8": torch.float8_e4m3fn, "w8a8-int8": torch.int8}
_FMT = {"w8a8-fp8": Format.FP8_E4M3, "w8a8-int8": Format.INT8}
_GN_OP = {"w8a8-fp8": "group_norm_quant_fp8", "w8a8-int8": "group_norm_quant_int8"}


@pytest.fixture
def fused_on_cpu(monkeypatch):
    """Run the fused path on CPU tensors (through the ops' reference kernels)."""
    monkeypatch.setattr(fused, "_kernel_device", lambda t, op: True)


def _nhwc_bf16(n, c, h, w, gen, scale=1.0, offset=0.0):
    x = torch.randn(n, c, h, w, generator=gen) * scale + offset
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def test_group_norm_add_is_the_norm_of_the_rounded_sum():
    gen = torch.Generator().manual_seed(0)
    x = _nhwc_bf16(2, 32, 5, 3, gen, offset=3.0)
    add = (torch.randn(2, 32, generator=gen) * 4).to(torch.bfloat16)
    w, b = (torch.randn(32, generator=gen).to(torch.bfloat16) for _ in range(2))
    got = torch.ops.qengine.group_norm_nhwc(x, 8, w, b, 1e-5, True, add)
    summed = (x + add[:, :, None, None]).contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, torch.ops.qengine.group_norm_nhwc(summed, 8, w, b, 1e-5, True))
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
@pytest.mark.parametrize("with_add", [False, True])
def test_group_norm_quant_is_norm_silu_then_the_conv_prepass(scheme, with_add):
    gen = torch.Generator().manual_seed(1)
    x = _nhwc_bf16(2, 64, 4, 6, gen)
    add = (torch.randn(2, 64, generator=gen)).to(torch.bfloat16) if with_add else None
    w, b = (torch.randn(64, generator=gen).to(torch.bfloat16) for _ in range(2))
    scale = torch.tensor([0.011], dtype=torch.float32)
    q = getattr(torch.ops.qengine, _GN_OP[scheme])(x, 16, w, b, 1e-6, True, add, scale)
    y = torch.ops.qengine.group_norm_nhwc(x, 16, w, b, 1e-6, True, add)
    q_ref, _ = ref.quantize_conv_input(y.permute(0, 2, 3, 1), scale, _FMT[scheme])
    assert q.dtype == _QDTYPE[scheme] and q.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(q.permute(0, 2, 3, 1).float(), q_ref.float())
    # the scale is used, not an absmax: a 4x larger scale gives other bytes
    q4 = getattr(torch.ops.qengine, _GN_OP[scheme])(x, 16, w, b, 1e-6, True, add, scale * 4)
    assert not torch.equal(q4.float(), q.float())


def test_group_norm_quant_errors_name_the_problem():
    x = torch.zeros(2, 32, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    scale = torch.ones(1)
    op = torch.ops.qengine.group_norm_quant_fp8
    with pytest.raises(OpInputError, match="add"):
        op(x, 8, None, None, 1e-5, True, torch.zeros(2, 16, dtype=torch.bfloat16), scale)
    with pytest.raises(OpInputError, match="add"):
        op(x, 8, None, None, 1e-5, True, torch.zeros(2, 32), scale)  # float32, not x's dtype
    with pytest.raises(OpInputError, match="scale"):
        op(x, 8, None, None, 1e-5, True, None, torch.ones(2))
    with pytest.raises(OpInputError, match="groups"):
        op(x, 5, None, None, 1e-5, True, None, scale)


def _conv_operands(scheme, gen, c=32, o=48):
    conv = nn.Conv2d(c, o, 3, padding=1).to(torch.bfloat16)
    q = QConv2d.from_float(conv, qengine.config.LayerQuantConfig(scheme), input_scale=torch.tensor([0.02]))
    x = _nhwc_bf16(2, c, 6, 5, gen).permute(0, 2, 3, 1)
    return q, x


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
def test_conv_of_a_prequantized_input_equals_the_conv_that_quantizes(scheme):
    gen = torch.Generator().manual_seed(2)
    q, x = _conv_operands(scheme, gen)
    residual = (torch.randn(2, 6, 5, 48, generator=gen)).to(torch.bfloat16)
    args = (q.weight, q.weight_scale, q.bias, q.input_scale, q.stride, q.padding, q.dilation)
    expect = ops.conv2d(q.scheme, x, *args, residual=residual)
    xq, _ = ref.quantize_conv_input(x, q.input_scale, _FMT[scheme])
    got = ops.conv2d(q.scheme, xq, *args, residual=residual, out_dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expect)
    # the module entry point, NCHW channels_last in and out
    y = q.forward_prequantized(xq.permute(0, 3, 1, 2), torch.bfloat16, residual.permute(0, 3, 1, 2))
    assert torch.equal(y.permute(0, 2, 3, 1), expect)


def test_prequantized_conv_errors_name_the_problem():
    gen = torch.Generator().manual_seed(3)
    q, x = _conv_operands("w8a8-fp8", gen)
    xq, _ = ref.quantize_conv_input(x, q.input_scale, Format.FP8_E4M3)
    args = (q.weight, q.weight_scale, q.bias)
    geo = (q.stride, q.padding, q.dilation)
    with pytest.raises(OpInputError, match="x_scale"):
        ops.conv2d(q.scheme, xq, *args, None, *geo, out_dtype=torch.bfloat16)
    with pytest.raises(OpInputError, match="out_dtype"):
        ops.conv2d(q.scheme, xq, *args, q.input_scale, *geo)
    with pytest.raises(OpInputError, match="x2"):
        ops.conv2d(q.scheme, xq, *args, q.input_scale, *geo, x2=x, out_dtype=torch.bfloat16)
    with pytest.raises(OpInputError, match="out_dtype"):
        ops.conv2d(q.scheme, x, *args, q.input_scale, *geo, out_dtype=torch.float16)
    with pytest.raises(ValueError, match="static input scale"):
        QConv2d.from_float(nn.Conv2d(32, 16, 1), qengine.config.LayerQuantConfig("w8a8-fp8")).forward_prequantized(
            xq.permute(0, 3, 1, 2), torch.bfloat16)


def test_fake_kernels_give_shapes_and_dtypes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 32, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        q = torch.ops.qengine.group_norm_quant_int8(x, 8, None, None, 1e-5, True, torch.empty(2, 32, dtype=torch.bfloat16),
                                                   torch.ones(1))
        assert q.dtype == torch.int8 and q.shape == x.shape
        w = torch.empty(16, 3, 3, 32, dtype=torch.int8)
        y = torch.ops.qengine.w8a8_int8_conv2d(q.permute(0, 2, 3, 1).contiguous(), w, torch.ones(16), None, torch.ones(1),
                                               [1, 1], [1, 1], [1, 1], None, None, None, torch.float16)
        assert y.dtype == torch.float16 and tuple(y.shape) == (2, 4, 4, 16)


def _quantized_unet(scheme, gen):
    from qengine.integrations.tiny_models import build_tiny

    model, _ = build_tiny("unet2d_condition")
    model = model.to(torch.bfloat16).eval().to(memory_format=torch.channels_last)
    cfg = model.config
    sample = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen).to(torch.bfloat16)
    text = torch.randn(2, 7, cfg.cross_attention_dim, generator=gen).to(torch.bfloat16)
    inputs = (sample.contiguous(memory_format=torch.channels_last), torch.tensor([500.0, 20.0]), text)
    with torch.no_grad():
        bf16 = model(*inputs).sample  # the unquantized model's output
    return qengine.quantize(model, qengine.QuantConfig.preset(scheme)), inputs, bf16


def _sqnr(out, ref):
    return 10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum()).item()


def _count_resnets(model):
    return sum(type(m).__name__ == "ResnetBlock2D" for m in model.modules())


def _stock(model, inputs):
    """The output with every fused module on its stock path (no kernel device)."""
    with torch.no_grad(), mock.patch.object(fused, "_kernel_device", lambda t, op: False):
        return model(*inputs).sample


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
def test_fused_resnet_forward_matches_diffusers(fused_on_cpu, scheme):
    gen = torch.Generator().manual_seed(4)
    model, inputs, bf16 = _quantized_unet(scheme, gen)  # quantize swaps the forwards in (fused_kernels=True)
    n_res = _count_resnets(model)
    assert n_res > 0 and all(getattr(m, fused_resnet._MARK, None) is not None for m in model.modules()
                             if type(m).__name__ == "ResnetBlock2D")
    assert qengine.enable_fused_kernels(model)["resnet"] == 0  # idempotent
    with torch.no_grad():
        calibrate_static_scales(model, lambda: model(*inputs))
    expect = _stock(model, inputs)
    calls, seen = [], []
    real = getattr(torch.ops.qengine, _GN_OP[scheme])

    def spy(*a, **k):
        calls.append(a[6] is not None)  # add given: norm2 with the time embedding
        return real(*a, **k)

    resnets = [m for m in model.modules() if type(m).__name__ == "ResnetBlock2D"]
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((m, a))) for m in resnets]
    with torch.no_grad(), mock.patch.object(torch.ops.qengine, _GN_OP[scheme], spy):
        got = model(*inputs).sample
    for h in hooks:
        h.remove()
    assert calls.count(True) == n_res and calls.count(False) == n_res
    # Per block, on the block's real input: the norms, SiLU and quantization round as the unfused
    # ops do; only the residual add (in conv2's epilogue) rounds once instead of twice. (Through
    # the whole network such one-ulp differences flip 8-bit rounding steps downstream.)
    with torch.no_grad():
        for block, args in seen:
            fused_out = block(*args)
            stock_out = type(block).forward(block, *args)
            diff = (fused_out.float() - stock_out.float()).abs()
            assert diff.max() <= 2 * torch.finfo(torch.bfloat16).eps * stock_out.float().abs().max(), diff.max()
            assert not torch.equal(fused_out, torch.zeros_like(fused_out))
    # End to end the one-ulp differences flip 8-bit rounding steps downstream: fused and stock
    # differ like two quantizations; what must hold is that the fused model is as close to bf16.
    assert not torch.equal(got, expect)
    assert _sqnr(got.float(), bf16.float()) >= _sqnr(expect.float(), bf16.float()) - 1.0


def test_fused_resnet_without_residual_fusion_is_bit_exact(fused_on_cpu):
    gen = torch.Generator().manual_seed(5)
    model, inputs, _ = _quantized_unet("w8a8-fp8", gen)
    for m in model.modules():
        if type(m).__name__ == "ResnetBlock2D":
            m.output_scale_factor = 2.0  # the residual add stays eager: every rounding as diffusers'
    with torch.no_grad():
        calibrate_static_scales(model, lambda: model(*inputs))
        got = model(*inputs).sample
    assert torch.equal(got, _stock(model, inputs))


def test_fused_resnet_falls_back_where_it_does_not_apply(fused_on_cpu):
    gen = torch.Generator().manual_seed(6)
    model, inputs, _ = _quantized_unet("w8a8-fp8", gen)
    boom = mock.Mock(side_effect=AssertionError("fused op called"))
    with torch.no_grad(), mock.patch.object(torch.ops.qengine, "group_norm_quant_fp8", boom):
        model(*inputs)  # dynamic conv scales: the stock forward
        # the static-scale calibration hooks the convs: it sees their inputs through the stock forward
        assert calibrate_static_scales(model, lambda: model(*inputs))
        model.train()
        model(*inputs)  # training: the stock forward
    model.eval()
    with torch.no_grad(), mock.patch.object(torch.ops.qengine, "group_norm_quant_fp8", boom):
        with pytest.raises(AssertionError, match="fused op called"):
            model(*inputs)


def test_fused_resnet_off_the_kernel_device_is_the_stock_forward():
    gen = torch.Generator().manual_seed(7)
    model, inputs, _ = _quantized_unet("w8a8-fp8", gen)
    boom = mock.Mock(side_effect=AssertionError("fused op called"))
    with torch.no_grad(), mock.patch.object(torch.ops.qengine, "group_norm_quant_fp8", boom):
        calibrate_static_scales(model, lambda: model(*inputs))
        model(*inputs)  # CPU, no compiled kernel: diffusers' forward


def test_resnets_with_16bit_convs_are_not_swapped():
    from qengine.integrations.tiny_models import build_tiny

    model, _ = build_tiny("unet2d_condition")
    assert fused_resnet.swap_resnet_forwards(model) == 0
    model = qengine.quantize(model.to(torch.bfloat16), qengine.QuantConfig.preset("w8a8-fp8", conv_scheme="none"))
    assert fused_resnet.swap_resnet_forwards(model) == 0
