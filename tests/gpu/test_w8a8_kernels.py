"""GPU tests of the W8A8 CUDA kernels (qengine._C): activation quantization and FP8/INT8 GEMMs.

Skipped, with the reason, where there is no CUDA GPU or qengine._C lacks the kernel.
Quantization is checked bit for bit against the reference; GEMMs against the reference on the
same quantized operands (SQNR >= 40 dB, outputs NaN-poisoned first, every tile config forced
plus the heuristic, an M sweep, the smallest K/N and every real shape of benchmarks/shapes.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

from gpu_helpers import (assert_replays_equal_eager, outlier_activations, poison_allocator,  # noqa: E402
                         require_extension, sqnr_db)

EXT = require_extension()

import qengine  # noqa: E402
from qengine.config import LayerQuantConfig  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from shapes import load_shapes  # noqa: E402

DEV = torch.device("cuda")
QDTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
GEMM_OP = {"int8": "w8a8_int8_gemm", "fp8": "w8a8_fp8_gemm"}
QUANT_OP = {"int8": "quantize_act_int8", "fp8": "quantize_act_fp8"}


def need(op: str):
    return pytest.mark.skipif(op in MISSING_CUDA_KERNELS, reason=f"qengine._C has no CUDA kernel for {op}")


def configs_for(kind: str) -> list[str]:
    name = "int8" if kind == "int8" else "float8_e4m3fn"
    return [c for c in EXT.gemm_configs() if EXT.gemm_config_available(c, name, DEV.index or 0)]


def activations(m: int, k: int, dtype=torch.bfloat16, seed=0) -> torch.Tensor:
    # Per-row magnitudes over 6 decades, a few outlier channels, and a zero row (scale = 1).
    return outlier_activations(m, k, dtype, seed, decades=3)


def quantized_operands(kind: str, m: int, n: int, k: int, seed=0, out_dtype=torch.bfloat16):
    g = torch.Generator(device=DEV).manual_seed(seed)
    if kind == "int8":
        a = torch.randint(-127, 128, (m, k), device=DEV, generator=g, dtype=torch.int8)
        w = torch.randint(-127, 128, (n, k), device=DEV, generator=g, dtype=torch.int8)
    else:
        a = (torch.randn(m, k, device=DEV, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
        w = (torch.randn(n, k, device=DEV, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    a_scale = torch.rand(m, device=DEV, generator=g) * 1e-2 + 1e-4
    w_scale = torch.rand(n, device=DEV, generator=g) * 1e-2 + 1e-4
    bias = torch.randn(n, device=DEV, generator=g).to(out_dtype)
    return a, a_scale, w, w_scale, bias


def reference_gemm(kind, a, a_scale, w, w_scale, bias, out_dtype):
    return getattr(ref, GEMM_OP[kind])(a, a_scale, w, w_scale, bias, None, None, torch.float32).to(out_dtype)


# ---------------------------------------------------------------- build info


def test_build_info():
    info = EXT.build_info()
    assert info["archs"] and all(a.startswith("sm_") for a in info["archs"])
    assert qengine.compiled_archs() == info["archs"]
    assert "CUDA kernels" in qengine.backend_description(DEV)


# ---------------------------------------------------------------- activation quantization

QUANT_SHAPES = [(1, 16), (3, 320), (77, 768), (130, 1280), (64, 3072), (33, 4096), (9, 12288), (5, 15360),
                (4, 20480), (2, 40960)]  # the last two exceed the register capacity (re-read path)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("smooth", [None, "same", "fp32", "other16"])
@pytest.mark.parametrize("m,k", QUANT_SHAPES)
def test_quantize_bit_exact(kind, dtype, smooth, m, k):
    op = QUANT_OP[kind]
    if op in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {op}")
    x = activations(m, k, dtype, seed=m + k)
    s = None
    if smooth is not None:
        s = torch.rand(k, device=DEV) * 4 + 0.25
        s = s.to({"same": dtype, "fp32": torch.float32,
                  "other16": torch.float16 if dtype == torch.bfloat16 else torch.bfloat16}[smooth])
    q, scale, lowrank = getattr(torch.ops.qengine, op)(x, s, None)
    rq, rscale, _ = getattr(ref, op)(x.cpu(), None if s is None else s.cpu(), None)
    torch.cuda.synchronize()
    assert q.dtype == QDTYPES[kind] and q.shape == (m, k) and scale.shape == (m,) and lowrank.shape == (m, 0)
    assert torch.equal(scale.cpu(), rscale), "scales differ"
    mismatch = (q.cpu().view(torch.uint8) != rq.view(torch.uint8)).sum().item()
    assert mismatch == 0, f"{mismatch} quantized values differ from the reference"


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_edge_rows(kind, dtype):
    """Exact rounding ties (the kernel's exact-division fallback), subnormal scales, zero rows."""
    op = QUANT_OP[kind]
    if op in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {op}")
    k = 256
    qmax = 127.0 if kind == "int8" else 448.0
    rows = []
    # scale = 1 exactly: halfway values round half to even (INT8: n + 0.5; E4M3: midpoints).
    halves = torch.arange(-126, 126, dtype=torch.float32) + 0.5 if kind == "int8" else torch.tensor(
        [1.0625, 1.1875, 2.125, 2.375, 9.0, 11.0, 104.0, 120.0, 432.0, 0.0087890625, 0.0009765625])
    r = halves.repeat(k // len(halves) + 1)[:k].clone()
    r[0] = qmax
    rows.append(r)
    rows.append(-r)
    # scale = 2: the same ties one binade up.
    rows.append(r * 2)
    # Tiny rows: absmax 1e-37 gives a subnormal scale (the exact-division path); 1e-30 a normal one.
    g = torch.Generator().manual_seed(0)
    rows.append(torch.randn(k, generator=g) * 1e-37)
    rows.append(torch.randn(k, generator=g) * 1e-30)
    rows.append(torch.zeros(k))
    # Random rows with many values exactly on multiples of scale / 2.
    base = torch.randint(-254, 255, (k,), generator=g).float() / 2
    base[0] = 127.0
    rows.append(base * 0.37109375)
    # The kernel's exact division without a divide (scale within [2^-64, 2^64]): values within 3
    # ulps of (n + 0.5) * s for a scale that is no power of two, and signed zeros (the E4M3 byte of
    # -0 is 0x80). Then a row whose scale exceeds 2^64 (the IEEE-division path).
    s = 0.7310585
    t = (torch.randint(-127, 127, (k,), generator=g).float() + 0.5) * s
    t = (t.view(torch.int32) + torch.randint(-3, 4, (k,), generator=g, dtype=torch.int32)).view(torch.float32)
    t[0], t[1], t[2] = 127 * s, -0.0, 0.0
    rows.append(t)
    rows.append(torch.randn(k, generator=g) * 1e30)
    x = torch.stack(rows).to(dtype).to(DEV)  # bf16 rounding is fine: the reference sees the same x
    q, scale, _ = getattr(torch.ops.qengine, op)(x, None, None)
    rq, rscale, _ = getattr(ref, op)(x.cpu(), None, None)
    assert torch.equal(scale.cpu(), rscale)
    assert torch.equal(q.cpu().view(torch.uint8), rq.view(torch.uint8))


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantize_lowrank_and_offset_view(kind):
    op = QUANT_OP[kind]
    if op in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {op}")
    x = activations(40, 512, seed=3)
    s = (torch.rand(512, device=DEV) + 0.5).bfloat16()
    down = torch.randn(16, 512, device=DEV).bfloat16()
    q, scale, lowrank = getattr(torch.ops.qengine, op)(x, s, down)
    # The reference runs on the CPU: on CUDA, torch divides by a Python scalar as a multiplication
    # by its reciprocal, which is not the IEEE division the format specifies.
    rq, rscale, rlow = getattr(ref, op)(x.cpu(), s.cpu(), down.cpu())
    assert torch.equal(q.cpu().view(torch.uint8), rq.view(torch.uint8)) and torch.equal(scale.cpu(), rscale)
    assert sqnr_db(lowrank.cpu(), rlow) > 60
    # A contiguous view at a 2-byte offset: the binding copies it to an aligned buffer.
    big = activations(41, 512, seed=4)
    view = big.view(-1)[8: 8 + 40 * 512].view(40, 512)
    q2, s2, _ = getattr(torch.ops.qengine, op)(view, None, None)
    rq2, rs2, _ = getattr(ref, op)(view.cpu(), None, None)
    assert torch.equal(q2.cpu().view(torch.uint8), rq2.view(torch.uint8)) and torch.equal(s2.cpu(), rs2)


# ---------------------------------------------------------------- GEMMs

M_SWEEP = [1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 128, 129, 300]


def check_gemm(kind, m, n, k, config=None, out_dtype=torch.bfloat16, with_bias=True, seed=0):
    a, a_scale, w, w_scale, bias = quantized_operands(kind, m, n, k, seed=seed, out_dtype=out_dtype)
    bias = bias if with_bias else None
    poison_allocator(m * n * 2)
    if config is None:
        out = getattr(torch.ops.qengine, GEMM_OP[kind])(a, a_scale, w, w_scale, bias, None, None, out_dtype)
    else:
        out = EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, bias, str(out_dtype).removeprefix("torch."), config)
    expect = reference_gemm(kind, a, a_scale, w, w_scale, bias, out_dtype)
    assert out.shape == (m, n) and out.dtype == out_dtype
    assert torch.isfinite(out).all(), f"non-finite outputs (unwritten?) for M={m} N={n} K={k} config={config}"
    db = sqnr_db(out.float(), expect.float())
    assert db >= 40, f"SQNR {db:.1f} dB for M={m} N={n} K={k} config={config}"


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("m", M_SWEEP)
def test_gemm_m_sweep_every_config(kind, m):
    if GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {GEMM_OP[kind]}")
    cfgs = configs_for(kind)
    assert cfgs, "no tile config runs on this GPU"
    for cfg in cfgs + [None]:
        check_gemm(kind, m, 320, 256, cfg, seed=m)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k", [(8, 16), (16, 32), (24, 48), (136, 16), (8, 1040)])
def test_gemm_smallest_k_n(kind, out_dtype, n, k):
    if GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {GEMM_OP[kind]}")
    for cfg in configs_for(kind) + [None]:
        for m in (1, 5, 130):
            check_gemm(kind, m, n, k, cfg, out_dtype=out_dtype, with_bias=(m != 5))


REAL = sorted({(s.M, s.K, s.N) for s in load_shapes()})


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("m,k,n", REAL, ids=[f"{m}x{k}x{n}" for m, k, n in REAL])
def test_gemm_real_shapes(kind, m, k, n):
    if GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {GEMM_OP[kind]}")
    for cfg in configs_for(kind) + [None]:
        check_gemm(kind, m, n, k, cfg)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_gemm_lowrank_small(kind):
    if GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {GEMM_OP[kind]}")
    m, n, k, r = 70, 264, 512, 16
    a, a_scale, w, w_scale, bias = quantized_operands(kind, m, n, k)
    low = torch.randn(m, r, device=DEV)
    up = torch.randn(n, r, device=DEV).bfloat16()
    out = getattr(torch.ops.qengine, GEMM_OP[kind])(a, a_scale, w, w_scale, bias, low, up, torch.bfloat16)
    expect = getattr(ref, GEMM_OP[kind])(a, a_scale, w, w_scale, bias, low, up, torch.float32)
    assert sqnr_db(out.float(), expect) >= 40


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_gemm_every_tile_order_gives_the_same_output(kind):
    """The persistent tile order (raster, swizzle) only reorders whole tiles: bit-identical output,
    on a grid of several waves (1000 x 1304 at 128x128 tiles: 8 x 11) with partial edge tiles."""
    if GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip(f"no CUDA kernel for {GEMM_OP[kind]}")
    a, a_scale, w, w_scale, bias = quantized_operands(kind, 1000, 1304, 512, seed=9)
    for cfg in [c for c in configs_for(kind) if c.startswith("sm90_")]:
        base = EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, bias, "bfloat16", cfg)
        for raster in ("auto", "m", "n"):
            for swizzle in (1, 2, 4, 8):
                out = EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, bias, "bfloat16", cfg, raster=raster,
                                                swizzle=swizzle)
                assert torch.equal(out, base), f"{cfg} raster={raster} swizzle={swizzle}"
    with pytest.raises(ValueError, match="swizzle must be 1, 2, 4 or 8"):
        EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, bias, "bfloat16", configs_for(kind)[0], swizzle=3)
    with pytest.raises(ValueError, match="raster must be"):
        EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, bias, "bfloat16", configs_for(kind)[0], raster="k")


def test_heuristic_names():
    for kind, name in (("int8", "int8"), ("fp8", "float8_e4m3fn")):
        for m, n, k in ((1, 3072, 3072), (512, 3072, 3072), (4096, 3072, 3072), (4608, 12288, 3072)):
            assert EXT.gemm_heuristic(m, n, k, name) in EXT.gemm_configs()
    if DEV.type == "cuda" and torch.cuda.get_device_capability(DEV) == (9, 0):
        # 64x160 tiles where 128x128 ones fill 61% of one wave and K is deep (SDXL M=1024, N=1280,
        # K=5120; args are m, n, k), not at short K nor where the 128x128 waves are full
        assert EXT.gemm_heuristic(1024, 1280, 5120, "float8_e4m3fn") == "sm90_64x160x128_pingpong_c1x1"
        assert EXT.gemm_heuristic(4096, 640, 2560, "int8") == "sm90_64x160x128_pingpong_c1x1"
        for m, n, k in ((4096, 3072, 3072), (1024, 3840, 1280), (1024, 10240, 1280), (1024, 1280, 1280)):
            assert "64x160" not in EXT.gemm_heuristic(m, n, k, "float8_e4m3fn")


# ---------------------------------------------------------------- registration: opcheck, graphs, compile


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_opcheck(kind):
    if QUANT_OP[kind] in MISSING_CUDA_KERNELS or GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    x = activations(33, 256)
    torch.library.opcheck(getattr(torch.ops.qengine, QUANT_OP[kind]).default, (x, None, None))
    torch.library.opcheck(getattr(torch.ops.qengine, QUANT_OP[kind]).default,
                          (x, (torch.rand(256, device=DEV) + 0.5).bfloat16(), torch.randn(8, 256, device=DEV).bfloat16()))
    a, a_scale, w, w_scale, bias = quantized_operands(kind, 33, 64, 256)
    # test_schema's aliasing check runs arithmetic on the inputs, which torch has no CUDA kernel
    # for on float8 tensors ("mul_cuda not implemented for Float8_e4m3fn"): skip it for FP8 inputs.
    utils = (("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic") if kind == "fp8"
             else torch.library._OPCHECK_DEFAULT_UTILS)
    torch.library.opcheck(getattr(torch.ops.qengine, GEMM_OP[kind]).default,
                          (a, a_scale, w, w_scale, bias, None, None, torch.bfloat16), test_utils=utils)
    torch.library.opcheck(getattr(torch.ops.qengine, GEMM_OP[kind]).default,
                          (a, a_scale, w, w_scale, None, torch.randn(33, 4, device=DEV),
                           torch.randn(64, 4, device=DEV).bfloat16(), torch.float16), test_utils=utils)


def make_qlinear(scheme: str, k=512, n=768, rank=0, smooth=False, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=True).to(DEV, torch.bfloat16)
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16() if smooth else None
    return QLinear.from_float(lin, LayerQuantConfig(scheme, rank=rank), smooth=s)


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_qlinear_matches_reference_backend(scheme):
    kind = "int8" if scheme.endswith("int8") else "fp8"
    if QUANT_OP[kind] in MISSING_CUDA_KERNELS or GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    q = make_qlinear(scheme, rank=16, smooth=True)
    x = torch.randn(3, 50, 512, device=DEV).bfloat16()
    y = q(x)
    q.backend = "reference"
    y_ref = q(x)
    assert y.shape == (3, 50, 768) and sqnr_db(y.float(), y_ref.float()) >= 40


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_cuda_graph_capture_replay(scheme):
    kind = "int8" if scheme.endswith("int8") else "fp8"
    if QUANT_OP[kind] in MISSING_CUDA_KERNELS or GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    q = make_qlinear(scheme, smooth=True)
    static_x = torch.randn(77, 512, device=DEV).bfloat16()

    def make_x(seed):
        torch.manual_seed(seed)
        return torch.randn(77, 512, device=DEV).bfloat16()
    assert_replays_equal_eager(q, static_x, make_x)


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_torch_compile_fullgraph(scheme):
    kind = "int8" if scheme.endswith("int8") else "fp8"
    if QUANT_OP[kind] in MISSING_CUDA_KERNELS or GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    q = make_qlinear(scheme, rank=16, smooth=True)
    compiled = torch.compile(q, fullgraph=True)
    x = torch.randn(2, 64, 512, device=DEV).bfloat16()
    assert torch.equal(compiled(x), q(x))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_bad_inputs_raise_clear_errors(kind):
    if QUANT_OP[kind] in MISSING_CUDA_KERNELS or GEMM_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    quant = getattr(torch.ops.qengine, QUANT_OP[kind])
    gemm = getattr(torch.ops.qengine, GEMM_OP[kind])
    x = activations(8, 64)
    with pytest.raises(ValueError, match="contiguous"):
        quant(activations(64, 32).t(), None, None)
    with pytest.raises(ValueError, match="dtype"):
        quant(x.to(torch.int32), None, None)
    with pytest.raises(ValueError, match="multiple of 16"):
        quant(activations(8, 40), None, None)
    with pytest.raises(ValueError, match="smooth"):
        quant(x, torch.ones(63, device=DEV).bfloat16(), None)
    with pytest.raises((ValueError, RuntimeError), match="cpu|device"):
        quant(x, torch.ones(64).bfloat16(), None)
    a, a_scale, w, w_scale, bias = quantized_operands(kind, 8, 64, 64)
    with pytest.raises(ValueError, match="a_scale"):
        gemm(a, a_scale[:7], w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="w_scale"):
        gemm(a, a_scale, w, w_scale[:-1].contiguous(), bias, None, None, torch.bfloat16)
    with pytest.raises((ValueError, RuntimeError), match="cpu|device"):
        gemm(a, a_scale.cpu(), w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        gemm(a, a_scale, w.view(torch.uint8), w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="contiguous"):
        gemm(a, a_scale, w.t().contiguous().t(), w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 16"):
        gemm(a[:, :40].contiguous(), a_scale, w[:, :40].contiguous(), w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 8"):
        gemm(a, a_scale, w[:60].contiguous(), w_scale[:60].contiguous(), None, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="out_dtype"):
        gemm(a, a_scale, w, w_scale, None, None, None, torch.float32)
    with pytest.raises(ValueError, match="together"):
        gemm(a, a_scale, w, w_scale, None, torch.randn(8, 4, device=DEV), None, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown W8A8 tile config"):
        EXT.w8a8_gemm_with_config(a, a_scale, w, w_scale, None, "bfloat16", "no_such_config")
