"""GPU tests of the W4A8 CUDA kernel (qengine._C, sm_90a): INT4 per-channel prepacked weights x
INT8 per-token activations, with and without the low-rank term.

Skipped, with the reason, where there is no CUDA GPU, qengine._C is not built or the GPU is
not sm_90. GEMMs are checked against the float32 reference on the SAME quantized operands
(SQNR >= 40 dB; outputs NaN-poisoned first), with every tile config forced, an M sweep 1..128
plus non-multiples of the tiles, the smallest K/N, every real shape of benchmarks/shapes.py and
low-rank ranks 16/32/64/128; plus prepack on the GPU, opcheck, CUDA graphs and torch.compile.
"""
from __future__ import annotations

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
from qengine.formats.w4a8_layout import prepack, unprepack  # noqa: E402
from qengine.nn import QLinear  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402

if "w4a8_gemm" in MISSING_CUDA_KERNELS or not hasattr(EXT, "w4a8_gemm_configs"):
    pytest.skip("qengine._C has no w4a8_gemm kernel", allow_module_level=True)
if torch.cuda.get_device_capability() != (9, 0) or "sm_90a" not in EXT.build_info()["archs"]:
    pytest.skip(f"the W4A8 kernel needs sm_90a (GPU: {torch.cuda.get_device_name()}, build: "
                f"{EXT.build_info()['archs']})", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from shapes import load_shapes  # noqa: E402

DEV = torch.device("cuda")
CONFIGS = list(EXT.w4a8_gemm_configs())


def operands(m: int, n: int, k: int, rank: int = 0, seed: int = 0, out_dtype=torch.bfloat16):
    g = torch.Generator(device=DEV).manual_seed(seed)
    a = torch.randint(-127, 128, (m, k), device=DEV, generator=g, dtype=torch.int8)
    q4 = torch.randint(-8, 8, (n, k), device=DEV, generator=g, dtype=torch.int8)
    w = prepack(pack_int4(q4))
    a_scale = torch.rand(m, device=DEV, generator=g) * 1e-2 + 1e-4
    w_scale = torch.rand(n, 1, device=DEV, generator=g) * 1e-2 + 1e-4
    bias = torch.randn(n, device=DEV, generator=g).to(out_dtype)
    lowrank = up = None
    if rank:
        lowrank = torch.randn(m, rank, device=DEV, generator=g) * 0.1
        up = (torch.randn(n, rank, device=DEV, generator=g) * 0.1).to(out_dtype)
    return a, a_scale, w, w_scale, bias, lowrank, up


def reference(a, a_scale, w, w_scale, bias, lowrank, up):
    # float32 reference computed on the GPU (no TF32: torch's default for float32 matmul)
    return ref.w4a8_gemm(a, a_scale, w, w_scale, bias, lowrank, up, torch.float32)


def run(config, ops, out_dtype=torch.bfloat16):
    name = "bfloat16" if out_dtype == torch.bfloat16 else "float16"
    if config is None:
        return torch.ops.qengine.w4a8_gemm(*ops, out_dtype)
    return EXT.w4a8_gemm_with_config(*ops, name, config)


def check(config, m, n, k, rank=0, out_dtype=torch.bfloat16, seed=0, min_db=40.0):
    ops = operands(m, n, k, rank, seed, out_dtype)
    poison_allocator(m * n * 2)
    out = run(config, ops, out_dtype)
    assert out.shape == (m, n) and out.dtype == out_dtype
    assert not out.isnan().any(), f"NaN in output ({config}, M={m} N={n} K={k})"
    db = sqnr_db(out.float(), reference(*ops))
    assert db >= min_db, f"{config} M={m} N={n} K={k} rank={rank}: SQNR {db:.1f} dB"
    return db


# ---------------------------------------------------------------- GEMM correctness

M_SWEEP = list(range(1, 129)) + [129, 191, 200, 257, 383]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m", M_SWEEP)
def test_m_sweep_every_config(config, m):
    check(config, m, 192, 384, seed=m)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("rank", [16, 32, 64, 128])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_lowrank_every_config(config, rank, out_dtype):
    check(config, 77, 256, 512, rank=rank, out_dtype=out_dtype, seed=rank)
    check(config, 300, 512, 1024, rank=rank, out_dtype=out_dtype, seed=rank + 1)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_lowrank_act_in_the_output_dtype(config, out_dtype):
    """lowrank_act given already rounded to out_dtype (what QLinear has the quantize kernel write):
    the cooperative configs, which round it so themselves, give the same output bit for bit;
    every config stays >= 40 dB from the fp32 reference."""
    for m, n, k in ((77, 256, 512), (300, 512, 1024)):
        ops = operands(m, n, k, 32, seed=m, out_dtype=out_dtype)
        rounded = ops[:5] + (ops[5].to(out_dtype),) + ops[6:]
        out16 = run(config, rounded, out_dtype)
        assert sqnr_db(out16.float(), reference(*ops)) >= 40
        if config in COOP:
            assert torch.equal(out16, run(config, ops, out_dtype))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("n,k", [(16, 32), (16, 96), (48, 32), (112, 160)])
def test_smallest_k_n(config, n, k):
    check(config, 5, n, k)
    check(config, 70, n, k, rank=16)


REAL = sorted({(s.M, s.K, s.N) for s in load_shapes()})


@pytest.mark.parametrize("m,k,n", REAL)
def test_real_shapes(m, k, n):
    check(None, m, n, k, rank=32, seed=k + n)


SPLITK = [c for c in CONFIGS if "splitk" in c]


# The split-K kernel at the FLUX sizes it is chosen for: K split over a cluster of up to 8 CTAs,
# a K tail inside a stage (1184 = 37 x 32), the modulation width (18432) and a second token block.
@pytest.mark.parametrize("config", SPLITK)
@pytest.mark.parametrize("m,k,n", [(1, 3072, 3072), (64, 3072, 3072), (16, 12288, 3072), (1, 3072, 18432),
                                   (48, 1184, 3072), (65, 15360, 3072)])
def test_splitk_flux_sizes(config, m, k, n):
    check(config, m, n, k, rank=32, seed=m + k)
    check(config, m, n, k, seed=m + k + 1)


@pytest.mark.parametrize("config", SPLITK)
def test_splitk_lowrank_product_path(config):
    # The split-K epilogue multiplies lowrank_act x lora_up itself when rank % 16 == 0 and the
    # operands are aligned; otherwise the binding hands it the [M, N] product. Both must match.
    a, a_scale, w, w_scale, bias, _, _ = operands(40, 256, 512, seed=5)
    g = torch.Generator(device=DEV).manual_seed(6)
    for rank, offset in [(8, 0), (32, 1)]:
        buf = torch.randn(40 * rank + offset, device=DEV, generator=g) * 0.1
        la = buf[offset:].view(40, rank)  # offset 1: 4-byte aligned only
        up = (torch.randn(256, rank, device=DEV, generator=g) * 0.1).bfloat16()
        ops = (a, a_scale, w, w_scale, bias, la, up)
        poison_allocator(40 * 256 * 2)
        out = run(config, ops)
        assert not out.isnan().any()
        db = sqnr_db(out.float(), reference(*ops))
        assert db >= 40.0, f"{config} rank={rank} offset={offset}: SQNR {db:.1f} dB"


# The cooperative configs, alone or in clusters of two row tiles (the ones whose epilogue multiplies
# the branch from shared memory).
COOP = [c for c in CONFIGS if "_coop" in c and "streamk" not in c]
CLUSTERED = [c for c in COOP if c.endswith("_c2x1")]


def test_coop_configs_are_the_ones_that_fuse_the_branch():
    assert len(COOP) == 4 and len(CLUSTERED) == 2
    assert [c for c in CONFIGS if "splitk" not in c and EXT.w4a8_config_fuses_lowrank(c, 32)] == COOP


@pytest.mark.parametrize("config", CLUSTERED)
@pytest.mark.parametrize("m,k,n", [(300, 1024, 512), (1000, 3072, 3072), (4608, 3072, 3072), (777, 15360, 3072),
                                   (200, 96, 4112), (513, 512, 144)])
@pytest.mark.parametrize("rank", [0, 32])
def test_clustered_configs_equal_the_unclustered_ones(config, m, k, n, rank):
    # Clusters of two row tiles share the activation tile by TMA multicast and walk the tiles in
    # another order; the int32 sums and the epilogue are those of any cooperative tile, so the
    # outputs agree with the unclustered 128x128 tile bit for bit (with the staged branch too: its
    # next-tile guess follows the clustered scheduler). N = 4112: 33 row tiles, so the last
    # cluster's second CTA lies past N; N = 144: a partial second row tile; K = 96: a K tail inside
    # one 128-deep k-block; M = 4608: 21 full tiles of 224 tokens, the others partial ones.
    ops = operands(m, n, k, rank, seed=m + k + rank)
    if rank:
        ops = ops[:5] + (ops[5].bfloat16(),) + ops[6:]
    poison_allocator(m * n * 2)
    out = run(config, ops)
    assert not out.isnan().any()
    assert torch.equal(out, run("sm90_128x128x128_coop", ops))
    assert sqnr_db(out.float(), reference(*ops)) >= 40


@pytest.mark.parametrize("config", COOP)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_coop_lowrank_staged_epilogue(config, out_dtype):
    # The cooperative configs multiply a branch of rank 16 or 32 in their epilogue, from operands
    # staged in shared memory per tile; other ranks, or a lora_up not 16-byte aligned, go through
    # the [M, N] product (lowrank_act is always aligned there: the binding hands the epilogue a
    # copy rounded to the output dtype). The GEMM term is zero here (a = 0, no bias), so the
    # output is the branch alone. N and M are no multiples of the tile (zero-filled staging), and
    # there are 2-4 tiles per CTA (the staging buffer is reused from tile to tile).
    assert [EXT.w4a8_config_fuses_lowrank(config, r) for r in (8, 16, 32, 48, 64)] == [False, True, True, False, False]
    m, n, k = 2000, 4112, 256
    _, a_scale, w, w_scale, _, _, _ = operands(m, n, k, seed=7, out_dtype=out_dtype)
    a = torch.zeros(m, k, device=DEV, dtype=torch.int8)
    g = torch.Generator(device=DEV).manual_seed(8)
    for rank, offset in [(16, 0), (32, 0), (32, 1), (64, 0)]:
        buf = torch.randn(m * rank + 1, device=DEV, generator=g)
        la = buf[1:].view(m, rank)  # 4-byte aligned only: the binding's copy is what the epilogue reads
        up_buf = torch.randn(n * rank + offset, device=DEV, generator=g).to(out_dtype)
        up = up_buf[offset:].view(n, rank)  # offset 1: 2-byte aligned only -> the product path
        ops = (a, a_scale, w, w_scale, None, la, up)
        poison_allocator(m * n * 2)
        out = run(config, ops, out_dtype)
        assert not out.isnan().any()
        db = sqnr_db(out.float(), reference(*ops))
        assert db >= 40.0, f"{config} rank={rank} offset={offset}: SQNR {db:.1f} dB"


STREAMK = [c for c in CONFIGS if "streamk" in c]


# The stream-K configs at the few-token FLUX sizes they are for (K shared out over all SMs, so a
# tile's partial sums from several CTAs meet in the workspace), a K that is no multiple of the
# 128-deep k-block, and M = 4608, where the tiles fill the GPU and CUTLASS's heuristic goes
# data-parallel (no reduction).
@pytest.mark.parametrize("config", STREAMK)
@pytest.mark.parametrize("m,k,n", [(1, 3072, 3072), (33, 3072, 3072), (64, 3072, 3072), (64, 12288, 3072),
                                   (48, 1184, 3072), (32, 3072, 12288), (4608, 3072, 3072)])
def test_streamk_flux_sizes(config, m, k, n):
    check(config, m, n, k, rank=32, seed=m + k)
    check(config, m, n, k, seed=m + k + 1)


@pytest.mark.parametrize("config", STREAMK)
def test_streamk_is_exact_and_replays_in_a_cuda_graph(config):
    # The partial tiles are int32 sums added through the workspace in whatever order the CTAs
    # finish: exact, so two calls agree bit for bit; and the workspace's zeroing is part of the
    # captured graph, so every replay starts from clean barriers.
    ops = operands(64, 3072, 3072, seed=9)
    first = run(config, ops)
    assert torch.equal(first, run(config, ops))
    a = ops[0].clone()
    assert_replays_equal_eager(lambda x: run(config, (x, *ops[1:])), a,
                               lambda seed: operands(64, 3072, 3072, seed=20 + seed)[0])


def test_zero_rank_lowrank_is_no_lowrank():
    a, a_scale, w, w_scale, bias, _, _ = operands(33, 64, 128)
    out = torch.ops.qengine.w4a8_gemm(a, a_scale, w, w_scale, bias, torch.zeros(33, 0, device=DEV),
                                      torch.zeros(64, 0, device=DEV).bfloat16(), torch.bfloat16)
    assert torch.equal(out, torch.ops.qengine.w4a8_gemm(a, a_scale, w, w_scale, bias, None, None, torch.bfloat16))


def test_heuristic_names():
    assert EXT.w4a8_gemm_heuristic(1, 3072, 3072) in CONFIGS
    assert EXT.w4a8_gemm_heuristic(4608, 3072, 3072) in CONFIGS
    assert EXT.w4a8_gemm_heuristic(64, 3072, 3072) != EXT.w4a8_gemm_heuristic(4096, 3072, 3072)
    # few tokens (arguments M, N, K): the kernels that spread the weight stream over every SM
    assert "mma_128x64x128_splitk" in EXT.w4a8_gemm_heuristic(1, 3072, 3072)
    assert "mma_128x64x256_splitk" in EXT.w4a8_gemm_heuristic(32, 3072, 12288)  # deep K
    assert "128x32x128_coop_streamk" in EXT.w4a8_gemm_heuristic(32, 12288, 3072)  # wide N
    assert "128x64x128_coop_streamk" in EXT.w4a8_gemm_heuristic(64, 12288, 3072)  # wide N
    assert "128x32x128_coop_streamk" in EXT.w4a8_gemm_heuristic(48, 3072, 12288)  # deep K, 33..64 tokens
    assert "64x64x128_pingpong" in EXT.w4a8_gemm_heuristic(64, 3072, 3072)
    # many tokens: 256 per tile where those tiles fill 2/3 of a wave, 128 where those fill the
    # last wave better by 8 points (132 SMs: 432 tiles of 256 fill 82% of 4 waves, 864 of 128 94%)
    sms = torch.cuda.get_device_properties(DEV).multi_processor_count
    assert "128x256x128_coop" in EXT.w4a8_gemm_heuristic(4096, 3072, 3072)
    assert "128x256x128_coop" in EXT.w4a8_gemm_heuristic(4608, 12288, 3072)
    if sms == 132:
        assert "128x128x128_coop" in EXT.w4a8_gemm_heuristic(4608, 3072, 15360)  # deep K
        assert "128x128x128_coop" in EXT.w4a8_gemm_heuristic(512, 12288, 3072)
        # short K, 224-token tiles fill the waves (504 tiles: 95% of 4 waves; 256-token ones 82%)
        assert EXT.w4a8_gemm_heuristic(4608, 3072, 3072) == "sm90_128x224x128_coop_c2x1"
    assert "128x256x128_coop" not in EXT.w4a8_gemm_heuristic(512, 3072, 3072)
    # two waves or more of 256-token tiles over an even number of row tiles: clusters of two
    if sms == 132:
        assert EXT.w4a8_gemm_heuristic(4096, 3072, 3072) == "sm90_128x256x128_coop_c2x1"
        assert EXT.w4a8_gemm_heuristic(4608, 12288, 3072) == "sm90_128x256x128_coop_c2x1"
        assert EXT.w4a8_gemm_heuristic(333, 6144, 1536) == "sm90_128x256x128_coop"  # one wave
        assert EXT.w4a8_gemm_heuristic(4096, 2944, 3072) == "sm90_128x256x128_coop"  # 23 row tiles


# ---------------------------------------------------------------- prepack on the GPU


def test_prepack_on_gpu_is_bit_exact_with_cpu():
    g = torch.Generator().manual_seed(3)
    w = pack_int4(torch.randint(-8, 8, (3072, 512), generator=g, dtype=torch.int8))
    p_gpu = torch.ops.qengine.w4a8_prepack(w.to(DEV))
    assert torch.equal(p_gpu.cpu(), torch.ops.qengine.w4a8_prepack(w))
    assert torch.equal(torch.ops.qengine.w4a8_unprepack(p_gpu).cpu(), w)
    assert torch.equal(unprepack(p_gpu).cpu(), w)


# ---------------------------------------------------------------- registration: opcheck, graphs, compile


def test_opcheck():
    a, a_scale, w, w_scale, bias, lowrank, up = operands(33, 64, 256, rank=16)
    op = torch.ops.qengine.w4a8_gemm.default
    torch.library.opcheck(op, (a, a_scale, w, w_scale, bias, None, None, torch.bfloat16))
    torch.library.opcheck(op, (a, a_scale, w, w_scale, None, lowrank, up, torch.float16))
    torch.library.opcheck(torch.ops.qengine.w4a8_prepack.default, (pack_int4(torch.zeros(32, 64, dtype=torch.int8,
                                                                                         device=DEV)),))


def make_qlinear(k=512, n=768, rank=32, smooth=True, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=True).to(DEV, torch.bfloat16)
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16() if smooth else None
    return QLinear.from_float(lin, LayerQuantConfig("w4a8", 0, rank), smooth=s)


@pytest.mark.skipif("quantize_act_int8" in MISSING_CUDA_KERNELS, reason="no CUDA quantize_act_int8")
def test_qlinear_matches_reference_backend():
    q = make_qlinear()
    x = torch.randn(3, 50, 512, device=DEV).bfloat16()
    y = q(x)
    q.backend = "reference"
    y_ref = q(x)
    assert y.shape == (3, 50, 768) and sqnr_db(y.float(), y_ref.float()) >= 40


@pytest.mark.skipif("quantize_act_int8" in MISSING_CUDA_KERNELS, reason="no CUDA quantize_act_int8")
@pytest.mark.parametrize("tokens", [7, 32, 33, 150, 4096])
def test_qlinear_has_lowrank_act_written_in_its_dtype(tokens):
    """Above 32 tokens QLinear asks the quantize kernel for lowrank_act in x's dtype, so the GEMM
    binding converts nothing; the output equals the fp32-lowrank_act path where the config rounds
    it anyway. Up to 32 tokens (split-K configs read fp32) it stays fp32."""
    q = make_qlinear(k=1024, n=512)
    x = torch.randn(tokens, 1024, device=DEV).bfloat16()
    seen = []
    real = torch.ops.qengine.w4a8_gemm

    def spy(*args):
        seen.append(args[5].dtype)
        return real(*args)
    import unittest.mock as mock
    with mock.patch.object(torch.ops.qengine, "w4a8_gemm", spy):
        y = q(x)
    assert seen == [torch.bfloat16 if tokens > 32 else torch.float32]
    if tokens <= 32:
        assert "splitk" in EXT.w4a8_gemm_heuristic(tokens, 512, 1024)
    else:
        assert "splitk" not in EXT.w4a8_gemm_heuristic(tokens, 512, 1024)
    qx, qs, lr32 = torch.ops.qengine.quantize_act_int8(x, q.smooth, q.lora_down)
    y32 = real(qx, qs, q.weight, q.weight_scale, q.bias, lr32, q.lora_up, torch.bfloat16)
    if EXT.w4a8_gemm_heuristic(tokens, 512, 1024) in COOP:
        assert torch.equal(y, y32)
    assert sqnr_db(y.float(), y32.float()) >= 40


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
@pytest.mark.skipif("quantize_act_int8" in MISSING_CUDA_KERNELS, reason="no CUDA quantize_act_int8")
def test_cuda_graph_capture_replay():
    q = make_qlinear()
    static_x = torch.randn(77, 512, device=DEV).bfloat16()

    def make_x(seed):
        torch.manual_seed(seed)
        return torch.randn(77, 512, device=DEV).bfloat16()
    assert_replays_equal_eager(q, static_x, make_x)


@pytest.mark.skipif("quantize_act_int8" in MISSING_CUDA_KERNELS, reason="no CUDA quantize_act_int8")
def test_torch_compile_fullgraph():
    q = make_qlinear()
    compiled = torch.compile(q, fullgraph=True)
    x = torch.randn(2, 64, 512, device=DEV).bfloat16()
    assert torch.equal(compiled(x), q(x))


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    gemm = torch.ops.qengine.w4a8_gemm
    a, a_scale, w, w_scale, bias, _, _ = operands(8, 64, 128)
    with pytest.raises(ValueError, match=r"per-output-channel INT4 weights \(w_scale \[N, 1\]\).*group size 64"):
        gemm(a, a_scale, w, w_scale.repeat(1, 2).contiguous(), bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="a_scale"):
        gemm(a, a_scale[:7], w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        gemm(a, a_scale, w.view(torch.int8), w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 16"):
        gemm(a, a_scale, w[:40].contiguous(), w_scale[:40].contiguous(), None, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 32"):
        EXT.w4a8_gemm_with_config(a[:, :48].contiguous(), a_scale, w[:, :24].contiguous(), w_scale, None, None,
                                  None, "bfloat16", CONFIGS[0])
    # the wgmma mainloop accumulates 16 x w x a in int32: K x 128 x 128 must stay below 2^31
    big_k = 65536 + 32
    a_big = torch.zeros(1, big_k, dtype=torch.int8, device=DEV)
    w_big = torch.zeros(16, big_k // 2, dtype=torch.uint8, device=DEV)
    with pytest.raises(ValueError, match="K=65568 .*at most 65536"):
        gemm(a_big, a_scale[:1], w_big, w_scale[:16], None, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="out_dtype"):
        gemm(a, a_scale, w, w_scale, None, None, None, torch.float32)
    with pytest.raises(ValueError, match="together"):
        gemm(a, a_scale, w, w_scale, None, torch.randn(8, 4, device=DEV), None, torch.bfloat16)
    with pytest.raises((ValueError, RuntimeError), match="cpu|device"):
        gemm(a, a_scale.cpu(), w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown W4A8 tile config"):
        EXT.w4a8_gemm_with_config(a, a_scale, w, w_scale, None, None, None, "bfloat16", "no_such_config")
