"""Reference (CPU kernel and test oracle) of the fused normalization ops.

  rmsnorm_rope(x [B,S,H,D], weight [D], cos [S_p+S,D] f32?, sin?, eps, prefix [B,S_p,H,D]?, prefix_weight [D]?)
      -> [B, S_p+S, H, D] in x.dtype: per-head RMSNorm, then the interleaved rotary embedding;
      the prefix (text tokens, own weight) comes first along the tokens.
  group_norm_nhwc(x [N,C,H,W] channels_last, groups, weight [C]?, bias [C]?, eps, silu, add [N,C]?)
      -> [N,C,H,W] channels_last in x.dtype: GroupNorm of x (+ add, rounded to x.dtype as the eager
      ``h + temb[:, :, None, None]`` rounds it), then SiLU if asked.
  group_norm_quant_{int8,fp8}(x, groups, weight?, bias?, eps, silu, add?, scale [1] f32)
      -> [N,C,H,W] channels_last int8 / float8_e4m3fn: the group_norm_nhwc output quantized with the
      static scale exactly as the quantized conv's pre-pass quantizes it (a conv's input, written
      by its producer).

The math is that of the eager ops they replace, step for step, so on the CPU the fused modules
give the same numbers as diffusers: ``F.rms_norm`` in float32 rounded to x.dtype, then
``(n.float() * cos + rotate(n).float() * sin).to(dtype)`` (diffusers' ``apply_rotary_emb`` with
interleaved pairs); ``F.group_norm`` in float32 rounded to x.dtype, then SiLU of the rounded value.
The CUDA kernels (csrc/norms/) differ only in the order of their float32 reductions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats.quantizers import round_to_format
from ..formats.spec import Format
from .checks import _fail, check_tensor

_DTYPES = (torch.bfloat16, torch.float16)
RMSNORM_ROPE_HEAD_DIMS = (64, 128, 256)


def group_norm_nhwc_unsupported(n: int, c: int, groups: int) -> str | None:
    """Why ``group_norm_nhwc`` does not take N images of C channels in ``groups`` groups, or None."""
    if groups <= 0 or groups > 128 or c % groups or (c // groups) % 2:
        return (f"groups={groups} with C={c} is not supported: need C % groups == 0, an even C / groups "
                "and groups <= 128")
    if c > 4096 or n > 65535:
        return f"C={c} N={n} is not supported (C <= 4096, N <= 65535)"
    return None


def _check_heads(op, name, t, device):
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        _fail(op, f"{name} must have shape [batch, tokens, heads, head_dim], got "
                  f"{list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if t.dtype not in _DTYPES:
        _fail(op, f"{name} must have dtype torch.bfloat16 or torch.float16, got {t.dtype}")
    if t.shape[-1] not in RMSNORM_ROPE_HEAD_DIMS:
        _fail(op, f"{name}: head_dim={t.shape[-1]} is not supported (64, 128 or 256)")
    if t.device != device:
        _fail(op, f"{name} is on {t.device} but the other operands are on {device}")


def check_rmsnorm_rope_args(op, x, weight, cos, sin, prefix, prefix_weight, layout: bool = True):
    """``layout=False``: no contiguity checks (the fake, under symbolic token counts)."""
    _check_heads(op, "x", x, x.device)
    b, s, h, d = x.shape
    check_tensor(op, "weight", weight, dtypes=(x.dtype,), shape=[d], device=x.device, contiguous=layout)
    if (prefix is None) != (prefix_weight is None):
        _fail(op, "prefix and prefix_weight must be given together")
    s_p = 0
    if prefix is not None:
        _check_heads(op, "prefix", prefix, x.device)
        if prefix.dtype != x.dtype:
            _fail(op, f"prefix dtype {prefix.dtype} differs from x dtype {x.dtype}")
        if (prefix.shape[0], prefix.shape[2], prefix.shape[3]) != (b, h, d):
            _fail(op, f"prefix shape {list(prefix.shape)} does not match x shape {list(x.shape)} outside the token dim")
        check_tensor(op, "prefix_weight", prefix_weight, dtypes=(x.dtype,), shape=[d], device=x.device,
                     contiguous=layout)
        s_p = prefix.shape[1]
    if (cos is None) != (sin is None):
        _fail(op, "cos and sin must be given together")
    if cos is not None:
        check_tensor(op, "cos", cos, dtypes=(torch.float32,), shape=[s_p + s, d], device=x.device, contiguous=layout)
        check_tensor(op, "sin", sin, dtypes=(torch.float32,), shape=[s_p + s, d], device=x.device, contiguous=layout)
    return b, s_p + s, h, d


def _rms_norm(x, weight, eps):
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved rotary embedding of ``x [B, S, H, D]`` with ``cos/sin [S, D]`` (diffusers'
    ``apply_rotary_emb(..., use_real=True, use_real_unbind_dim=-1, sequence_dim=1)``)."""
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    x_rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
    return (x.float() * c + x_rotated.float() * s).to(x.dtype)


def rmsnorm_rope(x, weight, cos, sin, eps, prefix=None, prefix_weight=None):
    check_rmsnorm_rope_args("rmsnorm_rope", x, weight, cos, sin, prefix, prefix_weight)
    n = _rms_norm(x, weight, eps)
    if prefix is not None:
        n = torch.cat([_rms_norm(prefix, prefix_weight, eps), n], dim=1)
    if cos is not None:
        n = apply_rope(n, cos, sin)
    return n.contiguous()


def check_group_norm_args(op, x, groups, weight, bias, layout: bool = True, add=None, scale=None):
    """``layout=False`` skips the channels_last check: the fake (torch.compile) calls it with
    symbolic H and W, where ``is_contiguous(memory_format=...)`` cannot be decided and reads False;
    the real kernels check the layout themselves."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        _fail(op, f"x must have shape [N, C, H, W], got {list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype not in _DTYPES:
        _fail(op, f"x must have dtype torch.bfloat16 or torch.float16, got {x.dtype}")
    if layout and not x.is_contiguous(memory_format=torch.channels_last):
        _fail(op, f"x must be channels_last (x.contiguous(memory_format=torch.channels_last)); strides {x.stride()} "
                  f"for shape {list(x.shape)}")
    c = x.shape[1]
    why = group_norm_nhwc_unsupported(x.shape[0], c, groups)
    if why:
        _fail(op, why)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(op, name, t, dtypes=(x.dtype,), shape=[c], device=x.device)
    if add is not None:
        check_tensor(op, "add", add, dtypes=(x.dtype,), shape=[x.shape[0], c], device=x.device)
    if scale is not None:
        check_tensor(op, "scale", scale, dtypes=(torch.float32,), shape=[1], device=x.device)


def _group_norm(x, groups, weight, bias, eps, silu, add):
    if add is not None:
        x = x + add[:, :, None, None]  # rounded to x.dtype, as the eager add is
    y = F.group_norm(x.float(), groups, None if weight is None else weight.float(),
                     None if bias is None else bias.float(), eps).to(x.dtype)
    if silu:
        y = F.silu(y.float()).to(x.dtype)
    return y


def group_norm_nhwc(x, groups, weight, bias, eps, silu=False, add=None):
    check_group_norm_args("group_norm_nhwc", x, groups, weight, bias, add=add)
    return _group_norm(x, groups, weight, bias, eps, silu, add).contiguous(memory_format=torch.channels_last)


def _group_norm_quant(op, fmt):
    def ref(x, groups, weight, bias, eps, silu, add, scale):
        check_group_norm_args(op, x, groups, weight, bias, add=add, scale=scale)
        y = _group_norm(x, groups, weight, bias, eps, silu, add)
        # the conv pre-pass's rounding (qengine.ops.reference.quantize_conv_input with x_scale)
        return round_to_format(y.float() / scale.float(), fmt).contiguous(memory_format=torch.channels_last)
    ref.__name__ = op
    return ref


group_norm_quant_int8 = _group_norm_quant("group_norm_quant_int8", Format.INT8)
group_norm_quant_fp8 = _group_norm_quant("group_norm_quant_fp8", Format.FP8_E4M3)
