"""GPU tests of the GEGLU activation quantization (quantize_act_{int8,fp8}_geglu).

- q and scale are bit-exact with quantizing ``h * F.gelu(gate)`` (``[h | gate] = proj``, torch's
  own CUDA GELU and multiply) by the CPU reference: the kernel's GELU and product must round
  exactly as torch's do. Over SDXL's and SD1.5's feed-forward shapes, short and odd M, both
  16-bit dtypes, both formats and every kind of smoothing; and every finite bf16 gate value.
- QLinear.forward_geglu equals the unfused QLinear call, for every scheme it serves, with CUDA
  graph capture and torch.compile(fullgraph=True).
- A UNet's transformer blocks quantized on CUDA give the same output with the GEGLU forwards.
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

from gpu_helpers import (assert_replays_equal_eager, outlier_activations, require_extension,  # noqa: E402
                         sdxl_style_unet)

EXT = require_extension()

from qengine.config import LayerQuantConfig  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402

DEV = torch.device("cuda")
OPS = {"fp8": "quantize_act_fp8_geglu", "int8": "quantize_act_int8_geglu"}
if any(op in MISSING_CUDA_KERNELS for op in OPS.values()):
    pytest.skip("qengine._C has no CUDA kernel for the GEGLU quantization", allow_module_level=True)
Q = torch.ops.qengine


def make_proj(m, k, dtype, seed=0):
    """h: outlier-heavy activations; gate: pre-GELU values over [-8, 8] (both tails of the GELU)."""
    h = outlier_activations(m, k, dtype, seed)
    gen = torch.Generator(device=DEV).manual_seed(seed + 7)
    gate = (torch.randn(m, k, device=DEV, generator=gen) * 3).clamp(-8, 8).to(dtype)
    return torch.cat([h, gate], 1)


def expected(fmt, proj, smooth):
    """The reference quantization (CPU) of torch's CUDA GEGLU output."""
    h, gate = proj.chunk(2, dim=-1)
    row = h * F.gelu(gate)
    quant = ref.quantize_act_fp8 if fmt == "fp8" else ref.quantize_act_int8
    q, s, _ = quant(row.cpu(), None if smooth is None else smooth.cpu())
    return q, s


def assert_exact(fmt, proj, smooth=None):
    q, s = getattr(Q, OPS[fmt])(proj, smooth)
    eq, es = expected(fmt, proj, smooth)
    assert torch.equal(s.cpu(), es)
    assert torch.equal(q.cpu().view(torch.uint8), eq.view(torch.uint8))


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k", [(1, 16), (7, 64), (33, 80), (1024, 5120), (4096, 2560), (4096, 1280),
                                 (130, 5120), (3, 16384)])
def test_bit_exact(fmt, dtype, m, k):
    assert_exact(fmt, make_proj(m, k, dtype, seed=m + k))


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("smooth_dtype", ["same", torch.float32])
def test_bit_exact_smoothed(fmt, smooth_dtype):
    proj = make_proj(45, 384, torch.bfloat16, seed=3)
    gen = torch.Generator(device=DEV).manual_seed(11)
    smooth = (torch.rand(384, device=DEV, generator=gen) * 4 + 0.25)
    assert_exact(fmt, proj, smooth.to(torch.bfloat16 if smooth_dtype == "same" else smooth_dtype))


def test_a_strided_view_of_proj():
    """A column slice of a wider tensor (row stride > 2K) is read in place or copied, same result."""
    wide = make_proj(37, 256, torch.bfloat16, seed=9)
    assert_exact("fp8", wide[:, 64:64 + 256].contiguous())
    with pytest.raises(ValueError, match="contiguous"):
        Q.quantize_act_fp8_geglu(wide[:, :256], None)


def test_gelu_and_product_round_like_torch_on_every_bf16_gate():
    """Every finite bf16 in [-16, 16] as a gate, each alone in its row (16 copies after 16 zero
    columns, h = 1.5): the row's scale is |1.5 gelu(v)| / QMAX rounded as torch rounds it, so it
    shows the kernel's GELU and product exactly, and q their sign."""
    vals = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    vals = vals[torch.isfinite(vals) & (vals.float().abs() <= 16)].to(DEV)
    gate = torch.cat([torch.zeros(vals.shape[0], 16, dtype=torch.bfloat16, device=DEV),
                      vals[:, None].expand(-1, 16)], 1)
    h = torch.full_like(gate, 1.5)
    proj = torch.cat([h, gate], 1)
    for fmt in OPS:
        assert_exact(fmt, proj)


SCHEMES = ["w8a8-fp8", "w8a8-int8", "w4a8"]


def qlinear(scheme, k, n, smooth=False, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n).to(DEV, torch.bfloat16)
    s = torch.rand(k, device=DEV).bfloat16() + 0.5 if smooth else None
    return QLinear.from_float(lin, LayerQuantConfig(scheme=scheme), smooth=s)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("smooth", [False, True])
def test_qlinear_forward_geglu_equals_unfused(scheme, smooth):
    q = qlinear(scheme, 1280, 640, smooth)
    proj = make_proj(77, 1280, torch.bfloat16, seed=5).reshape(7, 11, 2560)
    h, gate = proj.chunk(2, -1)
    assert torch.equal(q.forward_geglu(proj), q(h * F.gelu(gate)))


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
def test_cuda_graph():
    q = qlinear("w8a8-fp8", 512, 256)
    assert_replays_equal_eager(q.forward_geglu, make_proj(64, 512, torch.bfloat16),
                               lambda seed: make_proj(64, 512, torch.bfloat16, seed=seed + 1))


def test_torch_compile():
    q = qlinear("w8a8-fp8", 512, 256)
    proj = make_proj(64, 512, torch.bfloat16)
    compiled = torch.compile(q.forward_geglu, fullgraph=True)
    assert torch.equal(compiled(proj), q.forward_geglu(proj))


def test_unet_transformer_blocks_fused_equal_stock():
    """A small SDXL-style UNet (transformer blocks with GEGLU feed-forwards, 640 channels) quantized
    on CUDA: the GEGLU forwards (installed by enable_fused_kernels(producer_fusions=True)) give
    the same output as the feed-forwards' own forwards."""
    pytest.importorskip("diffusers")
    import qengine

    model, (sample, t, text) = sdxl_style_unet()
    qengine.quantize(model, "w8a8-fp8")
    qengine.enable_fused_kernels(model, producer_fusions=True)  # opt-in
    swapped = [m for m in model.modules() if hasattr(m, "_qengine_gelu_cat")]
    n_ff = sum(type(m).__name__ == "FeedForward" for m in model.modules())
    assert n_ff > 0 and len(swapped) == n_ff
    calls = []
    real = Q.quantize_act_fp8_geglu
    with torch.no_grad():
        with mock.patch.object(Q, "quantize_act_fp8_geglu", lambda *a: calls.append(1) or real(*a)):
            out = model(sample, t, text).sample
        for m in swapped:
            del m.forward  # back to the class's forward
        expect = model(sample, t, text).sample
    assert len(calls) == len(swapped)
    assert torch.isfinite(expect).all()
    assert torch.equal(out, expect)


def test_opcheck():
    proj = make_proj(33, 128, torch.bfloat16)
    s = torch.rand(128, device=DEV).bfloat16() + 0.5
    for op in OPS.values():
        torch.library.opcheck(getattr(Q, op).default, (proj, s))
        torch.library.opcheck(getattr(Q, op).default, (proj, None))


def test_bad_inputs():
    proj = make_proj(8, 64, torch.bfloat16)
    op = Q.quantize_act_fp8_geglu
    with pytest.raises(ValueError, match="positive multiple of 32"):
        op(proj[:, :80].contiguous(), None)
    with pytest.raises(ValueError, match="proj must have dtype"):
        op(proj.float(), None)
    with pytest.raises(ValueError, match=r"smooth must have shape \[64\]"):
        op(proj, torch.ones(128, device=DEV))
    with pytest.raises(ValueError, match="smooth must be a CUDA tensor"):
        op(proj, torch.ones(64))
