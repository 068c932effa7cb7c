"""GPU tests of the gelu-cat activation quantization (quantize_act_{int8,fp8}_gelu_cat).

- q and scale are bit-exact with quantizing ``torch.cat([x, F.gelu(g, approximate="tanh")], 1)``
  where the GELU is torch's own CUDA kernel and the quantization the CPU reference: the kernel's
  GELU must round exactly as torch's does. Over FLUX's shapes (3072 + 12288 and 0 + 12288
  columns), short and odd M, both 16-bit dtypes, both formats and every kind of smoothing.
- QLinear.forward_gelu_cat equals the unfused QLinear call on the concatenation, for every
  scheme it serves, with CUDA graph capture and torch.compile(fullgraph=True).
- A FLUX transformer (two blocks, real head size) quantized on CUDA gives the same output with
  the gelu-cat forwards as without them.
- The `_lowrank` variants (lora_down; FP8 cat mode too) equal the tile kernel on the concatenated
  row, bit for bit (q, scale and lowrank_act; in plain mode over every 16-bit value too: their
  GELU is our gelu_absmax kernel's, not torch's), and QLinear.forward_gelu_cat with a branch equals
  the unfused call (graphs, compile, a FLUX model with W4A8 + rank 16).
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


# (scheme, rank, FP8 branch in K): without a branch, then with one (the down-projecting variants).
LAYERS = [("w8a8-fp8", 0, False), ("w8a8-int8", 0, False), ("w4a8", 0, False),
          ("w8a8-fp8", 32, True), ("w8a8-fp8", 32, False), ("w8a8-int8", 32, False), ("w4a8", 32, False)]


def qlinear(scheme, k, n, smooth=False, seed=0, rank=0, cat=False):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n).to(DEV, torch.bfloat16)
    s = torch.rand(k, device=DEV).bfloat16() + 0.5 if smooth else None
    q = QLinear.from_float(lin, LayerQuantConfig(scheme=scheme, rank=rank), smooth=s)
    if cat:
        assert q.enable_lowrank_cat()
    return q


@pytest.mark.parametrize("scheme,rank,cat", LAYERS)
@pytest.mark.parametrize("kx,smooth", [(256, False), (0, False), (256, True)])
def test_qlinear_forward_gelu_cat_equals_unfused(scheme, rank, cat, kx, smooth):
    kg = 1024
    q = qlinear(scheme, kx + kg, 512, smooth, rank=rank, cat=cat)
    assert q.supports_gelu_cat() and q.supports_producer_quant() == (rank == 0)
    x, g = inputs(77, kx, kg, torch.bfloat16, seed=5)
    x3 = None if x is None else x.reshape(7, 11, kx)
    g3 = g.reshape(7, 11, kg)
    gelu = F.gelu(g3, approximate="tanh")
    expect = q(gelu if x3 is None else torch.cat([x3, gelu], -1))
    assert torch.equal(q.forward_gelu_cat(x3, g3), expect)


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
@pytest.mark.parametrize("scheme,rank", [("w8a8-fp8", 0), ("w4a8", 32)])
def test_cuda_graph(scheme, rank):
    q = qlinear(scheme, 512, 256, rank=rank)
    x, g = inputs(64, 128, 384, torch.bfloat16)
    static = torch.cat([x, g], 1)

    def fn(t):
        return q.forward_gelu_cat(t[:, :128].contiguous(), t[:, 128:].contiguous())

    def make_x(seed):
        a, b = inputs(64, 128, 384, torch.bfloat16, seed=seed + 1)
        return torch.cat([a, b], 1)
    assert_replays_equal_eager(fn, static, make_x)


@pytest.mark.parametrize("scheme,rank", [("w8a8-fp8", 0), ("w4a8", 32)])
def test_torch_compile(scheme, rank):
    q = qlinear(scheme, 512, 256, rank=rank)
    x, g = inputs(64, 128, 384, torch.bfloat16)
    compiled = torch.compile(q.forward_gelu_cat, fullgraph=True)
    assert torch.equal(compiled(x, g), q.forward_gelu_cat(x, g))


@pytest.mark.parametrize("rank,op", [(0, "quantize_act_fp8_gelu_cat"), (16, "quantize_act_int8_gelu_cat_lowrank")])
def test_flux_blocks_fused_equal_stock(rank, op):
    """Two FLUX blocks at the real head size, quantized on CUDA: the gelu-cat forwards (installed
    by qengine.quantize) give the same output as the blocks' own forwards. W8A8-FP8, and W4A8 with
    a rank-16 branch (the down-projecting gelu-cat op)."""
    diffusers = pytest.importorskip("diffusers")
    import qengine

    torch.manual_seed(0)
    model = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56)).to(DEV, torch.bfloat16).eval()
    qengine.quantize(model, qengine.QuantConfig.preset("w4a8", rank=rank) if rank else "w8a8-fp8")
    swapped = [m for m in model.modules() if hasattr(m, "_qengine_gelu_cat")]
    assert len(swapped) == 3  # the single block, ff and ff_context
    assert all(getattr(m, "_qengine_gelu_cat") for m in swapped)  # the op's kernel is built
    assert qengine.enable_fused_kernels(model)["gelu_cat"] == 0  # already done by quantize
    gen = torch.Generator(device=DEV).manual_seed(1)
    n_img, n_txt = 64, 16
    inp = dict(hidden_states=torch.randn(1, n_img, 16, device=DEV, generator=gen).bfloat16(),
               encoder_hidden_states=torch.randn(1, n_txt, 64, device=DEV, generator=gen).bfloat16(),
               pooled_projections=torch.randn(1, 32, device=DEV, generator=gen).bfloat16(),
               timestep=torch.tensor([0.5], device=DEV), guidance=torch.tensor([3.5], device=DEV),
               img_ids=torch.zeros(n_img, 3, device=DEV), txt_ids=torch.zeros(n_txt, 3, device=DEV))
    calls = []
    real = getattr(Q, op)

    import unittest.mock as mock

    with torch.no_grad():
        with mock.patch.object(Q, op, lambda *a: calls.append(1) or real(*a)):
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


# ---------------------------------------------------------------- with the low-rank down-projection

LOWRANK_OPS = {"fp8": "quantize_act_fp8_gelu_cat_lowrank", "int8": "quantize_act_int8_gelu_cat_lowrank"}


def lora_down(rank, k, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed + 101)
    return (torch.randn(rank, k, device=DEV, generator=gen) / k ** 0.5).bfloat16()


def concatenated(x, g):
    row = F.gelu(g, approximate="tanh")
    return row if x is None else torch.cat([x, row], dim=1)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,kx,kg,rank", [(1, 16, 16, 16), (7, 0, 64, 32), (33, 48, 80, 48), (130, 3072, 12288, 32),
                                          (64, 0, 12288, 32), (5, 320, 1280, 64), (17, 16, 4080, 128)])
@pytest.mark.parametrize("smooth_kind", [None, "same", "fp32"])
def test_lowrank_equals_the_concatenated_row(fmt, dtype, m, kx, kg, rank, smooth_kind):
    """The gelu-cat op with lora_down (torch's GELU, then the tile kernel on the two-part row) gives
    what the tile kernel gives for the concatenated row: q, scale and lowrank_act equal, bit for bit."""
    x, g = inputs(m, kx, kg, dtype, seed=m + kx + rank)
    smooth = None
    if smooth_kind is not None:
        gen = torch.Generator(device=DEV).manual_seed(13)
        smooth = (torch.rand(kx + kg, device=DEV, generator=gen) * 4 + 0.25)
        smooth = smooth.to(dtype if smooth_kind == "same" else torch.float32)
    down = lora_down(rank, kx + kg, seed=m)
    q, s, lr = getattr(Q, LOWRANK_OPS[fmt])(x, g, smooth, down)
    eq, es, elr = getattr(Q, f"quantize_act_{fmt}")(concatenated(x, g), smooth, down)
    assert lr.shape == (m, rank) and lr.dtype == torch.float32
    assert torch.equal(s, es)
    assert torch.equal(q.view(torch.uint8), eq.view(torch.uint8))
    assert torch.equal(lr, elr)
    # and the q / scale of the plain gelu-cat kernel (the branch does not change the quantization)
    pq, ps = getattr(Q, OPS[fmt])(x, g, smooth)
    assert torch.equal(s, ps) and torch.equal(q.view(torch.uint8), pq.view(torch.uint8))


SMS = torch.cuda.get_device_properties(DEV).multi_processor_count


@pytest.mark.parametrize("fmt", ["fp8", "int8", "fp8-cat"])
@pytest.mark.parametrize("tiles_per_sm", [1.5, 2.5])
def test_lowrank_equals_the_concatenated_row_at_every_block_size(fmt, tiles_per_sm):
    """Enough 16-row tiles for the 8- and 4-warp blocks (launch_lowrank picks by tiles per SM)."""
    m = int(16 * SMS * tiles_per_sm) + 5
    x, g = inputs(m, 64, 192, torch.bfloat16, seed=m)
    down = lora_down(32, 256, seed=m)
    if fmt == "fp8-cat":
        inv_c = torch.rand(32, device=DEV) * 4 + 0.5
        q, s = Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down, inv_c)
        eq, es = Q.quantize_act_fp8_lowrank_cat(concatenated(x, g), None, down, inv_c)
    else:
        q, s, lr = getattr(Q, LOWRANK_OPS[fmt])(x, g, None, down)
        eq, es, elr = getattr(Q, f"quantize_act_{fmt}")(concatenated(x, g), None, down)
        assert torch.equal(lr, elr)
        assert torch.equal(getattr(Q, LOWRANK_OPS[fmt])(x, g, None, down, torch.bfloat16)[2], lr.bfloat16())
        exact = concatenated(x, g).float() @ down.float().t()
        assert ((lr - exact).norm() / exact.norm()).item() < 1e-5
    assert torch.equal(s, es) and torch.equal(q.view(torch.uint8), eq.view(torch.uint8))


def every_value(dtype):
    """Every finite value of a 16-bit dtype, then +-inf and a NaN, in rows of 256 (zero-padded)."""
    bits = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype).to(DEV)
    vals = torch.cat([bits[torch.isfinite(bits)],
                      torch.tensor([float("inf"), -float("inf"), float("nan")], device=DEV, dtype=dtype)])
    rows = -(-vals.numel() // 256)
    return torch.cat([vals, torch.zeros(rows * 256 - vals.numel(), device=DEV, dtype=dtype)]).view(rows, 256)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lowrank_gelu_of_every_value(fmt, dtype):
    """The plain-mode ops run our GELU kernel (which also returns each row's absmax, so the tile
    kernel quantizes in one pass): over every finite 16-bit value, infinities and a NaN, q, scale and
    lowrank_act equal the tile kernel's on torch's GELU output, bit for bit."""
    g = every_value(dtype)
    x = (torch.randn(g.shape[0], 32, device=DEV) * 3).to(dtype)
    down = lora_down(32, 32 + 256)
    q, s, lr = getattr(Q, LOWRANK_OPS[fmt])(x, g, None, down)
    eq, es, elr = getattr(Q, f"quantize_act_{fmt}")(concatenated(x, g), None, down)
    assert torch.equal(s, es)
    assert torch.equal(q.view(torch.uint8), eq.view(torch.uint8))
    assert torch.equal(lr.nan_to_num(), elr.nan_to_num())
    assert torch.equal(lr.isnan(), elr.isnan())


@pytest.mark.parametrize("m,kx,kg,rank", [(9, 64, 192, 16), (130, 3072, 12288, 32), (40, 0, 1024, 256)])
def test_lowrank_cat_equals_the_concatenated_row(m, kx, kg, rank):
    x, g = inputs(m, kx, kg, torch.bfloat16, seed=rank)
    down = lora_down(rank, kx + kg, seed=rank)
    inv_c = torch.rand(rank, device=DEV) * 4 + 0.5
    q, s = Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down, inv_c)
    eq, es = Q.quantize_act_fp8_lowrank_cat(concatenated(x, g), None, down, inv_c)
    assert q.shape == eq.shape
    assert torch.equal(s, es)
    assert torch.equal(q.view(torch.uint8), eq.view(torch.uint8))


def test_lowrank_other_ranks_and_empty_input():
    x, g = inputs(12, 32, 96, torch.bfloat16)
    for rank in (8, 24):  # not multiples of 16: the binding forms the row and takes the unfused product
        down = lora_down(rank, 128)
        q, s, lr = Q.quantize_act_int8_gelu_cat_lowrank(x, g, None, down)
        eq, es, elr = Q.quantize_act_int8(concatenated(x, g), None, down)
        assert torch.equal(s, es) and torch.equal(q, eq) and torch.equal(lr, elr)
    q, s, lr = Q.quantize_act_fp8_gelu_cat_lowrank(x[:0], g[:0], None, lora_down(32, 128))
    assert q.shape == (0, 128) and s.shape == (0,) and lr.shape == (0, 32)


def test_lowrank_opcheck():
    x, g = inputs(33, 64, 128, torch.bfloat16)
    s = torch.rand(192, device=DEV).bfloat16() + 0.5
    down = lora_down(32, 192)
    for op in LOWRANK_OPS.values():
        torch.library.opcheck(getattr(Q, op).default, (x, g, s, down))
        torch.library.opcheck(getattr(Q, op).default, (None, g, None, down[:, 64:].contiguous()))
    inv_c = torch.rand(32, device=DEV) + 0.5
    torch.library.opcheck(Q.quantize_act_fp8_gelu_cat_lowrank_cat.default, (x, g, s, down, inv_c))


def test_lowrank_bad_inputs():
    x, g = inputs(8, 64, 128, torch.bfloat16)
    down = lora_down(16, 192)
    op = Q.quantize_act_int8_gelu_cat_lowrank
    with pytest.raises(ValueError, match=r"lora_down must have shape \[\*, 192\]"):
        op(x, g, None, down[:, :128].contiguous())
    with pytest.raises(ValueError, match="lora_down must be a CUDA tensor"):
        op(x, g, None, down.cpu())
    with pytest.raises(ValueError, match="multiples of 16"):
        op(x, g[:, :40].contiguous(), None, down)
    with pytest.raises(ValueError, match="multiple of 16 in 16..256"):
        Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down[:8].contiguous(), torch.ones(8, device=DEV))
    with pytest.raises(ValueError, match=r"inv_c must have shape \[16\]"):
        Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down, torch.ones(8, device=DEV))
