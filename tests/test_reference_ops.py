"""Every registered op: reference vs an independent float64 computation, opcheck, and errors."""
import pytest
import torch
import torch.nn.functional as F

import qengine  # noqa: F401  (registers the ops)
from qengine.formats import pack_int4, unpack_int4
from qengine.formats.w4a8_layout import prepack, unprepack
from qengine.ops import OpInputError, library

Q = torch.ops.qengine
GEN = torch.Generator().manual_seed(1234)


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=GEN).to(dtype)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------- activation quantization


def f64_quantize_rows(x, smooth, qmax):
    xs = x.double() / smooth.double() if smooth is not None else x.double()
    amax = xs.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return xs, scale


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("with_smooth", [False, True])
@pytest.mark.parametrize("rank", [0, 16])
def test_quantize_act_int8_matches_float64(dtype, with_smooth, rank):
    m, k = 37, 128
    x = randn(m, k, dtype=dtype) * 3
    smooth = (randn(k).abs() + 0.5).to(dtype) if with_smooth else None
    down = randn(rank, k, dtype=dtype) if rank else None
    q, scale, lowrank = Q.quantize_act_int8(x, smooth, down)
    xs, scale64 = f64_quantize_rows(x, smooth, 127)
    torch.testing.assert_close(scale.double(), scale64, rtol=1e-6, atol=0)
    v = xs / scale64[:, None]
    diff = (q.double() - torch.round(v).clamp(-127, 127)).abs()
    # float32 and float64 may round differently only where the value sits on a half step
    near_tie = ((v.abs() - v.abs().floor()) - 0.5).abs() < 1e-4
    assert diff.max() <= 1 and not diff[~near_tie].any()
    assert lowrank.shape == (m, rank) and lowrank.dtype == torch.float32
    if rank:
        assert rel_err(lowrank, xs @ down.double().t()) < 1e-5


def test_quantize_act_fp8_matches_float64():
    m, k = 33, 256
    x = randn(m, k, dtype=torch.bfloat16) * 10
    q, scale, _ = Q.quantize_act_fp8(x, None, None)
    xs, scale64 = f64_quantize_rows(x, None, 448)
    torch.testing.assert_close(scale.double(), scale64, rtol=1e-6, atol=0)
    assert q.dtype == torch.float8_e4m3fn
    assert rel_err(q.double() * scale64[:, None], xs) < 0.04  # 3 mantissa bits
    assert q.float().abs().amax(dim=1).eq(448).all()  # every row's absmax lands on the top code


def test_quantize_act_int4_matches_float64():
    m, k = 9, 192
    x = randn(m, k, dtype=torch.bfloat16)
    down = randn(16, k, dtype=torch.bfloat16)
    q, scale, lowrank = Q.quantize_act_int4(x, None, down)
    assert q.shape == (m, k // 2) and q.dtype == torch.uint8 and scale.shape == (m, 3)
    xg = x.double().reshape(m, 3, 64)
    scale64 = xg.abs().amax(dim=2) / 7
    torch.testing.assert_close(scale.double(), scale64, rtol=1e-6, atol=0)
    v = (xg / scale64[:, :, None]).reshape(m, k)
    diff = (unpack_int4(q).double() - torch.round(v).clamp(-8, 7)).abs()
    near_tie = ((v.abs() - v.abs().floor()) - 0.5).abs() < 1e-4
    assert diff.max() <= 1 and not diff[~near_tie].any()
    assert rel_err(lowrank, x.double() @ down.double().t()) < 1e-5


# ---------------------------------------------------------------- GEMMs


def epilogue64(acc, bias, lowrank, up):
    if lowrank is not None:
        acc = acc + lowrank.double() @ up.double().t()
    if bias is not None:
        acc = acc + bias.double()
    return acc


def operands(scheme, m, k, n, rank, group=64):
    a_scale = randn(m).abs() / 50 + 1e-3
    if scheme in ("int8", "w4a8"):
        a = torch.randint(-127, 128, (m, k), generator=GEN, dtype=torch.int8)
    elif scheme == "fp8":
        a = (randn(m, k) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    else:
        a = pack_int4(torch.randint(-8, 8, (m, k), generator=GEN, dtype=torch.int8))
        a_scale = randn(m, k // 64).abs() / 7 + 1e-3
    if scheme == "int8":
        w, w_scale = torch.randint(-127, 128, (n, k), generator=GEN, dtype=torch.int8), randn(n).abs() / 100
    elif scheme == "fp8":
        w, w_scale = (randn(n, k) * 100).clamp(-448, 448).to(torch.float8_e4m3fn), randn(n).abs() / 100
    else:
        w = pack_int4(torch.randint(-8, 8, (n, k), generator=GEN, dtype=torch.int8))
        if scheme == "w4a8":  # stored in the kernel's prepacked layout; group 0: per channel
            w = prepack(w)
        w_scale = randn(n, k // group if group else 1).abs() / 7
    bias = randn(n, dtype=torch.bfloat16)
    lowrank = randn(m, rank) if rank else None
    up = randn(n, rank, dtype=torch.bfloat16) if rank else None
    return a, a_scale, w, w_scale, bias, lowrank, up


def dequant64(scheme, t, scale, k):
    if scheme in ("int8", "fp8") or (scheme == "w4a8" and t.dtype == torch.int8):
        return t.double() * scale.double()[:, None]
    v = unpack_int4(unprepack(t) if scheme == "w4a8" else t).double()
    groups = scale.shape[1]
    return (v.reshape(v.shape[0], groups, k // groups) * scale.double()[:, :, None]).reshape(v.shape[0], k)


GEMMS = {"int8": Q.w8a8_int8_gemm, "fp8": Q.w8a8_fp8_gemm, "w4a8": Q.w4a8_gemm, "w4a4": Q.w4a4_gemm}


@pytest.mark.parametrize("scheme,group", [("int8", 0), ("fp8", 0), ("w4a8", 0), ("w4a8", 64), ("w4a8", 128),
                                          ("w4a4", 64)])
@pytest.mark.parametrize("rank", [0, 32])
def test_gemm_matches_float64(scheme, rank, group):
    m, k, n = 19, 256, 48
    a, a_scale, w, w_scale, bias, lowrank, up = operands(scheme, m, k, n, rank, group)
    y = GEMMS[scheme](a, a_scale, w, w_scale, bias, lowrank, up, torch.float32)
    ref = epilogue64(dequant64(scheme, a, a_scale, k) @ dequant64(scheme, w, w_scale, k).t(), bias, lowrank, up)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert rel_err(y, ref) < 1e-6
    y16 = GEMMS[scheme](a, a_scale, w, w_scale, None, lowrank, up, torch.bfloat16)
    assert y16.dtype == torch.bfloat16
    assert rel_err(y16, epilogue64(ref - bias.double(), None, None, None)) < 1e-2


def test_lowrank_act_in_16_bits():
    """quantize_act_{int8,fp8}(..., lowrank_dtype) rounds lowrank_act once; q and scale are those of the
    fp32 call. The W4A8 GEMM takes such a lowrank_act (its cooperative configs round to 16 bits
    anyway); the W8A8 GEMMs read fp32 only."""
    x, down = randn(8, 64, dtype=torch.bfloat16), randn(16, 64, dtype=torch.bfloat16)
    for op in (Q.quantize_act_int8, Q.quantize_act_fp8):
        q, s, lr = op(x, None, down)
        for dt in (torch.bfloat16, torch.float16, torch.float32):
            q2, s2, lr2 = op(x, None, down, dt)
            assert torch.equal(q2.view(torch.uint8), q.view(torch.uint8)) and torch.equal(s2, s)
            assert lr2.dtype == dt and torch.equal(lr2, lr.to(dt))
        with pytest.raises(OpInputError, match="lowrank_dtype must be"):
            op(x, None, down, torch.int8)
    a, a_scale, w, w_scale, bias, lowrank, up = operands("w4a8", 19, 256, 48, 32, 0)
    y = Q.w4a8_gemm(a, a_scale, w, w_scale, bias, lowrank.bfloat16(), up, torch.float32)
    assert torch.equal(y, Q.w4a8_gemm(a, a_scale, w, w_scale, bias, lowrank.bfloat16().float(), up, torch.float32))
    a, a_scale, w, w_scale, bias, lowrank, up = operands("int8", 19, 256, 48, 32)
    with pytest.raises(OpInputError, match="lowrank_act must have dtype"):
        Q.w8a8_int8_gemm(a, a_scale, w, w_scale, bias, lowrank.bfloat16(), up, torch.bfloat16)


# ---------------------------------------------------------------- conv2d


@pytest.mark.parametrize("op,qmax", [(Q.w8a8_int8_conv2d, 127), (Q.w8a8_fp8_conv2d, 448)])
@pytest.mark.parametrize("stride,padding,ksize", [(1, 1, 3), (2, 1, 3), (1, 0, 1)])
@pytest.mark.parametrize("static", [False, True])
def test_conv2d_matches_float64(op, qmax, stride, padding, ksize, static):
    b, h, wd, c, o = 2, 9, 7, 32, 24
    x = randn(b, h, wd, c, dtype=torch.bfloat16)
    wq = torch.randint(-127, 128, (o, ksize, ksize, c), generator=GEN, dtype=torch.int8)
    if qmax == 448:
        wq = (randn(o, ksize, ksize, c) * 100).to(torch.float8_e4m3fn)
    w_scale = randn(o).abs() / 100
    bias = randn(o, dtype=torch.bfloat16)
    x_scale = torch.tensor([0.02]) if static else None
    y = op(x, wq, w_scale, bias, x_scale, [stride] * 2, [padding] * 2, [1, 1])
    # float64: one absmax scale for the whole tensor (or the static one), round, dequantize, convolve
    ref = F.conv2d(dequant_conv_input64(x, qmax, 0.02 if static else None).permute(0, 3, 1, 2),
                   conv_weight64(wq, w_scale), bias.double(), stride, padding).permute(0, 2, 3, 1)
    assert y.shape == ref.shape and y.dtype == torch.bfloat16
    assert rel_err(y, ref) < 1e-2  # bf16 output rounding


def dequant_conv_input64(x, qmax, static_scale):
    xs = x.double()
    scale = xs.abs().amax() / qmax if static_scale is None else torch.tensor(static_scale, dtype=torch.float64)
    if qmax == 127:
        xq = torch.round(xs / scale).clamp(-127, 127)
    else:
        xq = (xs / scale).clamp(-448, 448).float().to(torch.float8_e4m3fn).double()
    return xq * scale


def conv_weight64(wq, w_scale):
    return (wq.double() * w_scale.double()[:, None, None, None]).permute(0, 3, 1, 2)


@pytest.mark.parametrize("op,qmax", [(Q.w8a8_int8_conv2d, 127), (Q.w8a8_fp8_conv2d, 448)])
@pytest.mark.parametrize("static", [False, True])
def test_conv2d_split_shortcut_and_residual(op, qmax, static):
    """concat([x, x2]) with a scale per half, plus a residual; the halves' ranges differ 300x."""
    b, h, wd, c1, c2, o = 2, 7, 5, 32, 16, 24
    x = randn(b, h, wd, c1, dtype=torch.bfloat16) * 30
    x2 = randn(b, h, wd, c2, dtype=torch.bfloat16) / 10
    wq = torch.randint(-127, 128, (o, 3, 3, c1 + c2), generator=GEN, dtype=torch.int8)
    if qmax == 448:
        wq = (randn(o, 3, 3, c1 + c2) * 100).to(torch.float8_e4m3fn)
    w_scale = randn(o).abs() / 100
    residual = randn(b, h, wd, o, dtype=torch.bfloat16)
    s1, s2 = (0.75, 0.003) if static else (None, None)
    sx, sx2 = (None if s is None else torch.tensor([s]) for s in (s1, s2))
    y = op(x, wq, w_scale, None, sx, [1, 1], [1, 1], [1, 1], x2=x2, x2_scale=sx2, residual=residual)
    xd = torch.cat([dequant_conv_input64(x, qmax, s1), dequant_conv_input64(x2, qmax, s2)], dim=3)
    ref = F.conv2d(xd.permute(0, 3, 1, 2), conv_weight64(wq, w_scale), None, 1, 1).permute(0, 2, 3, 1)
    assert rel_err(y, ref + residual.double()) < 1e-2
    # Only the small half reaches the output: with one shared scale INT8 would flush it to ~0.
    w_small = wq.clone()
    w_small[..., :c1] = 0
    y2 = op(x, w_small, w_scale, None, sx, [1, 1], [1, 1], [1, 1], x2=x2, x2_scale=sx2)
    ref2 = F.conv2d(xd.permute(0, 3, 1, 2), conv_weight64(w_small, w_scale), None, 1, 1).permute(0, 2, 3, 1)
    assert rel_err(y2, ref2) < 1e-2


def test_conv2d_rejects_bad_split_args():
    x = randn(1, 4, 4, 16, dtype=torch.bfloat16)
    w = torch.zeros(8, 1, 1, 32, dtype=torch.int8)
    with pytest.raises(OpInputError, match="x2_scale is given without x2"):
        Q.w8a8_int8_conv2d(x, w[..., :16].contiguous(), torch.ones(8), None, None, [1, 1], [0, 0], [1, 1],
                           x2_scale=torch.ones(1))
    with pytest.raises(OpInputError, match="x2 must have shape"):
        Q.w8a8_int8_conv2d(x, w, torch.ones(8), None, None, [1, 1], [0, 0], [1, 1], x2=randn(1, 4, 5, 16,
                                                                                           dtype=torch.bfloat16))
    with pytest.raises(OpInputError, match="residual must have shape"):
        Q.w8a8_int8_conv2d(x, w, torch.ones(8), None, None, [1, 1], [0, 0], [1, 1], x2=x,
                           residual=randn(1, 4, 4, 4, dtype=torch.bfloat16))


# ---------------------------------------------------------------- registration


def sample_args():
    x = randn(8, 64, dtype=torch.bfloat16)
    smooth = randn(64, dtype=torch.bfloat16).abs() + 0.5
    down = randn(16, 64, dtype=torch.bfloat16)
    cases = {
        "quantize_act_int8": (x, smooth, down),
        "quantize_act_fp8": (x, None, down, torch.bfloat16),
        "quantize_act_int4": (x, smooth, down),
        "quantize_act_fp8_lowrank_cat": (x, smooth, down, randn(16).abs() * 1e-2),
        "quantize_act_fp8_lowrank_cat_from": (x, smooth, randn(8, 16), randn(16).abs() * 1e-2),
        "quantize_act_int8_gelu_cat": (x[:, :16].contiguous(), x[:, 16:].contiguous(), smooth),
        "quantize_act_fp8_gelu_cat": (None, x, None),
        "quantize_act_int8_gelu_cat_lowrank": (x[:, :16].contiguous(), x[:, 16:].contiguous(), smooth, down),
        "quantize_act_fp8_gelu_cat_lowrank": (None, x, None, down),
        "quantize_act_fp8_gelu_cat_lowrank_cat": (x[:, :32].contiguous(), x[:, 32:].contiguous(), smooth, down,
                                                  randn(16).abs() * 1e-2),
        "quantize_act_int8_geglu": (x, smooth[:32].contiguous()),
        "quantize_act_fp8_geglu": (x, None),
        "layer_norm_quant_int8": (x, smooth, randn(64, dtype=torch.bfloat16), 1e-5, smooth),
        "layer_norm_quant_fp8": (x, None, None, 1e-6, None),
    }
    for name, scheme in (("w8a8_int8_gemm", "int8"), ("w8a8_fp8_gemm", "fp8"), ("w4a8_gemm", "w4a8"),
                         ("w4a4_gemm", "w4a4")):
        cases[name] = (*operands(scheme, 8, 128, 32, 16, 0 if scheme == "w4a8" else 64), torch.bfloat16)
    xc = randn(1, 6, 6, 16, dtype=torch.bfloat16)
    cases["w8a8_int8_conv2d"] = (xc, torch.randint(-127, 128, (8, 3, 3, 32), dtype=torch.int8), randn(8).abs(),
                                 None, None, [1, 1], [1, 1], [1, 1], randn(1, 6, 6, 16, dtype=torch.bfloat16),
                                 torch.tensor([0.05]), randn(1, 6, 6, 8, dtype=torch.bfloat16))
    cases["w8a8_fp8_conv2d"] = (xc, randn(8, 1, 1, 16).to(torch.float8_e4m3fn), randn(8).abs(),
                                randn(8, dtype=torch.bfloat16), torch.tensor([0.1]), [2, 2], [0, 0], [1, 1])
    # fused norm ops (reference_norms.py): q/k norm + rope with a text prefix; NHWC GroupNorm + SiLU
    cases["rmsnorm_rope"] = (randn(1, 6, 2, 64, dtype=torch.bfloat16), randn(64, dtype=torch.bfloat16),
                             randn(9, 64), randn(9, 64), 1e-6, randn(1, 3, 2, 64, dtype=torch.bfloat16),
                             randn(64, dtype=torch.bfloat16))
    xg = randn(2, 32, 5, 3, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    cases["group_norm_nhwc"] = (xg, 8, randn(32, dtype=torch.bfloat16), randn(32, dtype=torch.bfloat16), 1e-5, True,
                                randn(2, 32, dtype=torch.bfloat16))
    # GroupNorm + SiLU writing a conv's 8-bit input (qengine/nn/fused_resnet.py)
    cases["group_norm_quant_int8"] = (xg, 8, randn(32, dtype=torch.bfloat16), None, 1e-5, True,
                                      randn(2, 32, dtype=torch.bfloat16), torch.tensor([0.02]))
    cases["group_norm_quant_fp8"] = (xg, 4, None, randn(32, dtype=torch.bfloat16), 1e-6, False, None,
                                     torch.tensor([0.004]))
    return cases


def test_every_op_has_a_sample():
    assert set(sample_args()) == set(library.SCHEMAS)


@pytest.mark.parametrize("name", list(library.SCHEMAS))
def test_opcheck(name):
    args = sample_args()[name]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in args):
        # SchemaCheckMode multiplies inputs to detect aliasing, and CPU has no float8 mul.
        tests = tests[1:]
    torch.library.opcheck(getattr(Q, name).default, args, test_utils=tests)


@pytest.mark.parametrize("name", list(library.SCHEMAS))
def test_fake_kernel_matches_real_shapes(name):
    args = sample_args()[name]
    real = getattr(Q, name)(*args)
    meta_args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    fake = getattr(Q, name)(*meta_args)
    real, fake = (real, fake) if isinstance(real, tuple) else ((real,), (fake,))
    assert [(t.shape, t.dtype) for t in real] == [(t.shape, t.dtype) for t in fake]


def test_cuda_without_kernel_fails_loudly():
    # On a build with no qengine._C every op gets a CUDA kernel that raises, naming the op.
    assert set(qengine.ops.MISSING_CUDA_KERNELS) <= set(library.SCHEMAS)
    for name in qengine.ops.MISSING_CUDA_KERNELS:
        assert library.has_cuda_kernel(name)
    with pytest.raises(NotImplementedError, match="w8a8_fp8_gemm has no CUDA kernel.*backend='reference'"):
        library._no_cuda_kernel("w8a8_fp8_gemm", "")(torch.zeros(1))


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    x = randn(4, 64, dtype=torch.bfloat16)
    with pytest.raises(OpInputError, match=r"quantize_act_int8: x must have dtype"):
        Q.quantize_act_int8(x.to(torch.int32), None, None)
    with pytest.raises(OpInputError, match=r"K=40 is not supported.*multiple of 16"):
        Q.quantize_act_int8(randn(4, 40), None, None)
    with pytest.raises(OpInputError, match=r"K=96 is not supported.*multiple of 64"):
        Q.quantize_act_int4(randn(4, 96), None, None)
    with pytest.raises(OpInputError, match=r"smooth must have shape \[64\]"):
        Q.quantize_act_fp8(x, torch.ones(32, dtype=torch.bfloat16), None)
    with pytest.raises(OpInputError, match="must be contiguous"):
        Q.quantize_act_fp8(randn(64, 4, dtype=torch.bfloat16).t(), None, None)
    a, a_scale, w, w_scale, bias, lowrank, up = operands("int8", 4, 64, 16, 16)
    with pytest.raises(OpInputError, match=r"w must have shape \[\*, 64\]"):
        Q.w8a8_int8_gemm(a, a_scale, w[:, :32].contiguous(), w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(OpInputError, match=r"a_scale must have shape \[4\]"):
        Q.w8a8_int8_gemm(a, a_scale[:2], w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(OpInputError, match="lowrank_act and lora_up must be given together"):
        Q.w8a8_int8_gemm(a, a_scale, w, w_scale, bias, lowrank, None, torch.bfloat16)
    with pytest.raises(OpInputError, match="out_dtype must be one of"):
        Q.w8a8_int8_gemm(a, a_scale, w, w_scale, bias, None, None, torch.int32)
    with pytest.raises(OpInputError, match=r"a must have dtype torch.float8_e4m3fn"):
        Q.w8a8_fp8_gemm(a, a_scale, w, w_scale, bias, None, None, torch.bfloat16)
    with pytest.raises(OpInputError, match="w_scale is on meta but the other operands are on cpu"):
        Q.w8a8_int8_gemm(a, a_scale, w, w_scale.to("meta"), bias, None, None, torch.bfloat16)
    a4, s4, w4, ws4, *_ = operands("w4a8", 4, 128, 16, 0)
    with pytest.raises(OpInputError, match=r"group size must be one of \(64, 128\) or one group"):
        Q.w4a8_gemm(a4, s4, w4, ws4[:, :1].repeat(1, 4).contiguous(), None, None, None, torch.bfloat16)
    a4, s4, w4, ws4, *_ = operands("w4a8", 4, 128, 16, 0, 0)
    with pytest.raises(OpInputError, match=r"N=8 \(rows of w\) must be a multiple of 16"):
        Q.w4a8_gemm(a4, s4, w4[:8], ws4[:8], None, None, None, torch.bfloat16)
    xc = randn(1, 6, 6, 16, dtype=torch.bfloat16)
    wc = torch.zeros(8, 3, 3, 16, dtype=torch.int8)
    with pytest.raises(OpInputError, match=r"stride must be two integers >= 1"):
        Q.w8a8_int8_conv2d(xc, wc, torch.ones(8), None, None, [0, 1], [1, 1], [1, 1])
    with pytest.raises(OpInputError, match=r"too small for a 3x3 kernel"):
        Q.w8a8_int8_conv2d(randn(1, 1, 1, 16), wc, torch.ones(8), None, None, [1, 1], [0, 0], [1, 1])
