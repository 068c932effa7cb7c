"""Quantization schemes: which weight and activation formats a layer computes with.

| scheme     | weights                              | activations (dynamic)           | K must be a multiple of |
|------------|--------------------------------------|---------------------------------|-------------------------|
| w8a8-int8  | INT8, per output channel             | INT8, per token                 | 16                      |
| w8a8-fp8   | FP8 E4M3, per output channel         | FP8 E4M3, per token             | 16                      |
| w4a8       | INT4, per output channel (default),  | INT8, per token                 | 32 and the group size   |
|            | or groups of 64 or 128 along K       |                                 | (and N a multiple of 16)|
| w4a4       | INT4, groups of 64 along K           | INT4, groups of 64 per token    | 64                      |

K alignment comes from the kernels (16-byte vector loads of 8-bit data; whole groups). w4a8 weights
are stored prepacked for the sm_90a kernel (qengine/formats/w4a8_layout.py: 16x32 blocks, hence
N % 16 and K % 32); only per-channel w4a8 has a CUDA kernel, the group-wise variants run on the
reference backend (notes/w4a8.md: measured accuracy and why group scales do not fit INT8 wgmma).
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import INT4_ACT_GROUP_SIZE, INT4_WEIGHT_GROUP_SIZES, Format


@dataclass(frozen=True)
class Scheme:
    name: str
    weight: Format
    act: Format
    #: allowed weight group sizes along K (0: one scale per output channel); empty for 8-bit
    #: weights, which are always per output channel. The first is the default.
    weight_group_sizes: tuple[int, ...]
    #: activation group size along K; 0 for one scale per token
    act_group_size: int
    #: whether the scheme also has a conv2d op
    has_conv: bool
    #: K must be a multiple of this (besides the group sizes)
    min_k_multiple: int = 16
    #: N (output features) must be a multiple of this
    n_multiple: int = 1

    @property
    def weight_grouped(self) -> bool:
        """Packed 4-bit weights (per channel or in groups along K: see ``weight_group_sizes``)."""
        return bool(self.weight_group_sizes)

    def default_group_size(self) -> int:
        return self.weight_group_sizes[0] if self.weight_group_sizes else 0

    def k_multiple(self, group_size: int = 0) -> int:
        """K must be a multiple of this for the scheme (and weight group size)."""
        return max(self.min_k_multiple, group_size, self.act_group_size)

    def check_group_size(self, group_size: int) -> None:
        if self.weight_grouped:
            if group_size not in self.weight_group_sizes:
                raise ValueError(
                    f"scheme {self.name} supports weight group sizes {self.weight_group_sizes}, "
                    f"got {group_size}"
                )
        elif group_size not in (0, None):
            raise ValueError(f"scheme {self.name} quantizes weights per output channel; group_size must be 0, got {group_size}")


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("w8a8-int8", Format.INT8, Format.INT8, (), 0, True),
        Scheme("w8a8-fp8", Format.FP8_E4M3, Format.FP8_E4M3, (), 0, True),
        Scheme("w4a8", Format.INT4, Format.INT8, (0,) + INT4_WEIGHT_GROUP_SIZES, 0, False, min_k_multiple=32,
               n_multiple=16),
        Scheme("w4a4", Format.INT4, Format.INT4, (INT4_ACT_GROUP_SIZE,), INT4_ACT_GROUP_SIZE, False),
    )
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}") from None
