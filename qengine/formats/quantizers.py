"""Reference quantizers and the INT4 packing: the executable definition of each format.

These run in float32 on any device and are what the CUDA kernels are tested against bit for
bit. The rounding rules are documented in :mod:`qengine.formats.spec`.
"""
from __future__ import annotations

import torch

from .spec import Format

__all__ = [
    "absmax_scale",
    "round_to_format",
    "quantize_rows",
    "quantize_groups",
    "dequantize_rows",
    "dequantize_groups",
    "pack_int4",
    "unpack_int4",
]


# (qmin, qmax, QMAX of the scale rule) as plain numbers: torch.compile traces these functions
# (backend="reference") and older dynamo versions cannot trace the FormatSpec enum values.
_RANGES = {f: (float(f.spec.qmin), float(f.spec.qmax), f.scale_divisor) for f in Format}


def absmax_scale(absmax: torch.Tensor, fmt: Format) -> torch.Tensor:
    """float32 scale from a float32 absmax: ``absmax / QMAX``, or 1 where absmax is 0."""
    absmax = absmax.float()
    # Divide by a tensor, not a Python number: CUDA turns division by a scalar into a multiply
    # by its reciprocal, which is not the IEEE division the format specifies.
    scale = absmax / torch.full_like(absmax, _RANGES[fmt][2])
    return torch.where(absmax > 0, scale, torch.ones_like(scale))


def round_to_format(scaled: torch.Tensor, fmt: Format) -> torch.Tensor:
    qmin, qmax, _ = _RANGES[fmt]
    if fmt is Format.FP8_E4M3:
        # Clamp first: the E4M3 conversion of an out-of-range float is NaN, never saturation.
        return scaled.clamp(qmin, qmax).to(torch.float8_e4m3fn)
    return torch.round(scaled).clamp(qmin, qmax).to(torch.int8)


def quantize_rows(x: torch.Tensor, fmt: Format) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per row of a 2-D tensor ``[rows, K]``.

    Returns ``(q [rows, K], scale float32 [rows])``; ``q`` is int8 for INT8, float8_e4m3fn
    for FP8 and unpacked int8 in [-8, 7] for INT4 (pack it with :func:`pack_int4`).
    """
    if x.dim() != 2:
        raise ValueError(f"quantize_rows expects a 2-D tensor [rows, K], got shape {tuple(x.shape)}")
    xf = x.float()
    scale = absmax_scale(xf.abs().amax(dim=1), fmt)
    return round_to_format(xf / scale[:, None], fmt), scale


def quantize_groups(x: torch.Tensor, fmt: Format, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per ``group_size`` consecutive elements along K of ``[rows, K]``.

    Returns ``(q [rows, K], scale float32 [rows, K // group_size])``.
    """
    if x.dim() != 2:
        raise ValueError(f"quantize_groups expects a 2-D tensor [rows, K], got shape {tuple(x.shape)}")
    rows, k = x.shape
    if group_size <= 0 or k % group_size:
        raise ValueError(f"K={k} is not a multiple of the group size {group_size}")
    xg = x.float().reshape(rows, k // group_size, group_size)
    scale = absmax_scale(xg.abs().amax(dim=2), fmt)
    q = round_to_format(xg / scale[:, :, None], fmt)
    return q.reshape(rows, k), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    rows, k = q.shape
    groups = scale.shape[1]
    return (q.float().reshape(rows, groups, k // groups) * scale.float()[:, :, None]).reshape(rows, k)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int8 values in [-8, 7] two per byte along the last dim (even index -> low nibble)."""
    if q.dtype != torch.int8:
        raise TypeError(f"pack_int4 expects int8 values in [-8, 7], got dtype {q.dtype}")
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got shape {tuple(q.shape)}")
    nib = q.to(torch.uint8) & 0xF
    return nib[..., 0::2] | (nib[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 ``[..., K/2]`` -> int8 ``[..., K]`` in [-8, 7]."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_int4 expects uint8 packed nibbles, got dtype {packed.dtype}")
    low = (packed & 0xF).to(torch.int8)
    high = (packed >> 4).to(torch.int8)
    # Sign-extend the nibbles: values 8..15 stand for -8..-1.
    low = torch.where(low >= 8, low - 16, low)
    high = torch.where(high >= 8, high - 16, high)
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
