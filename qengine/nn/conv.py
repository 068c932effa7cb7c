"""QConv2d: a drop-in for nn.Conv2d (groups=1, zero padding) with INT8 or FP8 weights and activations.

The op works on NHWC data. Inputs in ``torch.channels_last`` memory format (the layout
diffusers UNets use when asked) go in without a copy, and the output is a channels_last view,
so a channels_last network has no layout round trips.

Buffers: ``weight [O, kh, kw, C]`` int8 | float8_e4m3fn (one scale per output channel in
``weight_scale [O]`` float32), ``bias [O]`` 16-bit (optional) and ``input_scale`` float32
(optional: static activation scales from calibration, ``[1]``, or ``[2]`` with ``split``; without
it the activation gets one dynamic absmax scale per tensor, computed on the device).

Split shortcut (``split=C1``): a conv that consumes ``concat([hidden, skip], channels)`` (UNet
up-block resnets) quantizes channels ``[0, C1)`` and ``[C1, C)`` with their own scales; the two
halves are passed to the op as channel slices of the input, so nothing is copied.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..config import LayerQuantConfig
from ..formats import get_scheme
from .quantize_weight import quantize_weight


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class QConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, layer_config: LayerQuantConfig, *,
                 stride=1, padding=0, dilation=1, bias: bool = True, static_input_scale: bool = False,
                 split: int | None = None, dtype: torch.dtype = torch.bfloat16, device=None, backend: str = "auto"):
        super().__init__()
        self.scheme = get_scheme(layer_config.scheme)
        check_conv_shape(in_channels, layer_config)
        if split is not None and (split <= 0 or split >= in_channels or split % 16):
            raise ValueError(f"split must be a multiple of 16 strictly inside (0, {in_channels}), got {split}")
        self.split = split
        if backend not in ops.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {ops.BACKENDS}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.layer_config = layer_config
        self.backend = backend
        kh, kw = self.kernel_size
        qdtype = self.scheme.weight.spec.storage_dtype
        self.register_buffer("weight", torch.empty(out_channels, kh, kw, in_channels, dtype=qdtype, device=device))
        self.register_buffer("weight_scale", torch.empty(out_channels, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.empty(out_channels, dtype=dtype, device=device) if bias else None)
        self.register_buffer("input_scale",
                             torch.empty(1 if split is None else 2, dtype=torch.float32, device=device)
                             if static_input_scale else None)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, layer_config: LayerQuantConfig, *, input_scale: torch.Tensor | None = None,
                   clip: float = 1.0, split: int | None = None, backend: str = "auto") -> QConv2d:
        """Quantize ``conv``; ``clip`` < 1 clamps each output channel to that fraction of its absmax.

        ``split``: input channel where the second half of a concatenated input starts (split
        shortcut); ``input_scale`` then holds one static scale per half.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"QConv2d.from_float expects nn.Conv2d, got {type(conv).__name__}")
        check_conv_module(conv, layer_config)
        w = conv.weight.detach()
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, layer_config, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                static_input_scale=input_scale is not None, split=split, dtype=w.dtype, device=w.device,
                backend=backend)
        o = conv.out_channels
        qw, qs = quantize_weight(q.scheme, w.permute(0, 2, 3, 1).reshape(o, -1).float(), 0, clip)
        q.weight.copy_(qw.reshape(q.weight.shape))
        q.weight_scale.copy_(qs)
        if conv.bias is not None:
            q.bias.copy_(conv.bias.detach())
        if input_scale is not None:
            q.input_scale.copy_(input_scale.reshape(q.input_scale.shape))
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QConv2d expects input [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        nhwc = x.permute(0, 2, 3, 1).contiguous()  # free for channels_last input
        scale = self.input_scale
        if self.split is None:
            y = ops.conv2d(self.scheme, nhwc, self.weight, self.weight_scale, self.bias, scale, self.stride,
                           self.padding, self.dilation, backend=self.backend)
        else:  # the halves are channel-slice views of nhwc: the op reads them in place
            s = self.split
            y = ops.conv2d(self.scheme, nhwc[..., :s], self.weight, self.weight_scale, self.bias,
                           None if scale is None else scale[:1], self.stride, self.padding, self.dilation,
                           backend=self.backend, x2=nhwc[..., s:], x2_scale=None if scale is None else scale[1:])
        return y.permute(0, 3, 1, 2)

    def forward_prequantized(self, q: torch.Tensor, out_dtype: torch.dtype,
                             residual: torch.Tensor | None = None) -> torch.Tensor:
        """The conv of an input its producer already quantized with this conv's static scale
        (``group_norm_quant_*``): ``q [B, C, H, W]`` channels_last in the scheme's 8-bit dtype.
        ``residual [B, O, Ho, Wo]`` (optional) is added in the epilogue. Returns ``out_dtype``,
        channels_last."""
        if self.input_scale is None or self.split is not None:
            raise ValueError("forward_prequantized needs a static input scale and no split shortcut "
                             f"(input_scale={'set' if self.input_scale is not None else None}, split={self.split})")
        if q.dim() != 4 or q.shape[1] != self.in_channels:
            raise ValueError(f"QConv2d expects input [B, {self.in_channels}, H, W], got shape {tuple(q.shape)}")
        res = None if residual is None else residual.permute(0, 2, 3, 1).contiguous()
        y = ops.conv2d(self.scheme, q.permute(0, 2, 3, 1).contiguous(), self.weight, self.weight_scale, self.bias,
                       self.input_scale, self.stride, self.padding, self.dilation, backend=self.backend, residual=res,
                       out_dtype=out_dtype)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, scheme={self.layer_config.scheme}, "
                f"input_scale={'static' if self.input_scale is not None else 'dynamic per tensor'}, "
                f"{'' if self.split is None else f'split={self.split}, '}"
                f"bias={self.bias is not None}, backend={self.backend}")


def check_conv_shape(in_channels: int, layer_config: LayerQuantConfig) -> None:
    scheme = get_scheme(layer_config.scheme)
    if not scheme.has_conv:
        raise ValueError(f"scheme {scheme.name} has no conv2d kernel; use w8a8-int8 or w8a8-fp8 for convs")
    if in_channels % 16:
        raise ValueError(f"quantized conv needs in_channels to be a multiple of 16, got {in_channels}")


def check_conv_module(conv: nn.Conv2d, layer_config: LayerQuantConfig) -> None:
    """Raise ValueError naming the problem if ``conv`` cannot be quantized with ``layer_config``."""
    check_conv_shape(conv.in_channels, layer_config)
    if conv.groups != 1:
        raise ValueError(f"quantized conv supports groups=1 only, got groups={conv.groups}")
    if conv.padding_mode != "zeros":
        raise ValueError(f"quantized conv supports padding_mode='zeros' only, got {conv.padding_mode!r}")
    if isinstance(conv.padding, str):
        raise ValueError(f"quantized conv needs numeric padding, got padding={conv.padding!r}")
