"""The FP8 low-rank branch folded into the GEMM's K dimension ("lowrank cat").

SVDQuant's branch ``(x / s) L_down^T L_up^T`` costs an extra pass over the ``[M, N]`` output when
it is added in the GEMM epilogue (notes/kernels.md: +40% to +116% at FLUX shapes). On FP8 it can
instead ride in the main loop as a few extra K columns, because a floating-point format has room
for both operands once they are scaled into it:

    y[m, n] = a_s[m] w_s[n] (sum_k qa[m, k] qw[n, k] + sum_j A[m, j] B[n, j])
    A[m, j] = lr[m, j] / (c_j a_s[m]),   lr = (x / s) @ L_down^T          (per token, at run time)
    B[n, j] = L_up[n, j] c_j / w_s[n]                                     (per weight, once)

``c_j = 448 / max_n |L_up[n, j]| / w_s[n]`` puts B's column maxima at e4m3's 448, and the token
scale grows where it must to keep A in range: ``a_s[m] = max(absmax_k |x_s[m, k]|, max_j |lr[m, j]
/ c_j|) / 448``. For FP8 a larger scale only pushes the smallest activations towards e4m3's
subnormals (measured on the shipped fashion-dit: -0.15 dB of layer SQNR on average, against
the epilogue path); INT8 has no such room, so the trick is FP8-only.

A and B are each stored as two e4m3 numbers, ``hi = e4m3(v)`` and ``lo = e4m3(v - hi)`` (~8
significant bits, bf16's precision). The activation row gets ``[hi_A | lo_A | hi_A | lo_A]`` after
its K quantized values and the weight row ``[hi_B | hi_B | lo_B | lo_B]``, so the GEMM (the plain
FP8 GEMM with K + width) sums all four products of (hi + lo)(hi + lo). The extra width is 3r
rounded up to a multiple of 128 (whole 128-deep k-blocks and 128-byte aligned rows: with K + 3r
= 3168 the H100 GEMM lost 10-19% to the ragged rows, measured); the fourth term is kept where it
fits in that width (r = 16, 32, 48, 64, 96), else dropped (its size is ~2^-8 of the product), and
the rest is zeros. On fashion-dit the branch alone measured 60 dB against its float32 value with
three terms, where the epilogue path's bf16 ``lowrank_act`` gave 55.6 dB (r = 16).

Column ``j`` with an all-zero ``L_up[:, j]`` gets ``1 / c_j = 0``: A and B are zero there.
"""
from __future__ import annotations

import torch

from .quantizers import round_to_format
from .spec import Format

LOWRANK_CAT_MAX_RANK = 256  # the CUDA kernel keeps a 16 x r tile of lr in shared memory
_E4M3_MAX = 448.0


def lowrank_cat_layout(rank: int) -> tuple[int, int]:
    """``(terms, width)``: the extra K columns are ``width`` = 3r rounded up to 128, holding 4
    products of the split operands where 4r fits in that, else 3 (then zeros)."""
    width = (3 * rank + 127) // 128 * 128
    return (4 if 4 * rank <= width else 3), width


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1])], dim=1)


def split_e4m3(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v`` (float32) as ``hi + lo``, both float8_e4m3fn: ``hi = e4m3(v)``, ``lo = e4m3(v - hi)``
    (each clamped to +-448 first, as the format's rounding does)."""
    hi = round_to_format(v, Format.FP8_E4M3)
    return hi, round_to_format(v - hi.float(), Format.FP8_E4M3)


def lowrank_cat_columns(weight_scale: torch.Tensor, lora_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight side: ``(w_extra [N, width] float8_e4m3fn = [hi_B | hi_B | lo_B (| lo_B) | 0],
    inv_c [r] float32)``."""
    if weight_scale.dim() != 1 or lora_up.dim() != 2 or lora_up.shape[0] != weight_scale.shape[0]:
        raise ValueError(f"lowrank cat: weight_scale must be [N] and lora_up [N, r], got "
                         f"{tuple(weight_scale.shape)} and {tuple(lora_up.shape)}")
    up = lora_up.float()
    ratio = up.abs() / weight_scale.float()[:, None]          # |L_up| / w_s, [N, r]
    col_max = ratio.amax(dim=0)
    # Divide by a tensor: CUDA turns division by a Python number into a multiply by its
    # reciprocal, and the weight must come out the same on every device.
    inv_c = col_max / torch.full_like(col_max, _E4M3_MAX)    # 1 / c_j
    safe = torch.where(inv_c > 0, inv_c, torch.ones_like(inv_c))
    b = up / (weight_scale.float()[:, None] * safe[None, :])  # |b| <= 448 up to rounding
    b = torch.where(inv_c[None, :] > 0, b, torch.zeros_like(b))
    hi, lo = split_e4m3(b)
    terms, width = lowrank_cat_layout(up.shape[1])
    return _pad(torch.cat([hi, hi, lo, lo][:terms], dim=1), width), inv_c


def lowrank_cat_weight(weight: torch.Tensor, weight_scale: torch.Tensor,
                       lora_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_cat [N, K + width] float8_e4m3fn, inv_c [r] float32)`` from an FP8 QLinear's buffers."""
    if weight.dtype != torch.float8_e4m3fn or weight.dim() != 2:
        raise ValueError(f"lowrank cat needs an FP8 weight [N, K], got {weight.dtype} {tuple(weight.shape)}")
    extra, inv_c = lowrank_cat_columns(weight_scale, lora_up)
    return torch.cat([weight, extra.to(weight.device)], dim=1), inv_c


def lowrank_cat_activation(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The activation side's ``[M, width]`` float8_e4m3fn columns ``[hi_A | lo_A | hi_A (| lo_A) | 0]``.

    ``v = lr * inv_c`` ``[M, r]`` float32; ``scale [M]`` is the (grown) token scale. Division, not a
    multiply by a reciprocal: the CUDA kernel's quotient is the IEEE one.
    """
    a = v / scale[:, None]
    hi, lo = split_e4m3(a)
    terms, width = lowrank_cat_layout(v.shape[1])
    return _pad(torch.cat([hi, lo, hi, lo][:terms], dim=1), width)
