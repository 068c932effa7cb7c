"""Pure-PyTorch float32 reference of every qengine op.

This is the CPU kernel of each ``torch.ops.qengine.*`` op and the oracle the CUDA kernels are
tested against. The math is float32 throughout (integer dot products are formed in float32,
which is exact while partial sums stay below 2**24 and otherwise rounds like any float32 GEMM);
outputs are cast to ``out_dtype`` once at the end.

Shapes (M tokens, K input features, N output features, r low-rank rank, G weight group size):

  quantize_act_{int8,fp8}(x [M,K], smooth [K]?, lora_down [r,K]?, lowrank_dtype?)
      -> q [M,K] int8|float8_e4m3fn, scale [M] f32, lowrank_act [M,r] f32 ([M,0] without lora_down;
         lowrank_dtype bf16/fp16: rounded to it once, e.g. for the W4A8 GEMM, which takes it so)
  quantize_act_fp8_lowrank_cat(x [M,K], smooth [K]?, lora_down [r,K], inv_c [r] f32)
      -> q [M,K+W] float8_e4m3fn, scale [M] f32   (qengine.formats.lowrank_cat: the branch rides in
         the FP8 GEMM's K; W = 3r rounded up to 128; the weight is lowrank_cat_weight's [N,K+W])
  quantize_act_fp8_lowrank_cat_from(x [M,K], smooth [K]?, lowrank [M,r] f32, inv_c [r] f32)
      -> the same, with the product (x / smooth) @ lora_down^T given
  quantize_act_{int8,fp8}_gelu_cat(x [M,Kx]?, gelu_x [M,Kg], smooth [Kx+Kg]?)
      -> q [M,Kx+Kg], scale [M]: quantize_act_* of cat([x, gelu_tanh(gelu_x)]) (16-bit inputs; the
         CUDA kernel reads both in place, e.g. FLUX's attention output and proj_mlp's pre-activation)
  quantize_act_{int8,fp8}_gelu_cat_lowrank(x [M,Kx]?, gelu_x [M,Kg], smooth?, lora_down [r,Kx+Kg], lowrank_dtype?)
      -> q, scale, lowrank_act [M,r] f32: quantize_act_* of the same rows with lora_down
  quantize_act_fp8_gelu_cat_lowrank_cat(x [M,Kx]?, gelu_x [M,Kg], smooth?, lora_down [r,K], inv_c [r])
      -> q [M,K+W], scale [M]: quantize_act_fp8_lowrank_cat of the same rows
  quantize_act_{int8,fp8}_geglu(proj [M,2K], smooth [K]?)
      -> q [M,K], scale [M]: quantize_act_* of h * gelu(gate), [h | gate] = proj (diffusers' GEGLU,
         erf GELU, each step rounded to proj's 16-bit dtype; the CUDA kernel never writes it out)
  layer_norm_quant_{int8,fp8}(x [M,C], weight [C]?, bias [C]?, eps, smooth [C]?)
      -> q [M,C], scale [M]: quantize_act_* of F.layer_norm(x) in x's dtype (16-bit x, C <= 4096; the
         CUDA kernel never writes the normalized rows, and its mean / rstd round differently from
         torch's: an element may differ by one unit in the last place of x's dtype)
  quantize_act_int4(x [M,K], smooth?, lora_down?)
      -> q [M,K/2] uint8 (packed), scale [M,K/64] f32, lowrank_act [M,r] f32
  w8a8_{int8,fp8}_gemm(a [M,K], a_scale [M], w [N,K], w_scale [N], bias [N]?,
                       lowrank_act [M,r]?, lora_up [N,r]?, out_dtype) -> y [M,N]
  w4a8_gemm(a [M,K] int8, a_scale [M], w [N,K/2] uint8 prepacked, w_scale [N,K/G], ...) -> y [M,N]
      (w in the layout of w4a8_prepack; G = K, i.e. w_scale [N,1], is per output channel)
  w4a8_prepack(w [N,K/2] uint8 pack_int4 layout) -> [N,K/2] uint8; w4a8_unprepack: the inverse
  w4a4_gemm(a [M,K/2] uint8, a_scale [M,K/64], w [N,K/2] uint8, w_scale [N,K/64], ...) -> y [M,N]
  w8a8_{int8,fp8}_conv2d(x [B,H,W,C1] float (NHWC), w [O,kh,kw,C], w_scale [O], bias [O]?,
                         x_scale [1]?, stride, padding, dilation, x2 [B,H,W,C2]?, x2_scale [1]?,
                         residual [B,Ho,Wo,O]?) -> y [B,Ho,Wo,O] in x.dtype   (C = C1 + C2)

``y = (a * a_scale) @ (w * w_scale)^T + lowrank_act @ lora_up^T + bias``. Activations are
smoothed as ``x / smooth`` before quantization and before the low-rank down-projection
``lowrank_act = (x / smooth) @ lora_down^T``.

Conv: ``y = conv(concat([Q(x), Q(x2)], channels), w * w_scale) + bias + residual``. Activations get
ONE scale per tensor: the static ``x_scale`` (calibrated) or, without it, the dynamic
``absmax(x) / QMAX`` over the whole tensor (all images). A scale must be shared by every pixel
the kernel window sums over (per-pixel scales do not factor out of the implicit GEMM's K sum);
one per tensor also lets the CUDA kernel take it as a scalar epilogue operand. ``x2`` (the
skip half of a UNet up-block concat, "split shortcut") is quantized with its own scale
``x2_scale`` or its own dynamic absmax, so a small-range half keeps its resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats import Format, INT4_ACT_GROUP_SIZE, dequantize_groups, pack_int4, quantize_groups, quantize_rows, unpack_int4
from ..formats import w4a8_layout
from ..formats.lowrank_cat import LOWRANK_CAT_MAX_RANK, lowrank_cat_activation
from ..formats.quantizers import absmax_scale, round_to_format
from . import checks
from .checks import FLOAT_ACT_DTYPES

# ---------------------------------------------------------------- activation quantization


_QUANT_K_MULTIPLE = {"quantize_act_int8": 16, "quantize_act_fp8": 16, "quantize_act_fp8_lowrank_cat": 16,
                     "quantize_act_fp8_lowrank_cat_from": 16,
                     "quantize_act_int8_static": 16, "quantize_act_fp8_static": 16,
                     "quantize_act_int4": INT4_ACT_GROUP_SIZE}


def check_quantize_args(op, x, smooth, lora_down):
    """Validate an activation quantization's operands (metadata only); returns ``(M, K, r)``."""
    checks.check_tensor(op, "x", x, dtypes=FLOAT_ACT_DTYPES, shape=(None, None))
    m, k = x.shape
    checks.check_k(op, k, _QUANT_K_MULTIPLE[op])
    checks.check_smooth_and_down(op, k, smooth, lora_down, x.device)
    return m, k, 0 if lora_down is None else lora_down.shape[0]


def _smoothed(x, smooth):
    xf = x.float()
    return xf if smooth is None else xf / smooth.float()


def _smoothed_and_lowrank(op, x, smooth, lora_down, lowrank_dtype=None):
    m, _, _ = check_quantize_args(op, x, smooth, lora_down)
    out_dtype = checks.check_lowrank_dtype(op, lowrank_dtype)
    xf = _smoothed(x, smooth)
    if lora_down is not None:
        lowrank = xf @ lora_down.float().t()
    else:
        lowrank = xf.new_empty(m, 0)
    return xf, lowrank.to(out_dtype)


def quantize_act_int8(x, smooth=None, lora_down=None, lowrank_dtype=None):
    xf, lowrank = _smoothed_and_lowrank("quantize_act_int8", x, smooth, lora_down, lowrank_dtype)
    q, scale = quantize_rows(xf, Format.INT8)
    return q, scale, lowrank


def quantize_act_fp8(x, smooth=None, lora_down=None, lowrank_dtype=None):
    xf, lowrank = _smoothed_and_lowrank("quantize_act_fp8", x, smooth, lora_down, lowrank_dtype)
    q, scale = quantize_rows(xf, Format.FP8_E4M3)
    return q, scale, lowrank


def check_quantize_static_args(op, x, smooth, scale):
    """Validate a static-scale quantization's operands (metadata only); returns ``(M, K)``."""
    m, k, _ = check_quantize_args(op, x, smooth, None)
    checks.check_tensor(op, "scale", scale, dtypes=(torch.float32,), shape=(1,), device=x.device)
    return m, k


def quantize_act_static(x, smooth, scale, fmt: Format):
    """``round_to_format((x / smooth) / scale)`` with one static (calibrated) ``scale [1]`` for the
    whole tensor: ``q [M, K]``. Its dequantization scale is ``scale`` for every token. Pure torch
    ops, so under torch.compile inductor fuses it into the kernel producing ``x``; the divisions
    are by tensors (IEEE division on every backend), and qengine's calibrated FP8 scales are powers
    of two (:func:`qengine.calib.static_scales.static_scale`), which makes the division exact."""
    op = "quantize_act_int8_static" if fmt is Format.INT8 else "quantize_act_fp8_static"
    check_quantize_static_args(op, x, smooth, scale)
    return round_to_format(_smoothed(x, smooth) / scale, fmt)


def check_quantize_gelu_cat_args(op, x, gelu_x, smooth):
    """Validate a gelu-cat quantization's operands (metadata only); returns ``(M, K)``, K = Kx + Kg."""
    checks.check_tensor(op, "gelu_x", gelu_x, dtypes=(torch.bfloat16, torch.float16), shape=(None, None))
    m, kg = gelu_x.shape
    kx = 0
    if x is not None:
        checks.check_tensor(op, "x", x, dtypes=(gelu_x.dtype,), shape=(m, None), device=gelu_x.device)
        kx = x.shape[1]
    if kg <= 0 or kg % 16 or kx % 16:
        checks._fail(op, f"the columns of x ({kx}) and gelu_x ({kg}) must be multiples of 16, gelu_x's positive")
    checks.check_smooth_and_down(op, kx + kg, smooth, None, gelu_x.device)
    return m, kx + kg


def gelu_cat_input(x, gelu_x):
    """The rows the gelu-cat ops quantize: ``cat([x, gelu_tanh(gelu_x)], 1)`` in gelu_x's dtype (the
    gelu rounded to it, as a separate ``F.gelu`` would)."""
    g = F.gelu(gelu_x, approximate="tanh")
    return g if x is None else torch.cat([x, g], dim=1)


def quantize_act_int8_gelu_cat(x, gelu_x, smooth=None):
    check_quantize_gelu_cat_args("quantize_act_int8_gelu_cat", x, gelu_x, smooth)
    return quantize_rows(_smoothed(gelu_cat_input(x, gelu_x), smooth), Format.INT8)


def quantize_act_fp8_gelu_cat(x, gelu_x, smooth=None):
    check_quantize_gelu_cat_args("quantize_act_fp8_gelu_cat", x, gelu_x, smooth)
    return quantize_rows(_smoothed(gelu_cat_input(x, gelu_x), smooth), Format.FP8_E4M3)


def check_quantize_gelu_cat_lowrank_args(op, x, gelu_x, smooth, lora_down, inv_c=None):
    """Validate a gelu-cat quantization with the low-rank down-projection (metadata only); returns
    ``(M, K, r)``. ``inv_c`` given: the FP8 low-rank-cat variant's rank rules apply."""
    m, k = check_quantize_gelu_cat_args(op, x, gelu_x, smooth)
    checks.check_tensor(op, "lora_down", lora_down, dtypes=FLOAT_ACT_DTYPES, shape=(None, k), device=gelu_x.device)
    r = lora_down.shape[0]
    if inv_c is not None:
        _check_cat_rank(op, "rows of lora_down", r, inv_c, gelu_x.device)
    return m, k, r


def _gelu_cat_lowrank(op, x, gelu_x, smooth, lora_down, fmt, lowrank_dtype):
    check_quantize_gelu_cat_lowrank_args(op, x, gelu_x, smooth, lora_down)
    out_dtype = checks.check_lowrank_dtype(op, lowrank_dtype)
    xf = _smoothed(gelu_cat_input(x, gelu_x), smooth)
    q, scale = quantize_rows(xf, fmt)
    return q, scale, (xf @ lora_down.float().t()).to(out_dtype)


def quantize_act_int8_gelu_cat_lowrank(x, gelu_x, smooth, lora_down, lowrank_dtype=None):
    """:func:`quantize_act_int8_gelu_cat` plus the low-rank down-projection of the same rows:
    ``(q, scale, lowrank_act [M, r] f32)``, equal to ``quantize_act_int8`` of the concatenation
    with ``lora_down`` (the CUDA op runs torch's GELU, then the tile kernel reads x and the GELU
    output in place: no concatenation)."""
    return _gelu_cat_lowrank("quantize_act_int8_gelu_cat_lowrank", x, gelu_x, smooth, lora_down, Format.INT8,
                             lowrank_dtype)


def quantize_act_fp8_gelu_cat_lowrank(x, gelu_x, smooth, lora_down, lowrank_dtype=None):
    """The FP8 twin of :func:`quantize_act_int8_gelu_cat_lowrank`."""
    return _gelu_cat_lowrank("quantize_act_fp8_gelu_cat_lowrank", x, gelu_x, smooth, lora_down, Format.FP8_E4M3,
                             lowrank_dtype)


def quantize_act_fp8_gelu_cat_lowrank_cat(x, gelu_x, smooth, lora_down, inv_c):
    """:func:`quantize_act_fp8_lowrank_cat` of the rows ``cat([x, gelu_tanh(gelu_x)], 1)``, read in
    place: ``(q [M, K + W], scale [M])``."""
    op = "quantize_act_fp8_gelu_cat_lowrank_cat"
    check_quantize_gelu_cat_lowrank_args(op, x, gelu_x, smooth, lora_down, inv_c)
    xf = _smoothed(gelu_cat_input(x, gelu_x), smooth)
    return lowrank_cat_quantize(xf, xf @ lora_down.float().t(), inv_c)


def check_quantize_geglu_args(op, proj, smooth):
    """Validate a GEGLU quantization's operands (metadata only); returns ``(M, K)``, proj [M, 2K]."""
    checks.check_tensor(op, "proj", proj, dtypes=(torch.bfloat16, torch.float16), shape=(None, None))
    m, k2 = proj.shape
    if k2 <= 0 or k2 % 32:
        checks._fail(op, f"proj has {k2} columns: GEGLU input needs a positive multiple of 32 (two halves of a "
                         "multiple of 16)")
    checks.check_smooth_and_down(op, k2 // 2, smooth, None, proj.device)
    return m, k2 // 2


def geglu_input(proj):
    """The rows the GEGLU ops quantize: diffusers' ``GEGLU`` after its projection,
    ``h * F.gelu(gate)`` with ``h, gate = proj.chunk(2, -1)``, in proj's dtype."""
    h, gate = proj.chunk(2, dim=-1)
    return h * F.gelu(gate)


def quantize_act_int8_geglu(proj, smooth=None):
    check_quantize_geglu_args("quantize_act_int8_geglu", proj, smooth)
    return quantize_rows(_smoothed(geglu_input(proj), smooth), Format.INT8)


def quantize_act_fp8_geglu(proj, smooth=None):
    check_quantize_geglu_args("quantize_act_fp8_geglu", proj, smooth)
    return quantize_rows(_smoothed(geglu_input(proj), smooth), Format.FP8_E4M3)


LAYER_NORM_QUANT_MAX_C = 4096  # csrc/include/qengine/layer_norm_quant.h: a row in one warp's registers


def check_layer_norm_quant_args(op, x, weight, bias, eps, smooth):
    """Validate a LayerNorm + quantization's operands (metadata only); returns ``(M, C)``."""
    checks.check_tensor(op, "x", x, dtypes=(torch.bfloat16, torch.float16), shape=(None, None))
    m, c = x.shape
    if c <= 0 or c % 16 or c > LAYER_NORM_QUANT_MAX_C:
        checks._fail(op, f"C={c} is not supported: the normalized dimension must be a positive multiple of 16, at "
                         f"most {LAYER_NORM_QUANT_MAX_C}")
    if not eps >= 0:
        checks._fail(op, f"eps must be >= 0, got {eps}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            checks.check_tensor(op, name, t, dtypes=(x.dtype,), shape=(c,), device=x.device)
    checks.check_smooth_and_down(op, c, smooth, None, x.device)
    return m, c


def layer_norm_quant_int8(x, weight, bias, eps, smooth=None):
    check_layer_norm_quant_args("layer_norm_quant_int8", x, weight, bias, eps, smooth)
    return quantize_rows(_smoothed(F.layer_norm(x, (x.shape[1],), weight, bias, eps), smooth), Format.INT8)


def layer_norm_quant_fp8(x, weight, bias, eps, smooth=None):
    check_layer_norm_quant_args("layer_norm_quant_fp8", x, weight, bias, eps, smooth)
    return quantize_rows(_smoothed(F.layer_norm(x, (x.shape[1],), weight, bias, eps), smooth), Format.FP8_E4M3)


def check_quantize_lowrank_cat_args(op, x, smooth, lora_down, inv_c):
    """Validate the FP8 low-rank-cat quantization's operands (metadata only); returns ``(M, K, r)``."""
    m, k, r = check_quantize_args(op, x, smooth, lora_down)
    _check_cat_rank(op, "rows of lora_down", r, inv_c, x.device)
    return m, k, r


def _check_cat_rank(op, what, r, inv_c, device):
    if r == 0 or r % 16 or r > LOWRANK_CAT_MAX_RANK:
        checks._fail(op, f"the rank ({what}) must be a multiple of 16 in 16..{LOWRANK_CAT_MAX_RANK}, got {r}")
    checks.check_tensor(op, "inv_c", inv_c, dtypes=(torch.float32,), shape=(r,), device=device)


def quantize_act_fp8_lowrank_cat(x, smooth, lora_down, inv_c):
    """FP8 quantization with the low-rank branch appended along K (qengine.formats.lowrank_cat).

    Returns ``(q [M, K + W] float8_e4m3fn, scale [M] f32)``: ``q[:, :K]`` quantizes ``x / smooth``
    with the token scale ``max(absmax, max_j |lr_j * inv_c_j|) / 448``, ``q[:, K:]`` holds the
    branch's ``[hi | lo | hi (| lo) | 0]`` columns for a weight built by ``lowrank_cat_weight``
    (W and the term count: ``lowrank_cat_layout``).
    """
    check_quantize_lowrank_cat_args("quantize_act_fp8_lowrank_cat", x, smooth, lora_down, inv_c)
    xf = _smoothed(x, smooth)
    return lowrank_cat_quantize(xf, xf @ lora_down.float().t(), inv_c)


def check_quantize_lowrank_cat_from_args(op, x, smooth, lowrank, inv_c):
    """Validate the given-product variant's operands (metadata only); returns ``(M, K, r)``."""
    m, k, _ = check_quantize_args(op, x, smooth, None)
    checks.check_tensor(op, "lowrank", lowrank, dtypes=(torch.float32,), shape=(m, None), device=x.device)
    r = lowrank.shape[1]
    _check_cat_rank(op, "columns of lowrank", r, inv_c, x.device)
    return m, k, r


def quantize_act_fp8_lowrank_cat_from(x, smooth, lowrank, inv_c):
    """:func:`quantize_act_fp8_lowrank_cat` with the low-rank product ``lowrank [M, r]`` (float32,
    ``(x / smooth) @ lora_down^T``) given instead of computed: the CUDA op is the one-pass row
    kernel, for callers that compute the product with a GEMM library."""
    check_quantize_lowrank_cat_from_args("quantize_act_fp8_lowrank_cat_from", x, smooth, lowrank, inv_c)
    return lowrank_cat_quantize(_smoothed(x, smooth), lowrank, inv_c)


def lowrank_cat_quantize(xf, lowrank, inv_c):
    """The cat quantization of the smoothed input ``xf [M, K]`` given its low-rank product
    ``lowrank [M, r]`` (both float32): ``(q [M, K + W], scale [M])``. The CUDA kernel is bit-exact
    with this given the same ``lowrank`` (its own tensor-core product; the GPU tests pass that in)."""
    v = lowrank * inv_c.float()[None, :]
    amax = torch.maximum(xf.abs().amax(dim=1), v.abs().amax(dim=1))
    scale = absmax_scale(amax, Format.FP8_E4M3)
    q = round_to_format(xf / scale[:, None], Format.FP8_E4M3)
    return torch.cat([q, lowrank_cat_activation(v, scale)], dim=1), scale


def quantize_act_int4(x, smooth=None, lora_down=None):
    xf, lowrank = _smoothed_and_lowrank("quantize_act_int4", x, smooth, lora_down)
    q, scale = quantize_groups(xf, Format.INT4, INT4_ACT_GROUP_SIZE)
    return pack_int4(q), scale, lowrank


# ---------------------------------------------------------------- GEMMs

_GEMM_A_DTYPE = {"w8a8_int8_gemm": torch.int8, "w8a8_fp8_gemm": torch.float8_e4m3fn, "w4a8_gemm": torch.int8,
                 "w4a4_gemm": torch.uint8}


def check_gemm_args(op, a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype):
    """Validate a GEMM's operands (metadata only); returns ``(M, K, N)``."""
    checks.check_tensor(op, "a", a, dtypes=(_GEMM_A_DTYPE[op],), shape=(None, None))
    dev = a.device
    if op == "w4a4_gemm":
        m, k = a.shape[0], a.shape[1] * 2
        checks.check_k(op, k, INT4_ACT_GROUP_SIZE)
        checks.check_tensor(op, "a_scale", a_scale, dtypes=(torch.float32,), shape=(m, k // INT4_ACT_GROUP_SIZE),
                            device=dev)
    else:
        m, k = a.shape
        checks.check_k(op, k, 32 if op == "w4a8_gemm" else 16)
        checks.check_tensor(op, "a_scale", a_scale, dtypes=(torch.float32,), shape=(m,), device=dev)
    if op in ("w4a8_gemm", "w4a4_gemm"):
        checks.check_tensor(op, "w", w, dtypes=(torch.uint8,), shape=(None, k // 2), device=dev)
        n = w.shape[0]
        checks.check_tensor(op, "w_scale", w_scale, dtypes=(torch.float32,), shape=(n, None), device=dev)
        groups = w_scale.shape[1]
        sizes = (64, 128) if op == "w4a8_gemm" else (INT4_ACT_GROUP_SIZE,)
        per_channel = op == "w4a8_gemm" and groups == 1
        if not per_channel and (groups == 0 or k % groups or k // groups not in sizes):
            extra = " or one group (w_scale [N, 1], per output channel)" if op == "w4a8_gemm" else ""
            checks._fail(op, f"w_scale has {groups} groups for K={k}; the group size must be one of {sizes}{extra}")
        if op == "w4a8_gemm" and n % 16:
            checks._fail(op, f"N={n} (rows of w) must be a multiple of 16 (the prepacked weight layout)")
    else:
        checks.check_tensor(op, "w", w, dtypes=(_GEMM_A_DTYPE[op],), shape=(None, k), device=dev)
        n = w.shape[0]
        checks.check_tensor(op, "w_scale", w_scale, dtypes=(torch.float32,), shape=(n,), device=dev)
    checks.check_bias(op, n, bias, dev)
    # W4A8 also takes lowrank_act already rounded to 16 bits (the cooperative configs use it so)
    act_dtypes = FLOAT_ACT_DTYPES if op == "w4a8_gemm" else (torch.float32,)
    checks.check_lowrank(op, m, n, lowrank_act, lora_up, dev, act_dtypes)
    checks.check_out_dtype(op, out_dtype)
    return m, k, n


def _epilogue(acc, bias, lowrank_act, lora_up, out_dtype):
    if lowrank_act is not None:
        acc = acc + lowrank_act.float() @ lora_up.float().t()
    if bias is not None:
        acc = acc + bias.float()
    return acc.to(out_dtype)


def w8a8_int8_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype):
    check_gemm_args("w8a8_int8_gemm", a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype)
    acc = (a.float() @ w.float().t()) * a_scale[:, None] * w_scale[None, :]
    return _epilogue(acc, bias, lowrank_act, lora_up, out_dtype)


def w8a8_fp8_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype):
    check_gemm_args("w8a8_fp8_gemm", a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype)
    acc = (a.float() @ w.float().t()) * a_scale[:, None] * w_scale[None, :]
    return _epilogue(acc, bias, lowrank_act, lora_up, out_dtype)


def w4a8_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype):
    check_gemm_args("w4a8_gemm", a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype)
    wd = dequantize_groups(unpack_int4(w4a8_layout.unprepack(w)), w_scale)
    acc = (a.float() @ wd.t()) * a_scale[:, None]
    return _epilogue(acc, bias, lowrank_act, lora_up, out_dtype)


def w4a4_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype):
    check_gemm_args("w4a4_gemm", a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype)
    ad = dequantize_groups(unpack_int4(a), a_scale)
    wd = dequantize_groups(unpack_int4(w), w_scale)
    return _epilogue(ad @ wd.t(), bias, lowrank_act, lora_up, out_dtype)


def w4a8_prepack(w):
    """``pack_int4`` weights ``[N, K/2]`` -> the w4a8 kernel layout (a permutation; any device)."""
    return w4a8_layout.prepack(w)


def w4a8_unprepack(w):
    """Inverse of :func:`w4a8_prepack`."""
    return w4a8_layout.unprepack(w)


# ---------------------------------------------------------------- conv2d (NHWC)


def conv2d_out_hw(h, w, kh, kw, stride, padding, dilation):
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return ho, wo


def _check_nhwc_rows(op, name, t, dtypes, shape, device=None):
    """Contiguous NHWC, or a channel slice ``t_cat[..., a:b]`` of one (how the split-shortcut
    halves of a concat are passed without copies): unit channel stride, packed rows of ``ld``."""
    if not isinstance(t, torch.Tensor):
        checks._fail(op, f"{name} must be a tensor, got {type(t).__name__}")
    if t.is_contiguous():
        checks.check_tensor(op, name, t, dtypes=dtypes, shape=shape, device=device)
        return
    checks.check_tensor(op, name, t.contiguous(), dtypes=dtypes, shape=shape, device=device)
    (n, h, w, c), st = t.shape, t.stride()
    # strides of size-1 dims are arbitrary in torch: only the others must fit rows of ld elements
    ld = st[2] if w > 1 else st[1] if h > 1 else st[0]
    ok = (c == 1 or st[3] == 1) and ld >= c and (w == 1 or st[2] == ld) and (h == 1 or st[1] == w * ld) and (
        n == 1 or st[0] == h * w * ld)
    if not ok:
        checks._fail(op, f"{name} must be contiguous NHWC or a channel slice of one (strides {t.stride()} for shape "
                         f"{list(t.shape)})")


def check_conv_args(op, qdtype, x, w, w_scale, bias, x_scale, stride, padding, dilation, x2=None, x2_scale=None,
                    residual=None, out_dtype=None):
    """Validate a conv's operands (metadata only); returns ``(B, Ho, Wo, O, out dtype)``.

    ``x`` is 16/32-bit, or pre-quantized (``qdtype``, contiguous, written by a producer that applied
    the static ``x_scale`` itself, e.g. ``group_norm_quant_*``); then ``out_dtype`` is required."""
    if isinstance(x, torch.Tensor) and x.dtype == qdtype:
        checks.check_tensor(op, "x", x, dtypes=(qdtype,), shape=(None, None, None, None))
        if x_scale is None:
            checks._fail(op, f"a pre-quantized x (dtype {x.dtype}) needs its x_scale")
        if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
            checks._fail(op, f"a pre-quantized x needs out_dtype bfloat16, float16 or float32, got {out_dtype}")
        if x2 is not None:
            checks._fail(op, "x2 (split shortcut) is not supported with a pre-quantized x")
    else:
        _check_nhwc_rows(op, "x", x, FLOAT_ACT_DTYPES, (None, None, None, None))
        if out_dtype is not None and out_dtype != x.dtype:
            checks._fail(op, f"out_dtype {out_dtype} differs from x's dtype {x.dtype} (the output takes the activation "
                             "dtype)")
        out_dtype = x.dtype
    b, h, wd, c = x.shape
    dev = x.device
    checks.check_k(op, c, 16)
    if x2 is not None:
        _check_nhwc_rows(op, "x2", x2, (x.dtype,), (b, h, wd, None), device=dev)
        checks.check_k(op, x2.shape[3], 16)
        c += x2.shape[3]
    elif x2_scale is not None:
        checks._fail(op, "x2_scale is given without x2")
    checks.check_tensor(op, "w", w, dtypes=(qdtype,), shape=(None, None, None, c), device=dev)
    o, kh, kw, _ = w.shape
    checks.check_tensor(op, "w_scale", w_scale, dtypes=(torch.float32,), shape=(o,), device=dev)
    checks.check_bias(op, o, bias, dev)
    for name, scale in (("x_scale", x_scale), ("x2_scale", x2_scale)):
        if scale is not None:
            checks.check_tensor(op, name, scale, dtypes=(torch.float32,), shape=(1,), device=dev)
    checks.check_conv_params(op, stride, padding, dilation)
    ho, wo = conv2d_out_hw(h, wd, kh, kw, stride, padding, dilation)
    if ho <= 0 or wo <= 0:
        checks._fail(op, f"input {h}x{wd} is too small for a {kh}x{kw} kernel with padding {list(padding)}")
    if residual is not None:
        checks.check_tensor(op, "residual", residual, dtypes=(out_dtype,), shape=(b, ho, wo, o), device=dev)
    return b, ho, wo, o, out_dtype


def quantize_conv_input(x, x_scale, fmt):
    """One scale for the whole tensor: ``x_scale`` or ``absmax(x) / QMAX``. Returns (q, scale [1])."""
    xf = x.float()
    scale = absmax_scale(xf.abs().amax().reshape(1), fmt) if x_scale is None else x_scale.float()
    return round_to_format(xf / scale, fmt), scale


def _conv2d(op, fmt, x, w, w_scale, bias, x_scale, stride, padding, dilation, x2, x2_scale, residual, out_dtype):
    qdtype = torch.int8 if fmt is Format.INT8 else torch.float8_e4m3fn
    *_, out_dtype = check_conv_args(op, qdtype, x, w, w_scale, bias, x_scale, stride, padding, dilation, x2, x2_scale,
                                    residual, out_dtype)
    if x.dtype == qdtype:
        xd = x.float() * x_scale
    else:
        halves = [(x, x_scale)] + ([(x2, x2_scale)] if x2 is not None else [])
        xd = torch.cat([q.float() * s for q, s in (quantize_conv_input(t, ts, fmt) for t, ts in halves)], dim=3)
    wdq = (w.float() * w_scale[:, None, None, None]).permute(0, 3, 1, 2)
    y = F.conv2d(xd.permute(0, 3, 1, 2), wdq, None, list(stride), list(padding), list(dilation))
    y = y.permute(0, 2, 3, 1)
    if bias is not None:
        y = y + bias.float()
    if residual is not None:
        y = y + residual.float()
    return y.contiguous().to(out_dtype)


def w8a8_int8_conv2d(x, w, w_scale, bias, x_scale, stride, padding, dilation, x2=None, x2_scale=None, residual=None,
                     out_dtype=None):
    return _conv2d("w8a8_int8_conv2d", Format.INT8, x, w, w_scale, bias, x_scale, stride, padding, dilation, x2,
                   x2_scale, residual, out_dtype)


def w8a8_fp8_conv2d(x, w, w_scale, bias, x_scale, stride, padding, dilation, x2=None, x2_scale=None, residual=None,
                    out_dtype=None):
    return _conv2d("w8a8_fp8_conv2d", Format.FP8_E4M3, x, w, w_scale, bias, x_scale, stride, padding, dilation, x2,
                   x2_scale, residual, out_dtype)


# The fused norm ops' references live in their own module; re-exported so every op's reference is
# ``reference.<op name>`` (the CPU kernels registered in library.py, backend="reference").
from .reference_norms import group_norm_nhwc, group_norm_quant_fp8, group_norm_quant_int8, rmsnorm_rope  # noqa: E402,F401
