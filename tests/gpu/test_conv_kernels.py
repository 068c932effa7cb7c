"""GPU tests of the W8A8 conv2d CUDA kernels (qengine._C): sm90 implicit GEMM and im2col + mma.sync.

Skipped, with the reason, where there is no CUDA GPU or qengine._C lacks the kernel. Each conv is
checked against the float32 reference on the same operands (the activation quantization is
bit-exact with the reference, so only the accumulation order and the output rounding differ):
SQNR >= 40 dB, outputs NaN-poisoned first, every tile config forced on small odd shapes, the
heuristic on every SD1.5 / SDXL UNet conv shape (batch 1 and 4), split shortcut and residual.
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

import qengine  # noqa: E402,F401
from qengine.config import LayerQuantConfig  # noqa: E402
from qengine.nn import QConv2d  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402
from qengine.ops import reference as ref  # noqa: E402

if not hasattr(EXT, "conv_configs"):
    pytest.skip("qengine._C is not built with the conv kernels", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from shapes import load_conv_shapes  # noqa: E402

DEV = torch.device("cuda")
QDTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
CONV_OP = {"int8": "w8a8_int8_conv2d", "fp8": "w8a8_fp8_conv2d"}
KINDS = [pytest.param(k, marks=pytest.mark.skipif(CONV_OP[k] in MISSING_CUDA_KERNELS,
                                                   reason=f"qengine._C has no CUDA kernel for {CONV_OP[k]}"))
         for k in ("int8", "fp8")]


def configs_for(kind: str, splits=(2, 3)) -> list[str]:
    """Every config that runs here, plus each sm90 config split-K over each of ``splits`` CTAs."""
    name = "int8" if kind == "int8" else "float8_e4m3fn"
    configs = [c for c in EXT.conv_configs() if EXT.conv_config_available(c, name, DEV.index or 0)]
    return configs + [f"{c}_split{s}" for s in splits for c in configs if c.startswith("sm90_")]


def operands(kind, b, h, w, c, o, k, seed=0, dtype=torch.bfloat16, bias=True):
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(b, h, w, c, device=DEV, generator=g)
    x[..., :: max(c // 5, 1)] *= 8  # outlier channels, as in UNet activations
    if kind == "int8":
        wq = torch.randint(-127, 128, (o, k, k, c), device=DEV, generator=g, dtype=torch.int8)
    else:
        wq = (torch.randn(o, k, k, c, device=DEV, generator=g) * 64).clamp(-448, 448).to(torch.float8_e4m3fn)
    w_scale = torch.rand(o, device=DEV, generator=g) / (8 * math.sqrt(k * k * c)) + 1e-4
    b_ = torch.randn(o, device=DEV, generator=g).to(dtype) if bias else None
    return x.to(dtype), wq, w_scale, b_


def cpu_reference(kind, x, wq, w_scale, bias, x_scale, stride, padding, dilation=(1, 1), x2=None, x2_scale=None,
                  residual=None):
    cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
    fn = getattr(ref, CONV_OP[kind])
    return fn(cpu(x), cpu(wq), cpu(w_scale), cpu(bias), cpu(x_scale), list(stride), list(padding), list(dilation),
              cpu(x2), cpu(x2_scale), cpu(residual))


def run_config(kind, config, x, wq, w_scale, bias, x_scale, stride, padding, dilation=(1, 1), **kw):
    poison_allocator(x.shape[0] * x.shape[1] * x.shape[2] * wq.shape[0] * 2 + x.numel() * 2)
    return EXT.qconv2d_with_config(x, wq, w_scale, bias, x_scale, list(stride), list(padding), list(dilation), config,
                                   **kw)


def test_build_lists_conv_configs():
    assert set(EXT.conv_configs()) >= {"sm90_128x128x128_s4", "sm90_128x160x128_s4", "sm90_64x160x128_s4",
                                       "sm90_256x128x128_s4", "sm90_256x160x128_s4", "sm90_256x128x128_c1x2_s4",
                                       "im2col_gemm_sm80"}
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) == (9, 0) and "sm_90a" in EXT.build_info()["archs"]:
        assert EXT.conv_heuristic(4096, 640, 5760, "int8").startswith("sm90_")
        if torch.cuda.get_device_properties(DEV).multi_processor_count == 132:  # H100 SXM, where it was swept
            # SDXL 3x3 at 1024x1024 (notes/conv.md): 1280 ch at 32x32 -> 256x128 tiles in clusters of
            # two along N, K over 3 CTAs (120 CTAs; 4-8% faster than the 80 tiles of 128x128 it ran as
            # before); 640 ch at 64x64 -> one wave of 128x160; 640 ch at 128x128 -> 256x128 (3/4 of
            # the L2 bytes per MMA of 128x128). Split-K where few tiles leave SMs idle: the stride-2
            # 640 -> 640 downsampler (40 tiles) over 2 CTAs, SD1.5's 1280 ch at 16x16 over 4.
            assert EXT.conv_heuristic(1024, 1280, 11520, "int8") == "sm90_256x128x128_c1x2_s4_split3"
            # 5 column tiles of 128 (N = 640): no clusters of two, whose last would run past the end
            assert "c1x2" not in EXT.conv_heuristic(1024, 640, 5760, "int8")
            assert EXT.conv_heuristic(4096, 640, 5760, "float8_e4m3fn") == "sm90_128x160x128_s4"
            assert EXT.conv_heuristic(16384, 640, 5760, "int8") == "sm90_256x128x128_s4"
            assert EXT.conv_heuristic(1024, 640, 5760, "int8") == "sm90_128x128x128_s4_split2"
            assert EXT.conv_heuristic(256, 1280, 11520, "float8_e4m3fn") == "sm90_128x128x128_s4_split4"
            # SDXL 320 ch at 128x128: 128 tiles of 256x160, one wave (8% faster than 128x160 there)
            assert EXT.conv_heuristic(16384, 320, 2880, "int8") == "sm90_256x160x128_s4"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_quantize_pre_pass_bit_exact(kind, dtype):
    """The per-tensor absmax + quantize pass equals the reference bit for bit, on a contiguous
    tensor and on a channel slice of a concat (ties, zeros and huge/tiny values included)."""
    g = torch.Generator(device=DEV).manual_seed(3)
    x = torch.randn(3, 7, 5, 48, device=DEV, generator=g) * torch.logspace(-4, 2, 48, device=DEV)
    x[0, 0, 0, :8] = torch.tensor([0.5, 1.5, -2.5, 0, -0.0, 126.5, -126.5, 3.5], device=DEV)
    x = x.to(dtype)
    qdt = "int8" if kind == "int8" else "float8_e4m3fn"
    fmt_scale = {"int8": 127.0, "fp8": 448.0}[kind]
    huge = x.clone()
    huge[0, 0, 1, :2] = torch.tensor([1e38, -1e38], device=DEV).to(dtype)  # inf in fp16; overflows x / 0.01 in bf16
    cases = [(v, st) for v in (x, x[..., 16:40], x[..., :16]) for st in (None, torch.tensor([0.01], device=DEV))]
    cases.append((huge, torch.tensor([0.01], device=DEV)))
    fmt = ref.Format.INT8 if kind == "int8" else ref.Format.FP8_E4M3
    for view, static in cases:
        q, s = EXT.conv_quantize_input(view, static, qdt)
        q_ref, s_ref = ref.quantize_conv_input(view.cpu(), None if static is None else static.cpu(), fmt)
        assert q.is_contiguous() and q.shape == view.shape
        assert torch.equal(s.cpu(), s_ref.reshape(1).float())
        assert torch.equal(q.cpu().view(torch.uint8), q_ref.view(torch.uint8))
        if static is None:
            assert s.item() == pytest.approx(view.float().abs().max().item() / fmt_scale, rel=1e-6)


# (b, h, w, c, o, k, stride, padding, dilation): odd spatial sizes, strides, 1x1, dilation, M not a tile multiple
SMALL = [
    (1, 13, 11, 32, 24, 3, 1, 1, 1),
    (4, 9, 7, 64, 48, 3, 2, 1, 1),
    (2, 15, 17, 48, 136, 1, 1, 0, 1),
    (1, 10, 6, 16, 8, 3, 1, 2, 2),
    (3, 33, 31, 96, 200, 3, 2, 1, 1),
    (1, 12, 10, 64, 264, 3, 1, 1, 1),  # 3 column tiles of 128: a cluster of 2 along N runs one past the end
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", SMALL, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("static", [False, True])
def test_every_config_small_shapes(kind, case, static):
    b, h, w, c, o, k, s, p, d = case
    x, wq, w_scale, bias = operands(kind, b, h, w, c, o, k, seed=hash(case) % 1000)
    x_scale = (x.float().abs().amax() / 90).reshape(1) if static else None  # static: some values clip
    expect = cpu_reference(kind, x, wq, w_scale, bias, x_scale, (s, s), (p, p), (d, d))
    configs = configs_for(kind, splits=(2, 3, 8))  # 8 > the k blocks of the 1x1 and C=16 cases: empty splits add 0
    assert configs, "no conv config runs on this GPU"
    for cfg in configs:
        y = run_config(kind, cfg, x, wq, w_scale, bias, x_scale, (s, s), (p, p), (d, d))
        assert y.shape == expect.shape and y.dtype == x.dtype
        assert not torch.isnan(y).any(), cfg
        assert sqnr_db(y.float().cpu(), expect.float()) >= 40, cfg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_config_split_shortcut_and_residual(kind, dtype):
    """concat([hidden, skip]) read as channel slices of one NHWC tensor, a scale per half (ranges
    300x apart), plus a residual; then the same with two separate tensors and static scales."""
    b, h, w, c1, c2, o = 2, 11, 9, 64, 32, 40
    x, wq, w_scale, bias = operands(kind, b, h, w, c1 + c2, o, 3, seed=5, dtype=dtype)
    x = x.clone()
    x[..., c1:] /= 300
    residual = torch.randn(b, h, w, o, device=DEV).to(dtype)
    hidden, skip = x[..., :c1], x[..., c1:]
    expect = cpu_reference(kind, hidden, wq, w_scale, bias, None, (1, 1), (1, 1), x2=skip, residual=residual)
    scales = (hidden.float().abs().amax().reshape(1) / 100, skip.float().abs().amax().reshape(1) / 100)
    expect_static = cpu_reference(kind, hidden.contiguous(), wq, w_scale, None, scales[0], (1, 1), (1, 1),
                                  x2=skip.contiguous(), x2_scale=scales[1])
    for cfg in configs_for(kind):
        y = run_config(kind, cfg, hidden, wq, w_scale, bias, None, (1, 1), (1, 1), x2=skip, residual=residual)
        assert not torch.isnan(y).any(), cfg
        assert sqnr_db(y.float().cpu(), expect.float()) >= 40, cfg
        y2 = run_config(kind, cfg, hidden.contiguous(), wq, w_scale, None, scales[0], (1, 1), (1, 1),
                        x2=skip.contiguous(), x2_scale=scales[1])
        assert sqnr_db(y2.float().cpu(), expect_static.float()) >= 40, cfg
    # the skip half alone (hidden weights zeroed): an error in its own scale cannot hide behind the hidden half
    w_skip = wq.clone()
    w_skip[..., :c1] = 0
    only_skip = cpu_reference(kind, hidden, w_skip, w_scale, None, None, (1, 1), (1, 1), x2=skip)
    y = getattr(torch.ops.qengine, CONV_OP[kind])(hidden, w_skip, w_scale, None, None, [1, 1], [1, 1], [1, 1], skip)
    assert sqnr_db(y.float().cpu(), only_skip.float()) >= 40


@pytest.mark.parametrize("kind", KINDS)
def test_split_halves_of_unit_spatial_size(kind):
    """Channel slices of a [B, 1, 1, C] concat (torch leaves size-1 strides arbitrary)."""
    x, wq, w_scale, bias = operands(kind, 3, 1, 1, 48, 16, 1)
    hidden, skip = x[..., :32], x[..., 32:]
    expect = cpu_reference(kind, hidden, wq, w_scale, bias, None, (1, 1), (0, 0), x2=skip)
    y = getattr(torch.ops.qengine, CONV_OP[kind])(hidden, wq, w_scale, bias, None, [1, 1], [0, 0], [1, 1], skip)
    assert sqnr_db(y.float().cpu(), expect.float()) >= 40


def real_shape_params():
    out = []
    for s in load_conv_shapes():
        for batch in (1, 4):
            if batch == 4 and s.H * s.W * s.C > 64 * 64 * 960:
                continue  # the biggest SDXL shapes at batch 4: memory/time of the fp32 reference, not the kernel
            out.append(pytest.param(s, batch, id=f"{s.name}-b{batch}{'-split' if s.split else ''}"))
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,batch", real_shape_params())
def test_real_unet_shapes(kind, shape, batch):
    """Every distinct SD1.5 / SDXL UNet conv (heuristic config) against the float32 reference run
    on the GPU (cuDNN fp32 with TF32 off), split-shortcut convs with their split."""
    s = shape
    x, wq, w_scale, bias = operands(kind, batch, s.H, s.W, s.C, s.O, s.k, seed=s.C + s.O)
    op = getattr(torch.ops.qengine, CONV_OP[kind])
    hidden, skip = (x[..., :s.split], x[..., s.split:]) if s.split else (x, None)
    poison_allocator(x.numel() * 2)
    y = op(hidden, wq, w_scale, bias, None, [s.stride] * 2, [s.padding] * 2, [1, 1], skip)
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        expect = getattr(ref, CONV_OP[kind])(hidden, wq, w_scale, bias, None, [s.stride] * 2, [s.padding] * 2, [1, 1],
                                             skip)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    assert not torch.isnan(y).any()
    assert sqnr_db(y.float(), expect.float()) >= 40


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hw,c", [(64, 640), (32, 1280)], ids=["sdxl640@64x64", "sdxl1280@32x32"])
def test_every_config_sdxl_bar_shapes(kind, hw, c):
    """Every config on the SDXL 3x3 convs that issue 6's speed bar names (and the same channels
    at 13x13: partial tiles), against the float32 reference on the GPU."""
    for h in (hw, 13):
        x, wq, w_scale, bias = operands(kind, 1, h, h, c, c, 3, seed=c + h)
        x_scale = (x.float().abs().amax() / 100).reshape(1)
        prev = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            expect = getattr(ref, CONV_OP[kind])(x, wq, w_scale, bias, x_scale, [1, 1], [1, 1], [1, 1])
        finally:
            torch.backends.cudnn.allow_tf32 = prev
        for cfg in configs_for(kind):
            y = run_config(kind, cfg, x, wq, w_scale, bias, x_scale, (1, 1), (1, 1))
            assert not torch.isnan(y).any(), cfg
            assert sqnr_db(y.float(), expect.float()) >= 40, cfg


@pytest.mark.parametrize("kind", KINDS)
def test_split_k_is_deterministic_and_checks_names(kind):
    """A split-K plan gives the same bits on every call (the last split adds the partials in a fixed
    order), on top of a NaN-poisoned workspace; malformed plan names raise clear errors."""
    if not any(c.startswith("sm90_") for c in configs_for(kind, splits=())):
        pytest.skip("no sm90 conv config runs on this GPU")
    x, wq, w_scale, bias = operands(kind, 1, 20, 20, 256, 160, 3, seed=11)
    x_scale = (x.float().abs().amax() / 100).reshape(1)
    first = run_config(kind, "sm90_128x160x128_s4_split5", x, wq, w_scale, bias, x_scale, (1, 1), (1, 1))
    for _ in range(3):
        again = run_config(kind, "sm90_128x160x128_s4_split5", x, wq, w_scale, bias, x_scale, (1, 1), (1, 1))
        assert torch.equal(first, again)
    for bad, match in [("sm90_128x160x128_s4_split1", "2..16"), ("sm90_128x160x128_s4_split17", "2..16"),
                       ("sm90_128x160x128_s4_splitx", "2..16"), ("im2col_gemm_sm80_split2", "only for the sm90"),
                       ("sm90_999_split2", "unknown conv tile config")]:
        with pytest.raises(ValueError, match=match):
            run_config(kind, bad, x, wq, w_scale, bias, x_scale, (1, 1), (1, 1))


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
@pytest.mark.parametrize("kind", KINDS)
def test_split_k_cuda_graph_replay(kind):
    """The split-K workspace's arrival counters are zeroed inside the captured graph: replays with new
    inputs equal eager calls bit for bit (a counter left over from an earlier replay would let the
    last split add partials before they are written)."""
    if not any(c.startswith("sm90_") for c in configs_for(kind, splits=())):
        pytest.skip("no sm90 conv config runs on this GPU")
    _, wq, w_scale, bias = operands(kind, 2, 12, 12, 320, 128, 3, seed=4)
    shape = (2, 12, 12, 320)

    def conv(x):
        return EXT.qconv2d_with_config(x, wq, w_scale, bias, None, [1, 1], [1, 1], [1, 1], "sm90_128x128x128_s4_split3")

    def make_x(seed):
        g = torch.Generator(device=DEV).manual_seed(seed)
        return (torch.randn(shape, device=DEV, generator=g) * (seed + 1)).bfloat16()
    assert_replays_equal_eager(conv, make_x(7), make_x)


# ---------------------------------------------------------------- registration: opcheck, graphs, compile


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(kind):
    x, wq, w_scale, bias = operands(kind, 2, 9, 7, 48, 32, 3)
    # test_schema's aliasing check runs arithmetic on the inputs, which torch has no CUDA kernel
    # for on float8 tensors: skip it for FP8 (as the GEMM tests do).
    utils = (("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic") if kind == "fp8"
             else torch.library._OPCHECK_DEFAULT_UTILS)
    op = getattr(torch.ops.qengine, CONV_OP[kind]).default
    torch.library.opcheck(op, (x, wq, w_scale, bias, None, [1, 1], [1, 1], [1, 1]), test_utils=utils)
    res = torch.randn(2, 5, 4, 32, device=DEV).bfloat16()
    torch.library.opcheck(op, (x[..., :32], wq, w_scale, None, torch.tensor([0.05], device=DEV), [2, 2], [1, 1],
                               [1, 1], x[..., 32:], None, res), test_utils=utils)


def make_qconv(scheme, cin=64, cout=96, k=3, stride=1, split=None, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2).to(DEV, torch.bfloat16)
    return QConv2d.from_float(conv, LayerQuantConfig(scheme), split=split), conv


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_qconv2d_channels_last_end_to_end(scheme):
    kind = "int8" if scheme.endswith("int8") else "fp8"
    if CONV_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    for split in (None, 32):
        q, conv = make_qconv(scheme, split=split)
        x = torch.randn(2, 64, 17, 15, device=DEV).bfloat16().to(memory_format=torch.channels_last)
        y = q(x)
        assert y.is_contiguous(memory_format=torch.channels_last)  # no layout round trip
        q.backend = "reference"
        y_ref = q(x)
        q.backend = "auto"
        assert sqnr_db(y.float(), y_ref.float()) >= 40
        assert sqnr_db(y.float(), conv(x).float()) >= (30 if kind == "int8" else 20)  # vs the float conv


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="graph capture needs the caching allocator (cudaMalloc is illegal while capturing)")
@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_cuda_graph_capture_replay(scheme):
    kind = "int8" if scheme.endswith("int8") else "fp8"
    if CONV_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    q, _ = make_qconv(scheme, split=32)
    shape = (2, 64, 16, 12)
    static_x = torch.randn(shape, device=DEV).bfloat16().to(memory_format=torch.channels_last)

    def make_x(seed):  # a different range per replay: the dynamic scale is recomputed inside the graph
        torch.manual_seed(seed)
        return (torch.randn(shape, device=DEV) * (seed + 1)).bfloat16().to(memory_format=torch.channels_last)
    assert_replays_equal_eager(q, static_x, make_x)


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_torch_compile_fullgraph(scheme):
    kind = "int8" if scheme.endswith("int8") else "fp8"
    if CONV_OP[kind] in MISSING_CUDA_KERNELS:
        pytest.skip("kernels missing")
    q, _ = make_qconv(scheme, split=32)
    compiled = torch.compile(q, fullgraph=True)
    x = torch.randn(2, 64, 12, 10, device=DEV).bfloat16().to(memory_format=torch.channels_last)
    assert torch.equal(compiled(x), q(x))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise_clear_errors(kind):
    op = getattr(torch.ops.qengine, CONV_OP[kind])
    x, wq, w_scale, bias = operands(kind, 1, 8, 8, 32, 16, 3)
    with pytest.raises(ValueError, match="stride must be two integers >= 1"):
        op(x, wq, w_scale, bias, None, [0, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="O=12 output channels"):
        op(x, wq[:12].contiguous(), w_scale[:12].contiguous(), None, None, [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="float32 runs only with backend='reference'"):
        op(x.float(), wq, w_scale, bias, None, [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="multiple of 16"):
        op(x[..., :24].contiguous(), wq[..., :24].contiguous(), w_scale, bias, None, [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="contiguous NHWC or a channel slice"):
        op(x.permute(0, 2, 1, 3), wq, w_scale, bias, None, [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="x2_scale is given without x2"):
        op(x, wq, w_scale, bias, None, [1, 1], [1, 1], [1, 1], None, torch.ones(1, device=DEV))
    with pytest.raises(ValueError, match="residual"):
        op(x, wq, w_scale, bias, None, [1, 1], [1, 1], [1, 1], None, None, torch.zeros(1, 8, 8, 8, device=DEV).bfloat16())
    with pytest.raises(ValueError, match="too small"):
        op(x[:, :1, :1].contiguous(), wq, w_scale, bias, None, [1, 1], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="groups=1 only"):  # groups route to a clear module error (keep it 16-bit)
        QConv2d.from_float(torch.nn.Conv2d(32, 32, 3, groups=2), LayerQuantConfig("w8a8-int8"))
