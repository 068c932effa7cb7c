"""GPU tests of the fused SVDQuant low-rank branch of the W8A8 kernels (qengine._C).

- quantize_act_{int8,fp8}(x, smooth, lora_down): q and scale stay bit-exact with the reference
  while the kernel also computes lowrank_act = (x / smooth) @ lora_down^T on tensor cores
  (SQNR >= 60 dB against the fp32 reference; bf16 hi + lo split of the smoothed input).
- w8a8_{int8,fp8}_gemm(..., lowrank_act, lora_up): the epilogue adds lowrank_act @ lora_up^T
  before the one rounding. Checked against the reference on the same operands (SQNR >= 40 dB),
  with outputs NaN-poisoned first, for every tile config, ranks 16/32/64/128, an M sweep, the real
  model shapes; the low-rank term is made as large as the GEMM term, and one test zeroes the GEMM
  term so that only the low-rank epilogue is measured.
- Registration with low-rank arguments: opcheck, CUDA graph capture/replay, torch.compile.

Skipped, with the reason, where there is no CUDA GPU or qengine._C lacks the kernels.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

from gpu_helpers import (assert_replays_equal_eager, outlier_activations, poison_allocator,  # noqa: E402
                         require_extension, sqnr_db)

EXT = require_extension()

from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from shapes import load_shapes  # noqa: E402

DEV = torch.device("cuda")
GEMM_OP = {"int8": "w8a8_int8_gemm", "fp8": "w8a8_fp8_gemm"}
QUANT_OP = {"int8": "quantize_act_int8", "fp8": "quantize_act_fp8"}
IN_DTYPE_NAME = {"int8": "int8", "fp8": "float8_e4m3fn"}
RANKS = [16, 32, 64, 128]


def skip_missing(kind: str, *ops: str) -> None:
    for op in ops:
        if op in MISSING_CUDA_KERNELS:
            pytest.skip(f"qengine._C has no CUDA kernel for {op}")


def configs_for(kind: str) -> list[str]:
    return [c for c in EXT.gemm_configs() if EXT.gemm_config_available(c, IN_DTYPE_NAME[kind], DEV.index or 0)]


# ---------------------------------------------------------------- quantize + lora_down


activations = outlier_activations


def check_quantize_lowrank(kind, m, k, rank, dtype=torch.bfloat16, smooth=None, down_dtype=torch.bfloat16, seed=0):
    op = QUANT_OP[kind]
    x = activations(m, k, dtype, seed)
    g = torch.Generator(device=DEV).manual_seed(seed + 1)
    s = None
    if smooth is not None:
        s = (torch.rand(k, device=DEV, generator=g) * 4 + 0.25).to(dtype if smooth == "same" else torch.float32)
    down = (torch.randn(rank, k, device=DEV, generator=g) / math.sqrt(k)).to(down_dtype)
    poison_allocator(m * max(rank, k) * 4)
    q, scale, low = getattr(torch.ops.qengine, op)(x, s, down)
    rq, rscale, rlow = getattr(ref, op)(x.cpu(), None if s is None else s.cpu(), down.cpu())
    where = f"M={m} K={k} rank={rank} x={dtype} smooth={smooth} lora_down={down_dtype}"
    assert low.shape == (m, rank) and low.dtype == torch.float32, where
    assert torch.equal(scale.cpu(), rscale), f"scales differ ({where})"
    mismatch = (q.cpu().view(torch.uint8) != rq.view(torch.uint8)).sum().item()
    assert mismatch == 0, f"{mismatch} quantized values differ ({where})"
    assert torch.isfinite(low).all(), f"non-finite lowrank_act (unwritten?) for {where}"
    # lora_down rounded to bf16 by the kernel when given in another dtype: compare against that.
    rlow_seen = getattr(ref, op)(x.cpu(), None if s is None else s.cpu(), down.bfloat16().cpu())[2]
    db = sqnr_db(low.cpu(), rlow_seen)
    assert db >= 60, f"lowrank_act SQNR {db:.1f} dB ({where})"
    return sqnr_db(low.cpu(), rlow)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("rank", RANKS + [48])
@pytest.mark.parametrize("m,k", [(1, 16), (17, 48), (64, 3072), (33, 4096), (130, 1280), (5, 15360)])
def test_quantize_lowrank_shapes_and_ranks(kind, rank, m, k):
    skip_missing(kind, QUANT_OP[kind])
    check_quantize_lowrank(kind, m, k, rank, seed=m + k + rank)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("smooth", [None, "same", "fp32"])
def test_quantize_lowrank_dtypes_and_smoothing(kind, dtype, smooth):
    skip_missing(kind, QUANT_OP[kind])
    check_quantize_lowrank(kind, 77, 768, 32, dtype=dtype, smooth=smooth, seed=7)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("tiles_per_sm", [1.5, 2.5])
@pytest.mark.parametrize("rank,dtype", [(32, torch.bfloat16), (48, torch.float32)])
def test_quantize_lowrank_every_block_size(kind, tiles_per_sm, rank, dtype):
    """The tile kernel takes 8 or 4 warps per 16-row block by the number of tiles per SM."""
    skip_missing(kind, QUANT_OP[kind])
    sms = torch.cuda.get_device_properties(DEV).multi_processor_count
    check_quantize_lowrank(kind, int(16 * sms * tiles_per_sm) + 3, 512, rank, dtype=dtype, smooth="fp32", seed=3)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("rank,m", [(32, 77), (48, 5000), (12, 40)])
def test_quantize_lowrank_16bit_lowrank_act(kind, rank, m):
    """lowrank_dtype bf16/fp16: the kernel rounds each fp32 sum once (12: the binding's fallback)."""
    skip_missing(kind, QUANT_OP[kind])
    op = getattr(torch.ops.qengine, QUANT_OP[kind])
    x = activations(m, 768, torch.bfloat16, 5)
    down = (torch.randn(rank, 768, device=DEV) / math.sqrt(768)).bfloat16()
    q, s, lr = op(x, None, down)
    for dt in (torch.bfloat16, torch.float16):
        q2, s2, lr2 = op(x, None, down, dt)
        assert torch.equal(q2.view(torch.uint8), q.view(torch.uint8)) and torch.equal(s2, s)
        assert lr2.dtype == dt and torch.equal(lr2, lr.to(dt))


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantize_lowrank_fp32_down_and_odd_rank(kind):
    skip_missing(kind, QUANT_OP[kind])
    # fp32 lora_down is rounded to bf16 by the binding: still >= 40 dB against the fp32 product.
    assert check_quantize_lowrank(kind, 40, 512, 32, down_dtype=torch.float32, smooth="same") >= 40
    # A rank that is not a multiple of 16 takes the unfused fp32 matmul: same results contract.
    x = activations(40, 512, torch.bfloat16, 1)
    down = torch.randn(12, 512, device=DEV).bfloat16()
    q, scale, low = getattr(torch.ops.qengine, QUANT_OP[kind])(x, None, down)
    rq, rscale, rlow = getattr(ref, QUANT_OP[kind])(x.cpu(), None, down.cpu())
    assert torch.equal(q.cpu().view(torch.uint8), rq.view(torch.uint8)) and sqnr_db(low.cpu(), rlow) >= 60


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantize_lowrank_m_zero(kind):
    skip_missing(kind, QUANT_OP[kind])
    q, scale, low = getattr(torch.ops.qengine, QUANT_OP[kind])(
        torch.empty(0, 64, device=DEV, dtype=torch.bfloat16), None, torch.randn(32, 64, device=DEV).bfloat16())
    assert q.shape == (0, 64) and scale.shape == (0,) and low.shape == (0, 32)


# ---------------------------------------------------------------- GEMM with the low-rank epilogue


def gemm_operands(kind, m, n, k, rank, seed=0, out_dtype=torch.bfloat16, gemm_scale=1.0):
    """Quantized operands plus a low-rank term of about the GEMM term's size (so a broken
    epilogue cannot hide under the 40 dB bar); gemm_scale=0 leaves only bias + low-rank."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    if kind == "int8":
        a = torch.randint(-127, 128, (m, k), device=DEV, generator=g, dtype=torch.int8)
        w = torch.randint(-127, 128, (n, k), device=DEV, generator=g, dtype=torch.int8)
        amp = 73.0 * 73.0 * math.sqrt(k)  # |a| ~ |w| ~ 73 (uniform int8)
    else:
        a = (torch.randn(m, k, device=DEV, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
        w = (torch.randn(n, k, device=DEV, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
        amp = 1e4 * math.sqrt(k)
    a_scale = (torch.rand(m, device=DEV, generator=g) * 1e-2 + 1e-4) * gemm_scale
    w_scale = torch.rand(n, device=DEV, generator=g) * 1e-2 + 1e-4
    bias = torch.randn(n, device=DEV, generator=g).to(out_dtype) * 0.1
    # GEMM term ~ amp * 5e-3^2; low-rank term ~ sqrt(rank) * |act| * |up|.
    low = torch.randn(m, rank, device=DEV, generator=g) * (amp * 2.5e-5 / math.sqrt(rank))
    up = torch.randn(n, rank, device=DEV, generator=g).to(out_dtype)
    return a, a_scale, w, w_scale, bias, low, up


def run_gemm(kind, operands, config, out_dtype):
    a, a_scale, w, w_scale, bias, low, up = operands
    if config is None:
        return getattr(torch.ops.qengine, GEMM_OP[kind])(a, a_scale, w, w_scale, bias, low, up, out_dtype)
    return EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, bias, str(out_dtype).removeprefix("torch."), config,
                                     low, up)


def check_gemm_lowrank(kind, m, n, k, rank, config=None, out_dtype=torch.bfloat16, seed=0, gemm_scale=1.0,
                       min_db=40.0):
    ops = gemm_operands(kind, m, n, k, rank, seed=seed, out_dtype=out_dtype, gemm_scale=gemm_scale)
    poison_allocator(m * n * 4)
    out = run_gemm(kind, ops, config, out_dtype)
    expect = getattr(ref, GEMM_OP[kind])(*ops, torch.float32)
    where = f"M={m} N={n} K={k} rank={rank} config={config} out={out_dtype}"
    assert out.shape == (m, n) and out.dtype == out_dtype, where
    assert torch.isfinite(out).all(), f"non-finite outputs (unwritten?) for {where}"
    db = sqnr_db(out.float(), expect)
    assert db >= min_db, f"SQNR {db:.1f} dB for {where}"
    return db


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_gemm_lowrank_every_config(kind, rank, out_dtype):
    skip_missing(kind, GEMM_OP[kind])
    cfgs = configs_for(kind)
    assert cfgs, "no tile config runs on this GPU"
    for cfg in cfgs + [None]:
        for m, n, k in ((130, 264, 512), (257, 1024, 256)):
            check_gemm_lowrank(kind, m, n, k, rank, cfg, out_dtype=out_dtype, seed=rank + m)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("rank", [8, 16, 32, 128, 12])
def test_gemm_lowrank_term_alone(kind, rank):
    """a_scale = 0: the output is bias + lowrank_act @ lora_up^T, all of it from the epilogue.
    Rank 8 takes the epilogue's FMA path (the tensor-core path needs multiples of 16), rank 12
    the unfused matmul after the GEMM."""
    skip_missing(kind, GEMM_OP[kind])
    for cfg in configs_for(kind) + [None]:
        check_gemm_lowrank(kind, 200, 392, 256, rank, cfg, gemm_scale=0.0, min_db=45.0, seed=rank)


def test_sm90_configs_fuse_the_lowrank_branch():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fused low-rank epilogue is an sm90 (wgmma) feature; other archs add it unfused")
    for kind in ("int8", "fp8"):
        for cfg in configs_for(kind):
            if cfg.startswith("sm90_"):
                assert EXT.gemm_config_fuses_lowrank(cfg, IN_DTYPE_NAME[kind]), (kind, cfg)


M_SWEEP = [1, 2, 7, 15, 16, 17, 33, 64, 65, 127, 128, 129, 300]


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("m", M_SWEEP)
def test_gemm_lowrank_m_sweep(kind, m):
    skip_missing(kind, GEMM_OP[kind])
    for cfg in configs_for(kind) + [None]:
        check_gemm_lowrank(kind, m, 320, 256, 32, cfg, seed=m)


REAL = sorted({(s.M, s.K, s.N) for s in load_shapes()})


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("m,k,n", REAL, ids=[f"{m}x{k}x{n}" for m, k, n in REAL])
def test_gemm_lowrank_real_shapes(kind, m, k, n):
    skip_missing(kind, GEMM_OP[kind])
    check_gemm_lowrank(kind, m, n, k, 32)


def test_quantize_then_gemm_pipeline():
    """The two fused kernels together, as QLinear runs them, against the reference pipeline."""
    for kind in ("int8", "fp8"):
        skip_missing(kind, QUANT_OP[kind], GEMM_OP[kind])
        m, k, n, r = 300, 1024, 640, 32
        x = activations(m, k, torch.bfloat16, 11)
        s = (torch.rand(k, device=DEV) + 0.5).bfloat16()
        down = (torch.randn(r, k, device=DEV) / 30).bfloat16()
        up = (torch.randn(n, r, device=DEV) / 6).bfloat16()
        wq, ws, _ = getattr(ref, QUANT_OP[kind])(torch.randn(n, k, device=DEV), None, None)
        q, sc, low = getattr(torch.ops.qengine, QUANT_OP[kind])(x, s, down)
        y = getattr(torch.ops.qengine, GEMM_OP[kind])(q, sc, wq, ws, None, low, up, torch.bfloat16)
        rq, rsc, rlow = getattr(ref, QUANT_OP[kind])(x.cpu(), s.cpu(), down.cpu())
        ry = getattr(ref, GEMM_OP[kind])(rq, rsc, wq.cpu(), ws.cpu(), None, rlow, up.cpu(), torch.float32)
        assert sqnr_db(y.float().cpu(), ry) >= 40


# ---------------------------------------------------------------- registration


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_opcheck_lowrank(kind):
    skip_missing(kind, QUANT_OP[kind], GEMM_OP[kind])
    x = activations(33, 256, torch.bfloat16, 0)
    torch.library.opcheck(getattr(torch.ops.qengine, QUANT_OP[kind]).default,
                          (x, (torch.rand(256, device=DEV) + 0.5).bfloat16(), torch.randn(32, 256, device=DEV).bfloat16()))
    a, a_scale, w, w_scale, bias, low, up = gemm_operands(kind, 33, 64, 256, 32)
    # test_schema runs arithmetic on the inputs, which torch cannot do on CUDA float8 tensors.
    utils = (("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic") if kind == "fp8"
             else torch.library._OPCHECK_DEFAULT_UTILS)
    torch.library.opcheck(getattr(torch.ops.qengine, GEMM_OP[kind]).default,
                          (a, a_scale, w, w_scale, bias, low, up, torch.bfloat16), test_utils=utils)


def pipeline(kind, x, s, down, wq, ws, up):
    q, sc, low = getattr(torch.ops.qengine, QUANT_OP[kind])(x, s, down)
    return getattr(torch.ops.qengine, GEMM_OP[kind])(q, sc, wq, ws, None, low, up, torch.bfloat16)


def pipeline_operands(kind, m=77, k=512, n=768, r=32):
    torch.manual_seed(0)
    x = torch.randn(m, k, device=DEV).bfloat16()
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16()
    down = (torch.randn(r, k, device=DEV) / 20).bfloat16()
    up = (torch.randn(n, r, device=DEV) / 6).bfloat16()
    wq, ws, _ = getattr(torch.ops.qengine, QUANT_OP[kind])(torch.randn(n, k, device=DEV).bfloat16(), None, None)
    return x, s, down, wq, ws, up


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_cuda_graph_lowrank(kind):
    skip_missing(kind, QUANT_OP[kind], GEMM_OP[kind])
    x, s, down, wq, ws, up = pipeline_operands(kind)

    def make_x(seed):
        torch.manual_seed(seed + 1)
        return torch.randn_like(x)
    assert_replays_equal_eager(lambda x_: pipeline(kind, x_, s, down, wq, ws, up), x, make_x)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_torch_compile_lowrank(kind):
    skip_missing(kind, QUANT_OP[kind], GEMM_OP[kind])
    x, s, down, wq, ws, up = pipeline_operands(kind)
    compiled = torch.compile(lambda x_: pipeline(kind, x_, s, down, wq, ws, up), fullgraph=True)
    assert torch.equal(compiled(x), pipeline(kind, x, s, down, wq, ws, up))


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_lowrank_bad_inputs(kind):
    skip_missing(kind, QUANT_OP[kind], GEMM_OP[kind])
    a, a_scale, w, w_scale, bias, low, up = gemm_operands(kind, 8, 64, 64, 16)
    gemm = getattr(torch.ops.qengine, GEMM_OP[kind])
    with pytest.raises(ValueError, match="lora_up"):
        gemm(a, a_scale, w, w_scale, bias, low, up[:, :8].contiguous(), torch.bfloat16)
    with pytest.raises(ValueError, match="lowrank_act"):
        gemm(a, a_scale, w, w_scale, bias, low[:7].contiguous(), up, torch.bfloat16)
    with pytest.raises(ValueError, match="lowrank_act"):
        gemm(a, a_scale, w, w_scale, bias, low.bfloat16(), up, torch.bfloat16)
    with pytest.raises(ValueError, match="lora_down"):
        getattr(torch.ops.qengine, QUANT_OP[kind])(activations(8, 64, torch.bfloat16, 0), None,
                                                    torch.randn(16, 32, device=DEV).bfloat16())
