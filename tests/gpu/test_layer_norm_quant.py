"""GPU tests of LayerNorm + quantization (layer_norm_quant_{int8,fp8}) and the folded LayerNorms.

- Against torch's CUDA LayerNorm quantized by the CPU reference: the kernel's mean and rstd round
  differently, so an element of the normalized row may differ by one unit in its last place;
  the test bounds how often a quantized byte differs (< 1%), by how much (one step of the
  format), and the scale (within one 16-bit ulp of the row absmax). SDXL / SD1.5 shapes, odd M,
  C up to 4096, both 16-bit dtypes, with and without affine parameters and smoothing.
- A UNet with its LayerNorms folded into the QLinears (qengine.quantize) is close to the same
  quantized UNet unfolded; CUDA graph capture and torch.compile(fullgraph=True) of a folded
  QLinear equal its eager call.
- opcheck, and clear errors for bad input.

Skipped, with the reason, where there is no CUDA GPU or qengine._C lacks the kernels.
"""
from __future__ import annotations

import os
import unittest.mock as mock

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.gpu

from gpu_helpers import assert_replays_equal_eager, require_extension, sdxl_style_unet, sqnr_db  # noqa: E402

EXT = require_extension()

import qengine  # noqa: E402
from qengine.config import LayerQuantConfig, QuantConfig  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.nn.fused_norm_quant import unfold_layer_norms  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402

DEV = torch.device("cuda")
OPS = {"fp8": "layer_norm_quant_fp8", "int8": "layer_norm_quant_int8"}
if any(op in MISSING_CUDA_KERNELS for op in OPS.values()):
    pytest.skip("qengine._C has no CUDA kernel for the LayerNorm quantization", allow_module_level=True)
Q = torch.ops.qengine


def make_x(m, c, dtype, seed=0):
    """Rows with an offset and a few large channels (what a residual stream looks like)."""
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(m, c, device=DEV, generator=gen) * 2 + 0.5
    x[:, :: max(1, c // 7)] *= 12
    return x.to(dtype)


def dequant(fmt, q, s):
    return (q.float() if fmt == "fp8" else q.to(torch.float32)) * s[:, None]


def check_close(fmt, x, w, b, eps, smooth):
    q, s = getattr(Q, OPS[fmt])(x, w, b, eps, smooth)
    y = F.layer_norm(x, (x.shape[1],), w, b, eps)  # torch's CUDA LayerNorm
    quant = ref.quantize_act_fp8 if fmt == "fp8" else ref.quantize_act_int8
    eq, es, _ = quant(y.cpu(), None if smooth is None else smooth.cpu())
    q, s = q.cpu(), s.cpu()
    ulp = 2.0 ** -7 if x.dtype == torch.bfloat16 else 2.0 ** -10
    assert torch.all((s - es).abs() <= es * ulp * 1.01), "scale beyond one 16-bit ulp of the row absmax"
    differ = q.view(torch.uint8) != eq.view(torch.uint8)
    assert differ.float().mean().item() < 0.01
    if fmt == "int8":
        assert (q.int() - eq.int()).abs().max().item() <= 1
    assert sqnr_db(dequant(fmt, q, s), dequant(fmt, eq, es)) >= 40


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,c", [(1, 16), (7, 64), (1024, 1280), (4096, 640), (4096, 320), (77, 2048), (33, 4096),
                                 (5, 1040)])
def test_close_to_torch_layer_norm(fmt, dtype, m, c):
    x = make_x(m, c, dtype, seed=m + c)
    w = (torch.rand(c, device=DEV) + 0.5).to(dtype)
    b = (torch.randn(c, device=DEV) * 0.1).to(dtype)
    check_close(fmt, x, w, b, 1e-5, None)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("affine,smooth_dtype", [(False, None), (True, "same"), (True, torch.float32)])
def test_affine_and_smoothing_variants(fmt, affine, smooth_dtype):
    c = 640
    x = make_x(130, c, torch.bfloat16, seed=3)
    w = (torch.rand(c, device=DEV) + 0.5).bfloat16() if affine else None
    b = (torch.randn(c, device=DEV) * 0.1).bfloat16() if affine else None
    smooth = None
    if smooth_dtype is not None:
        smooth = (torch.rand(c, device=DEV) * 4 + 0.25).to(torch.bfloat16 if smooth_dtype == "same" else smooth_dtype)
    check_close(fmt, x, w, b, 1e-6, smooth)


def folded_qlinear(scheme="w8a8-fp8", c=640, n=256):
    torch.manual_seed(0)
    lin = QLinear.from_float(torch.nn.Linear(c, n).to(DEV, torch.bfloat16), LayerQuantConfig(scheme=scheme))
    norm = torch.nn.LayerNorm(c).to(DEV, torch.bfloat16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0, 0.1)
    lin.__dict__["_pre_norm"] = norm
    lin.__dict__["_pre_norm_built"] = True
    return lin, norm


def test_folded_qlinear_is_the_quantized_layer_of_the_norm():
    lin, norm = folded_qlinear()
    x = make_x(2 * 77, 640, torch.bfloat16, seed=5).reshape(2, 77, 640)
    calls = []
    real = Q.layer_norm_quant_fp8
    with mock.patch.object(Q, "layer_norm_quant_fp8", lambda *a: calls.append(1) or real(*a)):
        out = lin(x)
    assert calls == [1]
    lin.__dict__["_pre_norm"] = None  # the plain QLinear of the norm's output
    expect = lin(norm(x))
    assert sqnr_db(out.float(), expect.float()) >= 35


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
def test_cuda_graph():
    lin, _ = folded_qlinear()
    assert_replays_equal_eager(lin, make_x(64, 640, torch.bfloat16),
                               lambda seed: make_x(64, 640, torch.bfloat16, seed=seed + 1))


def test_torch_compile():
    lin, _ = folded_qlinear()
    x = make_x(64, 640, torch.bfloat16)
    compiled = torch.compile(lin, fullgraph=True)
    assert torch.equal(compiled(x), lin(x))


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
def test_unet_folded_close_to_unfolded(scheme):
    """A small SDXL-style UNet (640-channel transformer blocks, fused q/k/v) quantized on CUDA."""
    pytest.importorskip("diffusers")
    model, (sample, t, text) = sdxl_style_unet()
    qengine.quantize(model, QuantConfig.preset(scheme, fuse_qkv=True))
    qengine.enable_fused_kernels(model, producer_fusions=True)  # opt-in
    n_blocks = sum(type(m).__name__ == "BasicTransformerBlock" for m in model.modules())
    op = OPS["fp8" if scheme == "w8a8-fp8" else "int8"]
    calls = []
    real = getattr(Q, op)
    with torch.no_grad():
        with mock.patch.object(Q, op, lambda *a: calls.append(1) or real(*a)):
            out = model(sample, t, text).sample
        assert unfold_layer_norms(model) == 3 * n_blocks
        expect = model(sample, t, text).sample
    assert len(calls) == 3 * n_blocks
    assert torch.isfinite(out).all()
    # Two quantized UNets whose LayerNorm outputs differ in a few last places; the random-weight
    # INT8 UNet amplifies that most (27.8 dB measured on an H100); a wrong norm gives ~0 dB.
    assert sqnr_db(out.float(), expect.float()) >= 25


def test_opcheck():
    x = make_x(33, 128, torch.bfloat16)
    w = torch.rand(128, device=DEV).bfloat16() + 0.5
    s = torch.rand(128, device=DEV).bfloat16() + 0.5
    for op in OPS.values():
        torch.library.opcheck(getattr(Q, op).default, (x, w, w, 1e-5, s))
        torch.library.opcheck(getattr(Q, op).default, (x, None, None, 1e-6, None))


def test_bad_inputs():
    x = make_x(8, 64, torch.bfloat16)
    op = Q.layer_norm_quant_fp8
    with pytest.raises(ValueError, match="C=40 is not supported"):
        op(x[:, :40].contiguous(), None, None, 1e-5, None)
    with pytest.raises(ValueError, match="at most 4096"):
        op(make_x(2, 4112, torch.bfloat16), None, None, 1e-5, None)
    with pytest.raises(ValueError, match="x must have dtype"):
        op(x.float(), None, None, 1e-5, None)
    with pytest.raises(ValueError, match=r"weight must have shape \[64\]"):
        op(x, torch.ones(32, device=DEV).bfloat16(), None, 1e-5, None)
    with pytest.raises(ValueError, match="bias must be a CUDA tensor"):
        op(x, None, torch.ones(64).bfloat16(), 1e-5, None)
    with pytest.raises(ValueError, match="contiguous"):
        op(torch.cat([x, x], 1)[:, ::2], None, None, 1e-5, None)
