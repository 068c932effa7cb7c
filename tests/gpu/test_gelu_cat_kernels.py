"""GPU tests of the gelu-cat activation quantization (quantize_act_{int8,fp8}_gelu_cat).

- q and scale are bit-exact with quantizing ``torch.cat([x, F.gelu(g, approximate="tanh")], 1)``
  where the GELU is torch's own CUDA kernel and the quantization the CPU reference: the kernel's
  GELU must round exactly as torch's does. Over FLUX's shapes (3072 + 12288 and 0 + 12288
  columns), short and odd M, both 16-bit dtypes, both formats and every kind of smoothing.
- QLinear.forward_gelu_cat equals the unfused QLinear call on the concatenation, for every
  scheme it serves, with CUDA graph capture and torch.compile(fullgraph=True).
- A FLUX transformer (two blocks, real head size) quantized on CUDA gives the same output with
  the gelu-cat forwards as without them.
- opcheck, and clear errors for bad input.

Skipped, with the reason, where there is no CUDA GPU or qengine._C lacks the kernels.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.gpu

from gpu_helpers import assert_replays_equal_eager, outlier_activations, require_extension  # noqa: E402

EXT = require_extension()

from qengine.config import LayerQuantConfig  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402

DEV = torch.device("cuda")
OPS = {"fp8": "quantize_act_fp8_gelu_cat", "int8": "quantize_act_int8_gelu_cat"}
if any(op in MISSING_CUDA_KERNELS for op in OPS.values()):
    pytest.skip("qengine._C has no CUDA kernel for the gelu-cat quantization", allow_module_level=True)
Q = torch.ops.qengine


def inputs(m, kx, kg, dtype, seed=0):
    """x: outlier-heavy activations; g: pre-GELU values over [-8, 8] (both tails of the GELU)."""
    x = outlier_activations(m, kx, dtype, seed) if kx else None
    gen = torch.Generator(device=DEV).manual_seed(seed + 7)
    g = (torch.randn(m, kg, device=DEV, generator=gen) * 3).clamp(-8, 8).to(dtype)
    return x, g


def expected(fmt, x, g, smooth):
    """The reference quantization (CPU) of the concatenation with torch's CUDA GELU."""
    row = F.gelu(g, approximate="tanh")
    if x is not None:
        row = torch.cat([x, row], dim=1)
    quant = ref.quantize_act_fp8 if fmt == "fp8" else ref.quantize_act_int8
    q, s, _ = quant(row.cpu(), None if smooth is None else smooth.cpu())
    return q, s


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,kx,kg", [(1, 16, 16), (7, 0, 64), (33, 48, 80), (130, 3072, 12288), (64, 0, 12288),
                                     (5, 320, 1280), (3, 16, 16384)])
def test_bit_exact(fmt, dtype, m, kx, kg):
    x, g = inputs(m, kx, kg, dtype, seed=m + kx)
    q, s = getattr(Q, OPS[fmt])(x, g, None)
    eq, es = expected(fmt, x, g, None)
    assert torch.equal(s.cpu(), es)
    assert torch.equal(q.cpu().view(torch.uint8), eq.view(torch.uint8))


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("smooth_dtype", ["same", torch.float32])
def test_bit_exact_smoothed(fmt, smooth_dtype):
    m, kx, kg = 45, 96, 384
    x, g = inputs(m, kx, kg, torch.bfloat16, seed=3)
    gen = torch.Generator(device=DEV).manual_seed(11)
    smooth = (torch.rand(kx + kg, device=DEV, generator=gen) * 4 + 0.25)
    smooth = smooth.to(torch.bfloat16 if smooth_dtype == "same" else smooth_dtype)
    q, s = getattr(Q, OPS[fmt])(x, g, smooth)
    eq, es = expected(fmt, x, g, smooth)
    assert torch.equal(s.cpu(), es)
    assert torch.equal(q.cpu().view(torch.uint8), eq.view(torch.uint8))


def test_gelu_rounds_like_torch_on_every_bf16_value():
    """Every finite bf16 in [-16, 16] through the GELU, each alone in its row (16 copies after 16
    zero columns): the row's scale is |gelu(v)| / QMAX, so it shows the kernel's bf16 GELU value
    exactly, and q its sign."""
    vals = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    vals = vals[torch.isfinite(vals) & (vals.float().abs() <= 16)].to(DEV)
    g = vals[:, None].expand(-1, 16).contiguous()
    x = torch.zeros(g.shape[0], 16, dtype=torch.bfloat16, device=DEV)
    for fmt in OPS:
        q, s = getattr(Q, OPS[fmt])(x, g, None)
        eq, es = expected(fmt, x, g, None)
        assert torch.equal(s.cpu(), es) and torch.equal(q.cpu().view(torch.uint8), eq.view(torch.uint8))


SCHEMES = ["w8a8-fp8", "w8a8-int8", "w4a8"]


def qlinear(scheme, k, n, smooth=False, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n).to(DEV, torch.bfloat16)
    s = torch.rand(k, device=DEV).bfloat16() + 0.5 if smooth else None
    return QLinear.from_float(lin, LayerQuantConfig(scheme=scheme), smooth=s)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kx,smooth", [(256, False), (0, False), (256, True)])
def test_qlinear_forward_gelu_cat_equals_unfused(scheme, kx, smooth):
    kg = 1024
    q = qlinear(scheme, kx + kg, 512, smooth)
    x, g = inputs(77, kx, kg, torch.bfloat16, seed=5)
    x3 = None if x is None else x.reshape(7, 11, kx)
    g3 = g.reshape(7, 11, kg)
    gelu = F.gelu(g3, approximate="tanh")
    expect = q(gelu if x3 is None else torch.cat([x3, gelu], -1))
    assert torch.equal(q.forward_gelu_cat(x3, g3), expect)


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
def test_cuda_graph():
    q = qlinear("w8a8-fp8", 512, 256)
    x, g = inputs(64, 128, 384, torch.bfloat16)
    static = torch.cat([x, g], 1)

    def fn(t):
        return q.forward_gelu_cat(t[:, :128].contiguous(), t[:, 128:].contiguous())

    def make_x(seed):
        a, b = inputs(64, 128, 384, torch.bfloat16, seed=seed + 1)
        return torch.cat([a, b], 1)
    assert_replays_equal_eager(fn, static, make_x)


def test_torch_compile():
    q = qlinear("w8a8-fp8", 512, 256)
    x, g = inputs(64, 128, 384, torch.bfloat16)
    compiled = torch.compile(q.forward_gelu_cat, fullgraph=True)
    assert torch.equal(compiled(x, g), q.forward_gelu_cat(x, g))


def test_flux_blocks_fused_equal_stock():
    """Two FLUX blocks at the real head size, quantized on CUDA: the gelu-cat forwards (installed
    by qengine.quantize) give the same output as the blocks' own forwards."""
    diffusers = pytest.importorskip("diffusers")
    import qengine

    torch.manual_seed(0)
    model = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56)).to(DEV, torch.bfloat16).eval()
    qengine.quantize(model, "w8a8-fp8")
    swapped = [m for m in model.modules() if hasattr(m, "_qengine_gelu_cat")]
    assert len(swapped) == 3  # the single block, ff and ff_context
    assert qengine.enable_fused_kernels(model)["gelu_cat"] == 0  # already done by quantize
    gen = torch.Generator(device=DEV).manual_seed(1)
    n_img, n_txt = 64, 16
    inp = dict(hidden_states=torch.randn(1, n_img, 16, device=DEV, generator=gen).bfloat16(),
               encoder_hidden_states=torch.randn(1, n_txt, 64, device=DEV, generator=gen).bfloat16(),
               pooled_projections=torch.randn(1, 32, device=DEV, generator=gen).bfloat16(),
               timestep=torch.tensor([0.5], device=DEV), guidance=torch.tensor([3.5], device=DEV),
               img_ids=torch.zeros(n_img, 3, device=DEV), txt_ids=torch.zeros(n_txt, 3, device=DEV))
    calls = []
    real = Q.quantize_act_fp8_gelu_cat

    import unittest.mock as mock

    with torch.no_grad():
        with mock.patch.object(Q, "quantize_act_fp8_gelu_cat", lambda *a: calls.append(1) or real(*a)):
            out = model(**inp)[0]
        for m in swapped:
            del m.forward  # back to the class's forward
        expect = model(**inp)[0]
    assert len(calls) == 3
    assert torch.isfinite(expect).all()
    assert torch.equal(out, expect)


def test_opcheck():
    x, g = inputs(33, 64, 128, torch.bfloat16)
    s = torch.rand(192, device=DEV).bfloat16() + 0.5
    for op in OPS.values():
        torch.library.opcheck(getattr(Q, op).default, (x, g, s))
        torch.library.opcheck(getattr(Q, op).default, (None, g, None))


def test_bad_inputs():
    x, g = inputs(8, 64, 128, torch.bfloat16)
    op = Q.quantize_act_fp8_gelu_cat
    with pytest.raises(ValueError, match="multiples of 16"):
        op(x, g[:, :40].contiguous(), None)
    with pytest.raises(ValueError, match="gelu_x must have dtype"):
        op(None, g.float(), None)
    with pytest.raises(ValueError, match="x must have dtype"):
        op(x.half(), g, None)
    with pytest.raises(ValueError, match=r"x must have shape \[8, \*\]"):
        op(x[:4].contiguous(), g, None)
    with pytest.raises(ValueError, match=r"smooth must have shape \[192\]"):
        op(x, g, torch.ones(128, device=DEV))
    with pytest.raises(ValueError, match="contiguous"):
        op(x, torch.cat([g, g], 1)[:, ::2], None)
    with pytest.raises(ValueError, match="CUDA tensor"):
        op(x.cpu(), g, None)
