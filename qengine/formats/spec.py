"""The numeric formats qengine stores and computes with: the checkpoint contract.

Every quantized tensor in a checkpoint is one of the formats below. A format fixes the bit
width, signedness, the integer range used, the scale dtype and shape, the rounding mode and,
for sub-byte formats, the byte order. Kernels must reproduce these rules bit for bit; the
pure-PyTorch functions in :mod:`qengine.formats.quantizers` are the definition.

All formats are symmetric (no zero point). Scales are float32 and multiply: ``x ~= q * scale``.

Rounding (all formats):
  ``absmax`` is the float32 max of ``|x|`` over the scaled block; ``scale = absmax / QMAX``
  (IEEE float32 division); a block with ``absmax == 0`` gets ``scale = 1``;
  ``q = round_half_to_even(x / scale)`` with IEEE float32 division, then clamped to the range.
  FP8 replaces the integer rounding by the IEEE round-to-nearest-even conversion of the
  clamped float32 value to E4M3, so finite input never produces NaN.

Byte order of 4-bit values (INT4): two's-complement nibbles, two per byte along the last
(K) dimension; element ``2i`` sits in the low nibble of byte ``i``, element ``2i + 1`` in the
high nibble.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

#: Bumped whenever a layout, rounding rule or scale shape below changes.
#: 2: w4a8 weights are stored in the prepacked layout of :mod:`qengine.formats.w4a8_layout`
#:    and may be per output channel (weight_scale [N, 1]).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class FormatSpec:
    name: str
    bits: int
    qmin: float
    qmax: float
    storage_dtype: torch.dtype
    values_per_byte: int
    doc: str


class Format(enum.Enum):
    """Element formats. ``QMAX`` in the rounding rule is ``spec.qmax``."""

    INT8 = FormatSpec(
        "int8", 8, -127, 127, torch.int8, 1,
        "signed 8-bit, range [-127, 127] (-128 unused so the range is symmetric)",
    )
    FP8_E4M3 = FormatSpec(
        "fp8_e4m3", 8, -448.0, 448.0, torch.float8_e4m3fn, 1,
        "float8 E4M3 (fn: finite, no inf), saturating at +-448",
    )
    INT4 = FormatSpec(
        "int4", 4, -8, 7, torch.uint8, 2,
        "signed 4-bit, scale = absmax / 7 so quantized values lie in [-7, 7]; "
        "-8 is representable but never produced; packed two per byte (see module doc)",
    )

    @property
    def spec(self) -> FormatSpec:
        return self.value

    @property
    def scale_divisor(self) -> float:
        """``QMAX`` of the rounding rule: 127 for INT8, 448 for FP8, 7 for INT4."""
        return 7.0 if self is Format.INT4 else float(self.spec.qmax)


class Granularity(enum.Enum):
    """Which elements share one scale, for a 2-D tensor viewed as [rows, K]."""

    PER_ROW = "per_row"        # weights: per output channel; activations: per token. scale [rows]
    PER_GROUP = "per_group"    # blocks of `group_size` along K. scale [rows, K // group_size]
    PER_TENSOR = "per_tensor"  # conv activations: one scale for the whole NHWC input (static or dynamic). scale [1]


#: Group sizes along K supported for 4-bit weights; 4-bit activations always use 64.
INT4_WEIGHT_GROUP_SIZES = (64, 128)
INT4_ACT_GROUP_SIZE = 64
