"""GPU tests of the W4A4 CUDA kernels (qengine._C): quantize_act_int4 and w4a4_gemm.

Skipped, with the reason, where there is no CUDA GPU or qengine._C is not built. The mma.sync s4
kernels are built for every arch and run (slowly: INT4 mma is emulated) on Hopper, so the suite
exercises them there. Quantization is checked bit for bit against the CPU reference; the GEMM
against the reference on the SAME quantized operands (SQNR >= 40 dB in bf16, >= 80 dB with fp32
outputs), outputs NaN-poisoned first, every tile config forced plus the heuristic, an M sweep,
odd N, every real shape of benchmarks/shapes.py and the fused low-rank branch at several ranks.

Set W4A4_SQNR_LOG=path to append every measured SQNR (for the notes).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

from gpu_helpers import assert_replays_equal_eager, poison_allocator, require_extension, sqnr_db  # noqa: E402

EXT = require_extension()

from qengine.config import LayerQuantConfig  # noqa: E402
from qengine.formats import pack_int4  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from shapes import load_shapes  # noqa: E402

DEV = torch.device("cuda")
SQNR_LOG = os.environ.get("W4A4_SQNR_LOG")
OPS = ("quantize_act_int4", "w4a4_gemm")


def need_kernels():
    missing = [op for op in OPS if op in MISSING_CUDA_KERNELS]
    if missing:
        pytest.skip(f"qengine._C has no CUDA kernel for {', '.join(missing)}")


@pytest.fixture(autouse=True)
def exact_fp32_matmul():
    """The GPU reference GEMM must be a true fp32 matmul (no TF32)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def log_sqnr(tag: str, db: float) -> None:
    if SQNR_LOG:
        with open(SQNR_LOG, "a") as f:
            f.write(f"{tag}\t{db:.2f}\n")


def configs() -> list[str]:
    return list(EXT.w4a4_gemm_configs())


def activations(m: int, k: int, dtype=torch.bfloat16, seed=0) -> torch.Tensor:
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(m, k, device=DEV, generator=g)
    # Row magnitudes over 6 decades, outlier channels, a zero row and a zero group.
    x = x * torch.logspace(-3, 3, m, device=DEV)[torch.randperm(m, device=DEV, generator=g)][:, None]
    x[:, :: max(k // 7, 1)] *= 20
    if m > 2:
        x[1] = 0
        x[2, :64] = 0
    return x.to(dtype)


def operands(m, n, k, seed=0, out_dtype=torch.bfloat16):
    """Packed INT4 operands over the full nibble range [-8, 7] and group-64 scales."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    qa = torch.randint(-8, 8, (m, k), device=DEV, generator=g, dtype=torch.int8)
    qw = torch.randint(-8, 8, (n, k), device=DEV, generator=g, dtype=torch.int8)
    a_scale = torch.rand(m, k // 64, device=DEV, generator=g) * 0.1 + 1e-3
    w_scale = torch.rand(n, k // 64, device=DEV, generator=g) * 0.1 + 1e-3
    bias = torch.randn(n, device=DEV, generator=g).to(out_dtype)
    return pack_int4(qa), a_scale, pack_int4(qw), w_scale, bias


def run_gemm(config, a, a_scale, w, w_scale, bias, low, up, out_dtype):
    if config is None:
        return torch.ops.qengine.w4a4_gemm(a, a_scale, w, w_scale, bias, low, up, out_dtype)
    return EXT.w4a4_gemm_with_config(a, a_scale, w, w_scale, bias, low, up, str(out_dtype).removeprefix("torch."),
                                     config)


def check_gemm(m, n, k, config=None, out_dtype=torch.bfloat16, with_bias=True, low=None, up=None, seed=0,
               a_scale_factor=1.0, tag="gemm"):
    a, a_scale, w, w_scale, bias = operands(m, n, k, seed=seed, out_dtype=out_dtype)
    a_scale = a_scale * a_scale_factor
    bias = bias if with_bias else None
    poison_allocator(m * n * 4)
    out = run_gemm(config, a, a_scale, w, w_scale, bias, low, up, out_dtype)
    expect = ref.w4a4_gemm(a, a_scale, w, w_scale, bias, low, up, torch.float32)
    assert out.shape == (m, n) and out.dtype == out_dtype
    assert torch.isfinite(out).all(), f"non-finite outputs (unwritten?) for M={m} N={n} K={k} config={config}"
    db = sqnr_db(out.float(), expect)
    log_sqnr(f"{tag} M={m} N={n} K={k} {config} {out_dtype}", db)
    floor = 80 if out_dtype == torch.float32 else 40
    assert db >= floor, f"SQNR {db:.1f} dB < {floor} for M={m} N={n} K={k} config={config} out={out_dtype}"
    return db


# ---------------------------------------------------------------- build


def test_w4a4_kernels_registered_and_named():
    """On any sm_80+ GPU (Hopper included) a CUDA build must hold the W4A4 kernels."""
    assert torch.cuda.get_device_capability(DEV) >= (8, 0)
    assert not [op for op in OPS if op in MISSING_CUDA_KERNELS], "W4A4 kernels missing from qengine._C"
    names = configs()
    assert len(names) == 3 and len(set(names)) == 3
    for m, n, k in ((1, 3072, 3072), (77, 640, 768), (512, 3072, 3072), (4608, 12288, 3072)):
        assert EXT.w4a4_gemm_heuristic(m, n, k) in names


# ---------------------------------------------------------------- quantize_act_int4

QUANT_SHAPES = [(1, 64), (3, 320), (77, 768), (130, 1280), (33, 3072), (9, 12288), (2, 15360)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("smooth", [None, "same", "fp32", "other16"])
@pytest.mark.parametrize("m,k", QUANT_SHAPES)
def test_quantize_bit_exact(dtype, smooth, m, k):
    need_kernels()
    x = activations(m, k, dtype, seed=m + k)
    s = None
    if smooth is not None:
        s = torch.rand(k, device=DEV) * 4 + 0.25
        s = s.to({"same": dtype, "fp32": torch.float32,
                  "other16": torch.float16 if dtype == torch.bfloat16 else torch.bfloat16}[smooth])
    q, scale, lowrank = torch.ops.qengine.quantize_act_int4(x, s, None)
    # The reference runs on the CPU: it is the spec's IEEE arithmetic there.
    rq, rscale, _ = ref.quantize_act_int4(x.cpu(), None if s is None else s.cpu(), None)
    assert q.dtype == torch.uint8 and q.shape == (m, k // 2)
    assert scale.dtype == torch.float32 and scale.shape == (m, k // 64) and lowrank.shape == (m, 0)
    assert torch.equal(scale.cpu(), rscale), "scales differ"
    mismatch = (q.cpu() != rq).sum().item()
    assert mismatch == 0, f"{mismatch} packed bytes differ from the reference"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_edge_groups(dtype):
    """Exact ties (half to even), near ties, subnormal and huge scales, zero groups, signed zeros."""
    need_kernels()
    k = 256
    g = torch.Generator().manual_seed(0)
    halves = torch.arange(-6, 7, dtype=torch.float32) + 0.5  # -5.5 .. 6.5
    tie_group = torch.cat([torch.tensor([7.0]), halves.repeat(5)[:63]])
    rows = [
        tie_group.repeat(4),                      # scale 1: every value a tie
        -tie_group.repeat(4),
        tie_group.repeat(4) * 2,                  # scale 2
        torch.cat([torch.zeros(64), tie_group, torch.zeros(64), -tie_group]),  # zero groups: scale 1
        torch.randn(k, generator=g) * 1e-38,      # subnormal scales
        torch.randn(k, generator=g) * 1e-30,
        torch.randn(k, generator=g) * 1e30,
    ]
    s = 0.7310585
    t = (torch.randint(-7, 7, (k,), generator=g).float() + 0.5) * s
    t = (t.view(torch.int32) + torch.randint(-3, 4, (k,), generator=g, dtype=torch.int32)).view(torch.float32)
    t[::64] = 7 * s
    t[1], t[2] = -0.0, 0.0
    rows.append(t)
    x = torch.stack(rows).to(dtype).to(DEV)
    q, scale, _ = torch.ops.qengine.quantize_act_int4(x, None, None)
    rq, rscale, _ = ref.quantize_act_int4(x.cpu(), None, None)
    assert torch.equal(scale.cpu(), rscale)
    assert torch.equal(q.cpu(), rq)


@pytest.mark.parametrize("rank", [16, 32, 64, 128, 256, 24, 300])
def test_quantize_fused_lowrank(rank):
    """lowrank_act = (x / smooth) @ lora_down^T from the same pass (rank 300: the matmul fallback)."""
    need_kernels()
    m, k = 40, 512  # two row blocks, the second partial
    x = activations(m, k, seed=rank)
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16()
    down = (torch.randn(rank, k, device=DEV) * 0.05).to(torch.float32 if rank % 32 else torch.bfloat16)
    q, scale, lowrank = torch.ops.qengine.quantize_act_int4(x, s, down)
    rq, rscale, rlow = ref.quantize_act_int4(x.cpu(), s.cpu(), down.cpu())
    assert torch.equal(q.cpu(), rq) and torch.equal(scale.cpu(), rscale)
    assert lowrank.shape == (m, rank) and lowrank.dtype == torch.float32
    db = sqnr_db(lowrank.cpu(), rlow)
    log_sqnr(f"quantize lowrank rank={rank}", db)
    assert db >= 80, f"lowrank_act SQNR {db:.1f} dB"
    # Without smoothing, on a view at an odd offset.
    big = activations(m + 1, k, seed=5)
    view = big.view(-1)[3: 3 + m * k].view(m, k)
    q2, s2, l2 = torch.ops.qengine.quantize_act_int4(view, None, down)
    rq2, rs2, rl2 = ref.quantize_act_int4(view.cpu(), None, down.cpu())
    assert torch.equal(q2.cpu(), rq2) and torch.equal(s2.cpu(), rs2) and sqnr_db(l2.cpu(), rl2) >= 80


# ---------------------------------------------------------------- w4a4_gemm

M_SWEEP = [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 300]


@pytest.mark.parametrize("m", M_SWEEP)
def test_gemm_m_sweep_every_config(m):
    need_kernels()
    for cfg in configs() + [None]:
        check_gemm(m, 320, 256, cfg, seed=m, tag="m_sweep")


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n,k", [(1, 64), (8, 128), (24, 64), (136, 192), (200, 1088), (129, 640)])
def test_gemm_odd_n_and_out_dtypes(out_dtype, n, k):
    need_kernels()
    for cfg in configs() + [None]:
        for m in (1, 5, 130):
            check_gemm(m, n, k, cfg, out_dtype=out_dtype, with_bias=(m != 5), tag="odd_n")


REAL = sorted({(s.M, s.K, s.N) for s in load_shapes()})


@pytest.mark.parametrize("m,k,n", REAL, ids=[f"{m}x{k}x{n}" for m, k, n in REAL])
def test_gemm_real_shapes(m, k, n):
    need_kernels()
    for cfg in configs() + [None]:
        check_gemm(m, n, k, cfg, tag="real")


@pytest.mark.parametrize("rank", [16, 32, 64, 128, 8, 24, 256])
def test_gemm_fused_lowrank_every_config(rank):
    need_kernels()
    m, n, k = 70, 264, 512
    up_dtype = {16: torch.bfloat16, 32: torch.float16, 64: torch.float32}.get(rank, torch.bfloat16)
    g = torch.Generator(device=DEV).manual_seed(rank)
    low = torch.randn(m, rank, device=DEV, generator=g)
    up = (torch.randn(n, rank, device=DEV, generator=g) / math.sqrt(rank)).to(up_dtype)
    for cfg in configs() + [None]:
        check_gemm(m, n, k, cfg, low=low, up=up, seed=rank, tag=f"lowrank r={rank}")
        check_gemm(m, n, k, cfg, out_dtype=torch.float32, low=low, up=up, seed=rank, tag=f"lowrank r={rank}")
        # The main product scaled away: the output is the low-rank term plus bias alone.
        check_gemm(m, n, k, cfg, low=low, up=up, seed=rank, a_scale_factor=1e-7, tag=f"lowrank-only r={rank}")


def test_gemm_offset_views_and_empty_rank():
    need_kernels()
    m, n, k = 33, 72, 256
    a, a_scale, w, w_scale, bias = operands(m, n, k)
    big = torch.cat([torch.zeros(8, dtype=torch.uint8, device=DEV), a.view(-1)])
    a_view = big[8:].view(m, k // 2)  # 8 bytes past an allocation: not 16-byte aligned
    out = torch.ops.qengine.w4a4_gemm(a_view, a_scale, w, w_scale, bias, torch.empty(m, 0, device=DEV),
                                      torch.empty(n, 0, device=DEV).bfloat16(), torch.bfloat16)
    expect = ref.w4a4_gemm(a, a_scale, w, w_scale, bias, None, None, torch.float32)
    assert sqnr_db(out.float(), expect) >= 40


def test_quantize_then_gemm_matches_reference_chain():
    """The two ops chained, against the CPU reference chain (same quantized operands by bit-exactness)."""
    need_kernels()
    m, k, n, r = 96, 1024, 320, 32
    x = activations(m, k, seed=11)
    x[1] = 1  # no zero rows here: keep the signal well defined
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16()
    down = (torch.randn(r, k, device=DEV) * 0.03).bfloat16()
    up = (torch.randn(n, r, device=DEV) * 0.03).bfloat16()
    _, _, w, w_scale, bias = operands(m, n, k, seed=12)
    qa, sa, low = torch.ops.qengine.quantize_act_int4(x, s, down)
    out = torch.ops.qengine.w4a4_gemm(qa, sa, w, w_scale, bias, low, up, torch.bfloat16)
    rqa, rsa, rlow = ref.quantize_act_int4(x.cpu(), s.cpu(), down.cpu())
    expect = ref.w4a4_gemm(rqa, rsa, w.cpu(), w_scale.cpu(), bias.cpu(), rlow, up.cpu(), torch.float32)
    db = sqnr_db(out.float().cpu(), expect)
    log_sqnr("chain quantize+gemm", db)
    assert db >= 40


# ---------------------------------------------------------------- registration: opcheck, graphs, compile


def test_opcheck():
    need_kernels()
    x = activations(33, 256)
    torch.library.opcheck(torch.ops.qengine.quantize_act_int4.default, (x, None, None))
    torch.library.opcheck(torch.ops.qengine.quantize_act_int4.default,
                          (x, (torch.rand(256, device=DEV) + 0.5).bfloat16(), torch.randn(16, 256, device=DEV).bfloat16()))
    a, a_scale, w, w_scale, bias = operands(33, 64, 256)
    torch.library.opcheck(torch.ops.qengine.w4a4_gemm.default, (a, a_scale, w, w_scale, bias, None, None, torch.bfloat16))
    torch.library.opcheck(torch.ops.qengine.w4a4_gemm.default,
                          (a, a_scale, w, w_scale, None, torch.randn(33, 16, device=DEV),
                           torch.randn(64, 16, device=DEV).bfloat16(), torch.float16))


def make_qlinear(k=512, n=768, rank=32, smooth=True, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=True).to(DEV, torch.bfloat16)
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16() if smooth else None
    return QLinear.from_float(lin, LayerQuantConfig("w4a4", group_size=64, rank=rank), smooth=s)


def test_qlinear_matches_reference_backend():
    need_kernels()
    q = make_qlinear()
    x = torch.randn(3, 50, 512, device=DEV).bfloat16()
    y = q(x)
    q.backend = "reference"
    y_ref = q(x)
    db = sqnr_db(y.float(), y_ref.float())
    log_sqnr("qlinear cuda vs reference backend", db)
    assert y.shape == (3, 50, 768) and db >= 40


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
def test_cuda_graph_capture_replay():
    need_kernels()
    q = make_qlinear()
    static_x = torch.randn(77, 512, device=DEV).bfloat16()

    def make_x(seed):
        torch.manual_seed(seed)
        return torch.randn(77, 512, device=DEV).bfloat16()
    assert_replays_equal_eager(q, static_x, make_x)


def test_torch_compile_fullgraph():
    need_kernels()
    q = make_qlinear()
    compiled = torch.compile(q, fullgraph=True)
    x = torch.randn(2, 64, 512, device=DEV).bfloat16()
    assert torch.equal(compiled(x), q(x))


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    need_kernels()
    quant = torch.ops.qengine.quantize_act_int4
    gemm = torch.ops.qengine.w4a4_gemm
    x = activations(8, 128)
    with pytest.raises(ValueError, match="contiguous"):
        quant(activations(128, 64).t(), None, None)
    with pytest.raises(ValueError, match="dtype"):
        quant(x.to(torch.int32), None, None)
    with pytest.raises(ValueError, match="multiple of 64"):
        quant(activations(8, 96), None, None)
    with pytest.raises(ValueError, match="smooth"):
        quant(x, torch.ones(127, device=DEV).bfloat16(), None)
    with pytest.raises(ValueError, match="lora_down"):
        quant(x, None, torch.ones(4, 64, device=DEV).bfloat16())
    with pytest.raises((ValueError, RuntimeError), match="cpu|device"):
        quant(x, torch.ones(128).bfloat16(), None)
    a, a_scale, w, w_scale, bias = operands(8, 64, 128)
    with pytest.raises(ValueError, match="dtype"):
        gemm(a.view(torch.int8), a_scale, w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 64"):
        gemm(a[:, :24].contiguous(), a_scale[:, :1].contiguous(), w[:, :24].contiguous(), w_scale[:, :1].contiguous(),
             bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="a_scale"):
        gemm(a, a_scale[:, :1].contiguous(), w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="w_scale"):
        gemm(a, a_scale, w, torch.cat([w_scale, w_scale], 1), bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="w must have shape"):
        gemm(a, a_scale, w[:, :32].contiguous(), w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises((ValueError, RuntimeError), match="cpu|device"):
        gemm(a, a_scale.cpu(), w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="together"):
        gemm(a, a_scale, w, w_scale, None, torch.randn(8, 16, device=DEV), None, torch.bfloat16)
    with pytest.raises(ValueError, match="lora_up"):
        gemm(a, a_scale, w, w_scale, None, torch.randn(8, 16, device=DEV), torch.randn(64, 8, device=DEV).bfloat16(),
             torch.bfloat16)
    with pytest.raises(ValueError, match="lowrank_act"):
        gemm(a, a_scale, w, w_scale, None, torch.randn(8, 16, device=DEV).bfloat16(),
             torch.randn(64, 16, device=DEV).bfloat16(), torch.bfloat16)
    with pytest.raises(ValueError, match="out_dtype"):
        gemm(a, a_scale, w, w_scale, None, None, None, torch.int32)
    with pytest.raises(ValueError, match="unknown W4A4 tile config"):
        EXT.w4a4_gemm_with_config(a, a_scale, w, w_scale, None, None, None, "bfloat16", "no_such_config")
