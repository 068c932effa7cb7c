"""Quantization schemes: which weight and activation formats a layer computes with.

| scheme     | weights                              | activations (dynamic)           | K must be a multiple of |
|------------|--------------------------------------|---------------------------------|-------------------------|
| w8a8-int8  | INT8, per output channel             | INT8, per token                 | 16                      |
| w8a8-fp8   | FP8 E4M3, per output channel         | FP8 E4M3, per token             | 16                      |
| w4a8       | INT4, groups of 64 or 128 along K    | INT8, per token                 | the group size          |
| w4a4       | INT4, groups of 64 along K           | INT4, groups of 64 per token    | 64                      |

K alignment comes from the kernels (16-byte vector loads of 8-bit data; whole groups).
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import INT4_ACT_GROUP_SIZE, INT4_WEIGHT_GROUP_SIZES, Format


@dataclass(frozen=True)
class Scheme:
    name: str
    weight: Format
    act: Format
    #: allowed weight group sizes along K; empty for one scale per output channel
    weight_group_sizes: tuple[int, ...]
    #: activation group size along K; 0 for one scale per token
    act_group_size: int
    #: whether the scheme also has a conv2d op
    has_conv: bool

    @property
    def weight_grouped(self) -> bool:
        return bool(self.weight_group_sizes)

    def default_group_size(self) -> int:
        return self.weight_group_sizes[0] if self.weight_group_sizes else 0

    def k_multiple(self, group_size: int = 0) -> int:
        """K must be a multiple of this for the scheme (and weight group size)."""
        return max(16, group_size, self.act_group_size)

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
        Scheme("w4a8", Format.INT4, Format.INT8, INT4_WEIGHT_GROUP_SIZES, 0, False),
        Scheme("w4a4", Format.INT4, Format.INT4, (INT4_ACT_GROUP_SIZE,), INT4_ACT_GROUP_SIZE, False),
    )
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}") from None
