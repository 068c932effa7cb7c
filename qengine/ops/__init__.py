"""Typed entry points to the ``torch.ops.qengine.*`` custom ops.

``backend="auto"`` calls the registered op: the float32 reference on CPU, the compiled kernel
on CUDA (or a loud error where none was built for the GPU). ``backend="reference"`` calls the
reference directly on any device; it is never chosen silently. Shapes: see
:mod:`qengine.ops.reference`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _extension
from ..formats import Format, Scheme
from . import library, reference
from .checks import OpInputError

BACKENDS = ("auto", "reference")

_extension.load_extension()  # importing qengine._C (if built) registers its CUDA kernels
MISSING_CUDA_KERNELS = library.register_missing_cuda_kernels(", ".join(_extension.compiled_archs()))

_QUANTIZE_OP = {"w8a8-int8": "quantize_act_int8", "w8a8-fp8": "quantize_act_fp8", "w4a8": "quantize_act_int8",
                "w4a4": "quantize_act_int4"}
# Schemes whose activations are quantized per token by the 8-bit row kernel, and its output format:
# they also take producer-fused input (gelu-cat, GEGLU, LayerNorm; see producer_quantize_op).
_ROW_QUANT_FORMAT = {"w8a8-int8": "int8", "w8a8-fp8": "fp8", "w4a8": "int8"}
# Schemes that take static (calibrated, per-tensor) activation scales, and their activation format.
_STATIC_FORMAT = {"w8a8-int8": Format.INT8, "w8a8-fp8": Format.FP8_E4M3}
_ONES: dict[torch.device, torch.Tensor] = {}  # ones_scales' cache
_GEMM_OP = {"w8a8-int8": "w8a8_int8_gemm", "w8a8-fp8": "w8a8_fp8_gemm", "w4a8": "w4a8_gemm", "w4a4": "w4a4_gemm"}
_CONV_OP = {"w8a8-int8": "w8a8_int8_conv2d", "w8a8-fp8": "w8a8_fp8_conv2d"}


def _resolve(name: str, backend: str):
    if backend == "auto":
        return getattr(torch.ops.qengine, name)
    if backend == "reference":
        return getattr(reference, name)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def quantize_act(x: torch.Tensor, scheme: Scheme, smooth: torch.Tensor | None = None,
                 lora_down: torch.Tensor | None = None, backend: str = "auto",
                 lowrank_dtype: torch.dtype | None = None):
    """Quantize activations ``x [M, K]`` for ``scheme``: returns ``(q, scale, lowrank_act)``.
    ``lowrank_dtype`` (8-bit schemes): lowrank_act's dtype, float32 by default."""
    op = _resolve(_QUANTIZE_OP[scheme.name], backend)
    if lowrank_dtype is None:
        return op(x, smooth, lora_down)
    if scheme.name not in _ROW_QUANT_FORMAT:
        raise OpInputError(f"quantize_act: scheme {scheme.name} writes lowrank_act in float32 only")
    return op(x, smooth, lora_down, lowrank_dtype)


def supports_static(scheme: Scheme) -> bool:
    """Whether :func:`quantize_act_static` serves ``scheme`` (8-bit activations and weights)."""
    return scheme.name in _STATIC_FORMAT


def quantize_act_static(x: torch.Tensor, scheme: Scheme, smooth: torch.Tensor | None, scale: torch.Tensor):
    """Quantize ``x [M, K]`` with one static (calibrated) scale ``scale [1]`` float32 for the whole
    tensor: ``q [M, K]`` (see :func:`reference.quantize_act_static`). Torch ops on every device: in
    a compiled graph inductor fuses them into the kernel producing ``x``, so the quantization
    costs no pass of its own there."""
    fmt = _STATIC_FORMAT.get(scheme.name)
    if fmt is None:
        raise OpInputError(f"quantize_act_static: scheme {scheme.name} has no static activation scales "
                           f"(supported: {', '.join(_STATIC_FORMAT)})")
    return reference.quantize_act_static(x, smooth, scale, fmt)


def ones_scales(m: int, device: torch.device) -> torch.Tensor:
    """A float32 ``[m]`` view of ones on ``device``: the per-token scale operand of a GEMM whose
    activations carry one static scale (folded into the weight scales instead). Cached per device
    and grown outside compilation and CUDA-graph capture, so a compiled or captured step reads a
    slice of an existing tensor rather than launching a fill kernel."""
    cached = _ONES.get(device)
    if cached is not None and cached.numel() >= m:
        return cached[:m]
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if torch.compiler.is_compiling() or capturing:
        return torch.ones(m, dtype=torch.float32, device=device)
    size = 1 << max(16, (m - 1).bit_length())  # 64K tokens and more: few models ever grow it
    with torch.inference_mode(False):  # a plain tensor even when first asked for under inference_mode
        _ONES[device] = torch.ones(size, dtype=torch.float32, device=device)
    return _ONES[device][:m]


def supports_gelu_cat(scheme: Scheme) -> bool:
    """Whether :func:`quantize_act_gelu_cat` serves ``scheme`` (8-bit per-token activations); the
    GEGLU and LayerNorm quantizations serve the same schemes."""
    return scheme.name in _ROW_QUANT_FORMAT


def producer_quantize_op(scheme: Scheme, kind: str, caller: str = "producer_quantize_op") -> str:
    """The op of ``kind`` ("gelu_cat", "geglu", "layer_norm") for ``scheme``, e.g.
    ``quantize_act_fp8_geglu``; raises OpInputError naming ``caller`` for other schemes."""
    fmt = _ROW_QUANT_FORMAT.get(scheme.name)
    if fmt is None:
        what = {"gelu_cat": "gelu-cat", "geglu": "GEGLU", "layer_norm": "LayerNorm"}[kind]
        raise OpInputError(f"{caller}: scheme {scheme.name} has no {what} quantization "
                           f"(supported: {', '.join(_ROW_QUANT_FORMAT)})")
    return f"layer_norm_quant_{fmt}" if kind == "layer_norm" else f"quantize_act_{fmt}_{kind}"


def quantize_act_gelu_cat(x: torch.Tensor | None, gelu_x: torch.Tensor, scheme: Scheme,
                          smooth: torch.Tensor | None = None, backend: str = "auto"):
    """Quantize the rows ``cat([x, gelu_tanh(gelu_x)], 1)`` for ``scheme`` without forming them:
    ``(q [M, Kx + Kg], scale [M])``, equal to :func:`quantize_act` of the concatenation."""
    op = producer_quantize_op(scheme, "gelu_cat", "quantize_act_gelu_cat")
    return _resolve(op, backend)(x, gelu_x, smooth)


def quantize_act_gelu_cat_lowrank(x: torch.Tensor | None, gelu_x: torch.Tensor, scheme: Scheme,
                                  smooth: torch.Tensor | None, lora_down: torch.Tensor, backend: str = "auto",
                                  lowrank_dtype: torch.dtype | None = None):
    """:func:`quantize_act_gelu_cat` with the low-rank down-projection of the same rows:
    ``(q, scale, lowrank_act [M, r])``, equal to :func:`quantize_act` of the concatenation with
    ``lora_down`` (and ``lowrank_dtype``)."""
    op = producer_quantize_op(scheme, "gelu_cat", "quantize_act_gelu_cat_lowrank") + "_lowrank"
    return _resolve(op, backend)(x, gelu_x, smooth, lora_down, lowrank_dtype)


def quantize_act_gelu_cat_lowrank_cat(x: torch.Tensor | None, gelu_x: torch.Tensor, smooth: torch.Tensor | None,
                                      lora_down: torch.Tensor, inv_c: torch.Tensor, backend: str = "auto"):
    """:func:`quantize_act_lowrank_cat` of the rows ``cat([x, gelu_tanh(gelu_x)], 1)`` without forming
    them: ``(q [M, K + W], scale [M])`` (FP8)."""
    return _resolve("quantize_act_fp8_gelu_cat_lowrank_cat", backend)(x, gelu_x, smooth, lora_down, inv_c)


def quantize_act_geglu(proj: torch.Tensor, scheme: Scheme, smooth: torch.Tensor | None = None,
                       backend: str = "auto"):
    """Quantize the rows ``h * gelu(gate)`` (``[h | gate] = proj [M, 2K]``, diffusers' GEGLU) for
    ``scheme`` without forming them: ``(q [M, K], scale [M])``, equal to :func:`quantize_act` of
    the GEGLU output. Serves the schemes of :func:`supports_gelu_cat`."""
    return _resolve(producer_quantize_op(scheme, "geglu", "quantize_act_geglu"), backend)(proj, smooth)


def layer_norm_quant(x: torch.Tensor, scheme: Scheme, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float, smooth: torch.Tensor | None = None, backend: str = "auto"):
    """Quantize the rows of ``F.layer_norm(x [M, C], (C,), weight, bias, eps)`` for ``scheme``
    without writing them: ``(q [M, C], scale [M])``. Serves the schemes of :func:`supports_gelu_cat`."""
    op = producer_quantize_op(scheme, "layer_norm", "layer_norm_quant")
    return _resolve(op, backend)(x, weight, bias, eps, smooth)


def quantize_act_lowrank_cat(x: torch.Tensor, smooth: torch.Tensor | None, lora_down: torch.Tensor,
                             inv_c: torch.Tensor, backend: str = "auto"):
    """FP8 quantization of ``x [M, K]`` with the low-rank branch appended along K:
    ``(q [M, K + W], scale [M])`` for the FP8 GEMM with a ``lowrank_cat_weight`` (see
    :mod:`qengine.formats.lowrank_cat`)."""
    return _resolve("quantize_act_fp8_lowrank_cat", backend)(x, smooth, lora_down, inv_c)


def quantize_act_lowrank_cat_from(x: torch.Tensor, smooth: torch.Tensor | None, lowrank: torch.Tensor,
                                  inv_c: torch.Tensor, backend: str = "auto"):
    """:func:`quantize_act_lowrank_cat` with the product ``lowrank = (x / smooth) @ lora_down^T``
    ``[M, r]`` float32 given (computed by the caller, e.g. with cuBLAS)."""
    return _resolve("quantize_act_fp8_lowrank_cat_from", backend)(x, smooth, lowrank, inv_c)


def gemm(scheme: Scheme, a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
         bias: torch.Tensor | None = None, lowrank_act: torch.Tensor | None = None,
         lora_up: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16,
         backend: str = "auto") -> torch.Tensor:
    """``(a * a_scale) @ (w * w_scale)^T + lowrank_act @ lora_up^T + bias`` -> ``[M, N]`` of out_dtype."""
    return _resolve(_GEMM_OP[scheme.name], backend)(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype)


def conv2d(scheme: Scheme, x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
           x_scale: torch.Tensor | None, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           backend: str = "auto", *, x2: torch.Tensor | None = None, x2_scale: torch.Tensor | None = None,
           residual: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Quantized conv over NHWC ``x [B, H, W, C]`` with weights ``[O, kh, kw, C]`` -> ``[B, Ho, Wo, O]``.

    ``x2 [B, H, W, C2]`` (split shortcut): the input is ``concat([x, x2], channels)`` with a scale per
    half (``w`` then has ``C + C2`` channels); ``residual [B, Ho, Wo, O]`` is added to the output.
    ``x`` may come pre-quantized (the scheme's 8-bit dtype, contiguous, quantized with the static
    ``x_scale`` by its producer, e.g. ``group_norm_quant_*``); ``out_dtype`` then names the output's.
    """
    if scheme.name not in _CONV_OP:
        raise ValueError(f"scheme {scheme.name} has no conv2d op; conv2d supports {', '.join(_CONV_OP)}")
    return _resolve(_CONV_OP[scheme.name], backend)(x, w, w_scale, bias, x_scale, list(stride), list(padding),
                                                     list(dilation), x2, x2_scale, residual, out_dtype)


__all__ = ["BACKENDS", "MISSING_CUDA_KERNELS", "OpInputError", "conv2d", "gemm", "quantize_act",
           "quantize_act_lowrank_cat", "quantize_act_lowrank_cat_from", "quantize_act_static", "reference",
           "supports_static"]
