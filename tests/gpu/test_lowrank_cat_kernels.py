"""GPU tests of the FP8 low-rank branch folded into the GEMM's K (qengine.formats.lowrank_cat).

- quantize_act_fp8_lowrank_cat(x, smooth, lora_down, inv_c): q [M, K + W] and the (grown) scale
  are bit-exact with the reference given the kernel's own low-rank product (taken from
  quantize_act_fp8 with the same lora_down, whose tensor-core sums are the same code), with
  outputs NaN-poisoned first (the zero padding must be written too), over shapes, ranks 16..256
  (3- and 4-term layouts), input dtypes and smoothing.
- The whole layer (cat quantize + the plain FP8 GEMM with K + W) against the float32 reference
  of the same path (>= 40 dB) and, with the residual weight zeroed, the branch alone against its
  exact float32 value (>= 45 dB): the e4m3 hi/lo split must carry bf16-like precision.
- QLinear.enable_lowrank_cat on CUDA: CUDA vs reference backend, vs the epilogue path, CUDA graph
  capture, torch.compile, opcheck, and clear errors.

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

from qengine.config import LayerQuantConfig  # noqa: E402
from qengine.formats.lowrank_cat import lowrank_cat_layout, lowrank_cat_weight  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from shapes import load_shapes  # noqa: E402

DEV = torch.device("cuda")
OP = "quantize_act_fp8_lowrank_cat"
if OP in MISSING_CUDA_KERNELS or "w8a8_fp8_gemm" in MISSING_CUDA_KERNELS:
    pytest.skip(f"qengine._C has no CUDA kernel for {OP} / w8a8_fp8_gemm", allow_module_level=True)
Q = torch.ops.qengine


activations = outlier_activations


def layer(m, k, n, rank, dtype=torch.bfloat16, smooth=None, seed=0, branch_gain=1.0):
    """Activations and an FP8 + low-rank layer's buffers. branch_gain scales lora_up: large values
    make max |lr / c| exceed the row absmax, so the token scale grows (both regimes are tested)."""
    g = torch.Generator(device=DEV).manual_seed(seed + 1)
    x = activations(m, k, dtype, seed)
    s = None
    if smooth is not None:
        s = (torch.rand(k, device=DEV, generator=g) * 4 + 0.25).to(dtype if smooth == "same" else torch.float32)
    down = (torch.randn(rank, k, device=DEV, generator=g) / math.sqrt(k)).bfloat16()
    up = (torch.randn(n, rank, device=DEV, generator=g) * branch_gain / math.sqrt(rank)).bfloat16()
    wq, ws, _ = ref.quantize_act_fp8(torch.randn(n, k, device=DEV, generator=g) / math.sqrt(k))
    return x, s, down, up, wq, ws


def check_quantize_cat(m, k, rank, dtype=torch.bfloat16, smooth=None, seed=0, branch_gain=1.0):
    x, s, down, up, wq, ws = layer(m, k, 64, rank, dtype, smooth, seed, branch_gain)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    poison_allocator(m * (k + lowrank_cat_layout(rank)[1]) * 4)
    q, scale = Q.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    where = f"M={m} K={k} rank={rank} x={dtype} smooth={smooth} gain={branch_gain}"
    assert q.shape == (m, k + lowrank_cat_layout(rank)[1]) and q.dtype == torch.float8_e4m3fn, where
    assert scale.shape == (m,), where
    # The kernel's low-rank product: the same tensor-core sums as quantize_act_fp8's lowrank_act.
    low = Q.quantize_act_fp8(x, s, down)[2]
    xf = x.float().cpu() / (s.float().cpu() if s is not None else 1.0)
    rq, rscale = ref.lowrank_cat_quantize(xf, low.cpu(), inv_c.cpu())
    assert torch.equal(scale.cpu(), rscale), f"scales differ ({where})"
    mismatch = (q.cpu().view(torch.uint8) != rq.view(torch.uint8)).sum().item()
    assert mismatch == 0, f"{mismatch} of {q.numel()} bytes differ ({where})"
    grown = (rscale > ref.quantize_act_fp8(xf)[1]).float().mean().item()
    return grown


@pytest.mark.parametrize("rank", [16, 32, 48, 64, 80, 96, 128, 256])
@pytest.mark.parametrize("m,k", [(1, 16), (17, 48), (64, 3072), (33, 4096), (130, 1280), (5, 15360)])
def test_quantize_cat_shapes_and_ranks(rank, m, k):
    check_quantize_cat(m, k, rank, seed=m + k + rank)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("smooth", [None, "same", "fp32"])
def test_quantize_cat_dtypes_and_smoothing(dtype, smooth):
    check_quantize_cat(77, 768, 32, dtype=dtype, smooth=smooth, seed=7)


def test_quantize_cat_both_scale_regimes():
    # A small branch leaves every token scale at absmax / 448; a large one grows most of them.
    assert check_quantize_cat(200, 512, 32, branch_gain=1e-3, seed=3) == 0.0
    assert check_quantize_cat(200, 512, 32, branch_gain=1e3, seed=3) > 0.5


def test_quantize_cat_m_zero():
    _, _, down, up, wq, ws = layer(4, 64, 32, 32)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    q, scale = Q.quantize_act_fp8_lowrank_cat(torch.empty(0, 64, device=DEV, dtype=torch.bfloat16), None, down, inv_c)
    assert q.shape == (0, 64 + 128) and scale.shape == (0,)


# ---------------------------------------------------------------- the product given (row kernel)


def check_quantize_cat_from(m, k, rank, dtype=torch.bfloat16, smooth=None, seed=0, gain=1.0):
    x, s, _, up, wq, ws = layer(m, k, 64, rank, dtype, smooth, seed)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    g = torch.Generator(device=DEV).manual_seed(seed + 2)
    lr = torch.randn(m, rank, device=DEV, generator=g) * gain
    poison_allocator(m * (k + lowrank_cat_layout(rank)[1]) * 4)
    q, scale = Q.quantize_act_fp8_lowrank_cat_from(x, s, lr, inv_c)
    xf = x.float().cpu() / (s.float().cpu() if s is not None else 1.0)
    rq, rscale = ref.lowrank_cat_quantize(xf, lr.cpu(), inv_c.cpu())
    where = f"M={m} K={k} rank={rank} x={dtype} smooth={smooth} gain={gain}"
    assert q.shape == rq.shape and torch.equal(scale.cpu(), rscale), f"scales differ ({where})"
    mismatch = (q.cpu().view(torch.uint8) != rq.view(torch.uint8)).sum().item()
    assert mismatch == 0, f"{mismatch} of {q.numel()} bytes differ ({where})"


@pytest.mark.parametrize("rank", [16, 32, 80, 128, 256])
@pytest.mark.parametrize("m,k", [(1, 16), (17, 48), (40, 512), (64, 3072), (33, 4096), (300, 1280), (5, 15360)])
def test_quantize_cat_from_shapes_and_ranks(rank, m, k):
    # K <= 512 takes the warp-per-row launch, longer rows a block per row (1-8 vectors per thread)
    check_quantize_cat_from(m, k, rank, seed=m + k + rank)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("smooth", [None, "same", "fp32"])
@pytest.mark.parametrize("gain", [1e-4, 1e4])  # the branch below / above the row absmax
def test_quantize_cat_from_dtypes_and_regimes(dtype, smooth, gain):
    check_quantize_cat_from(77, 768, 32, dtype=dtype, smooth=smooth, seed=5, gain=gain)


def test_quantize_cat_from_large_m():
    check_quantize_cat_from(4608, 3072, 32, seed=9)  # two GPU-fulls: 8 vectors per thread


def test_opcheck_cat_from():
    x, s, _, up, wq, ws = layer(33, 256, 64, 32, smooth="same")
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    torch.library.opcheck(Q.quantize_act_fp8_lowrank_cat_from.default, (x, s, torch.randn(33, 32, device=DEV), inv_c))


def test_qlinear_matmul_down_projection_cuda(monkeypatch):
    lin, q = qlinear()
    q.enable_lowrank_cat()
    monkeypatch.setattr(QLinear, "lowrank_cat_down", "matmul")
    x = torch.randn(2, 77, 512, device=DEV).bfloat16()
    y = q(x).float()
    q.backend = "reference"
    assert sqnr_db(y, q(x).float()) >= 40
    q.backend = "auto"
    compiled = torch.compile(q, fullgraph=True)
    assert torch.equal(compiled(x), q(x))


# ---------------------------------------------------------------- the layer: cat quantize + FP8 GEMM (K + W)


def cat_layer_output(x, s, down, up, wq, ws, bias=None):
    w_cat, inv_c = lowrank_cat_weight(wq, ws, up)
    q, scale = Q.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    return Q.w8a8_fp8_gemm(q, scale, w_cat, ws, bias, None, None, torch.bfloat16)


def check_layer(m, k, n, rank, seed=0, zero_residual=False, min_db=40.0):
    x, s, down, up, wq, ws = layer(m, k, n, rank, smooth="same", seed=seed)
    if zero_residual:
        wq = torch.zeros_like(wq)
    bias = torch.randn(n, device=DEV).bfloat16() * 0.01
    poison_allocator(m * n * 4)
    y = cat_layer_output(x, s, down, up, wq, ws, bias).float()
    assert torch.isfinite(y).all(), "non-finite outputs (unwritten?)"
    # The float32 reference, run on the GPU (fast at the real shapes).
    w_cat, inv_c = lowrank_cat_weight(wq, ws, up)
    rq, rsc = ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    expect = ref.w8a8_fp8_gemm(rq, rsc, w_cat, ws, bias, None, None, torch.float32)
    where = f"M={m} K={k} N={n} rank={rank}"
    db = sqnr_db(y, expect)
    assert db >= min_db, f"SQNR {db:.1f} dB vs the reference of the same path ({where})"
    if zero_residual:  # the branch alone vs its exact float32 value
        exact = (x.float() / s.float()) @ down.float().t() @ up.float().t() + bias.float()
        db = sqnr_db(y, exact)
        assert db >= 45.0, f"branch alone: SQNR {db:.1f} dB vs exact float32 ({where})"
    return db


@pytest.mark.parametrize("rank", [16, 32, 64, 128, 256])
def test_layer_ranks(rank):
    for m, n, k in ((130, 264, 512), (257, 1024, 1024)):
        check_layer(m, k, n, rank, seed=rank + m)


@pytest.mark.parametrize("rank", [16, 32, 128])
def test_branch_alone_precision(rank):
    check_layer(200, 512, 392, rank, zero_residual=True, seed=rank)


@pytest.mark.parametrize("m", [1, 2, 7, 16, 17, 64, 65, 128, 129, 300])
def test_layer_m_sweep(m):
    check_layer(m, 256, 320, 32, seed=m)


REAL = sorted({(s.M, s.K, s.N) for s in load_shapes() if s.K % 16 == 0 and s.N % 16 == 0})


@pytest.mark.parametrize("m,k,n", REAL, ids=[f"{m}x{k}x{n}" for m, k, n in REAL])
def test_layer_real_shapes(m, k, n):
    check_layer(m, k, n, 32)


# ---------------------------------------------------------------- QLinear


def qlinear(k=512, n=768, rank=32, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, device=DEV).bfloat16()
    q = QLinear.from_float(lin, LayerQuantConfig(scheme="w8a8-fp8", rank=rank),
                           smooth=(torch.rand(k, device=DEV) + 0.5).bfloat16())
    return lin, q


def test_qlinear_cat_matches_reference_and_epilogue_path():
    lin, q = qlinear()
    x = torch.randn(3, 77, 512, device=DEV).bfloat16()
    exact = lin(x).float()
    y_epi = q(x).float()
    assert q.enable_lowrank_cat() and q.lowrank_cat
    y_cat = q(x).float()
    q.backend = "reference"
    y_ref = q(x).float()
    assert sqnr_db(y_cat, y_ref) >= 40
    # Same layer, two roundings of the branch: both are as close to the float layer.
    assert sqnr_db(y_cat, exact) >= sqnr_db(y_epi, exact) - 1.0


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
def test_cuda_graph_cat():
    _, q = qlinear()
    q.enable_lowrank_cat()
    x = torch.randn(77, 512, device=DEV).bfloat16()

    def make_x(seed):
        torch.manual_seed(seed + 1)
        return torch.randn_like(x)
    assert_replays_equal_eager(q, x, make_x)


def test_torch_compile_cat():
    _, q = qlinear()
    q.enable_lowrank_cat()
    x = torch.randn(77, 512, device=DEV).bfloat16()
    compiled = torch.compile(q, fullgraph=True)
    assert torch.equal(compiled(x), q(x))


def test_opcheck_cat():
    x, s, down, up, wq, ws = layer(33, 256, 64, 32, smooth="same")
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    torch.library.opcheck(Q.quantize_act_fp8_lowrank_cat.default, (x, s, down, inv_c))


def test_cat_bad_inputs():
    x, s, down, up, wq, ws = layer(8, 64, 64, 32)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    with pytest.raises(ValueError, match="rank"):
        Q.quantize_act_fp8_lowrank_cat(x, s, down[:8].contiguous(), inv_c[:8].contiguous())
    with pytest.raises(ValueError, match="rank"):
        Q.quantize_act_fp8_lowrank_cat(x, s, torch.randn(272, 64, device=DEV).bfloat16(),
                                       torch.ones(272, device=DEV))
    with pytest.raises(ValueError, match="inv_c"):
        Q.quantize_act_fp8_lowrank_cat(x, s, down, inv_c[:16].contiguous())
    with pytest.raises(ValueError, match="inv_c"):
        Q.quantize_act_fp8_lowrank_cat(x, s, down, inv_c.bfloat16())
    with pytest.raises(ValueError, match="K=40"):
        Q.quantize_act_fp8_lowrank_cat(torch.randn(8, 40, device=DEV).bfloat16(), None,
                                       torch.randn(32, 40, device=DEV).bfloat16(), inv_c)
