"""Formats: bit layouts, rounding and scale shapes (the checkpoint contract)."""
from .quantizers import (
    absmax_scale,
    dequantize_groups,
    dequantize_rows,
    pack_int4,
    quantize_groups,
    quantize_rows,
    round_to_format,
    unpack_int4,
)
from .schemes import SCHEMES, Scheme, get_scheme
from .spec import (
    FORMAT_VERSION,
    INT4_ACT_GROUP_SIZE,
    INT4_WEIGHT_GROUP_SIZES,
    Format,
    FormatSpec,
    Granularity,
)

__all__ = [
    "SCHEMES", "Scheme", "get_scheme", "FORMAT_VERSION", "INT4_ACT_GROUP_SIZE", "INT4_WEIGHT_GROUP_SIZES", "Format", "FormatSpec",
    "Granularity", "absmax_scale", "dequantize_groups", "dequantize_rows", "pack_int4",
    "quantize_groups", "quantize_rows", "round_to_format", "unpack_int4",
]
