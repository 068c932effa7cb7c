"""UNet resnet blocks whose GroupNorms write their convs' 8-bit input.

A diffusers ``ResnetBlock2D`` runs, per conv, GroupNorm -> SiLU -> conv; before ``norm2`` it adds
the time embedding (``h + temb``) and at the end the shortcut (``x + h``). With quantized convs
that is, compiled and at batch 1, per block: two GroupNorm kernel pairs writing 16-bit, two SiLU
passes, two bf16 -> 8-bit conv pre-passes, the temb add and the residual add: six full passes over
the activation besides the norms (SDXL: 17 blocks; the pre-passes alone 0.29 ms of a 16.4 ms step,
notes/h100_2026-11-23d).

:func:`swap_resnet_forwards` gives each eligible block a forward where, once both convs have
static input scales (:func:`qengine.calib.calibrate_static_scales`):
- ``norm1`` + SiLU + conv1's quantization are one ``qengine::group_norm_quant_*`` kernel pair,
  whose 8-bit output conv1 takes as is (:meth:`QConv2d.forward_prequantized`);
- ``h + temb`` + ``norm2`` + SiLU + conv2's quantization likewise (the temb add inside the norm);
- the shortcut is added in conv2's epilogue (when ``output_scale_factor == 1``).

Where that does not apply (CPU, fp32, training, dynamic conv scales, hooks on the convs, e.g. the
static-scale calibration's, shapes the kernel does not take) the block runs diffusers' forward.
Numerics: the norm, SiLU and quantization round exactly as the unfused ops do (the CUDA kernel is
the same GroupNorm kernel, the quantization the conv pre-pass's); the residual add in the epilogue
rounds once instead of twice, so the block output can differ by one 16-bit rounding step.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..ops.reference_norms import group_norm_nhwc_unsupported
from . import fused
from .conv import QConv2d

_MARK = "_qengine_resnet_fused"  # instance attribute: the fused forward is installed (value: kernel built)
_GN_QUANT_OP = {"w8a8-int8": "group_norm_quant_int8", "w8a8-fp8": "group_norm_quant_fp8"}


def _is_resnet(mod: nn.Module) -> bool:
    return (type(mod).__name__ == "ResnetBlock2D" and isinstance(getattr(mod, "norm1", None), nn.GroupNorm)
            and isinstance(getattr(mod, "norm2", None), nn.GroupNorm) and isinstance(mod.nonlinearity, nn.SiLU)
            and mod.upsample is None and mod.downsample is None and mod.time_embedding_norm == "default"
            and isinstance(mod.conv1, QConv2d) and isinstance(mod.conv2, QConv2d)
            and mod.conv1.scheme.name in _GN_QUANT_OP and mod.conv2.scheme.name in _GN_QUANT_OP)


def _conv_takes_prequantized(conv: QConv2d) -> bool:
    # Hooks on the conv (the static-scale calibration records its input with one) would not see
    # the fused path's input: such calls take diffusers' forward.
    return (conv.input_scale is not None and conv.split is None and not conv._forward_pre_hooks
            and not conv._forward_hooks)


def _fusable(block: nn.Module, x: torch.Tensor) -> bool:
    if block.training or x.dim() != 4 or x.dtype not in fused._FUSED_DTYPES:
        return False
    if not fused._kernel_device(x, getattr(block, _MARK)):
        return False
    for norm, conv in ((block.norm1, block.conv1), (block.norm2, block.conv2)):
        if not _conv_takes_prequantized(conv) or (norm.weight is not None and norm.weight.dtype != x.dtype):
            return False
        if norm._forward_pre_hooks or norm._forward_hooks:
            return False
        if group_norm_nhwc_unsupported(x.shape[0], norm.num_channels, norm.num_groups) is not None:
            return False
    return True


def _norm_silu_conv(norm: nn.GroupNorm, conv: QConv2d, x: torch.Tensor, add: torch.Tensor | None,
                    residual: torch.Tensor | None) -> torch.Tensor:
    op = getattr(torch.ops.qengine, _GN_QUANT_OP[conv.scheme.name])
    q = op(x.contiguous(memory_format=torch.channels_last), norm.num_groups, norm.weight, norm.bias, norm.eps, True,
           add, conv.input_scale)
    return conv.forward_prequantized(q, x.dtype, residual)


def _resnet_forward(block: nn.Module, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs):
    if args or kwargs.get("scale") is not None or not _fusable(block, input_tensor):
        return type(block).forward(block, input_tensor, temb, *args, **kwargs)
    x = input_tensor
    if block.time_emb_proj is None and temb is not None:  # a raw temb added as is: not this path
        return type(block).forward(block, input_tensor, temb, *args, **kwargs)
    t = None
    if block.time_emb_proj is not None:
        t = block.time_emb_proj(temb if block.skip_time_act else block.nonlinearity(temb))
    h = _norm_silu_conv(block.norm1, block.conv1, x, None, None)
    shortcut = block.conv_shortcut(x) if block.conv_shortcut is not None else x
    if t is not None and not (t.dim() == 2 and t.dtype == h.dtype and tuple(t.shape) == tuple(h.shape[:2])):
        # a temb of another dtype or shape: the eager rest of the block, with its type promotion
        h = block.norm2(h + t[:, :, None, None])
        y = block.conv2(block.dropout(block.nonlinearity(h)))
        return (shortcut + y) / block.output_scale_factor
    add = None if t is None else t.contiguous()
    fuse_residual = block.output_scale_factor == 1.0 and shortcut.dtype == h.dtype
    y = _norm_silu_conv(block.norm2, block.conv2, h, add, shortcut if fuse_residual else None)
    return y if fuse_residual else (shortcut + y) / block.output_scale_factor


def swap_resnet_forwards(model: nn.Module) -> int:
    """Install the fused forward on every ``ResnetBlock2D`` of ``model`` whose two convs are 8-bit
    :class:`QConv2d` (it takes effect on calls where both have static input scales). Returns how
    many blocks it changed; calling it again changes none."""
    built = all(fused._has_cuda_kernel(op) for op in _GN_QUANT_OP.values())
    n = 0
    for mod in model.modules():
        if hasattr(mod, _MARK) or not _is_resnet(mod):
            continue
        setattr(mod, _MARK, built)
        # A partial of a module-level function, not a bound method: it pickles and deep-copies.
        mod.forward = functools.partial(_resnet_forward, mod)
        n += 1
    return n


def restore_resnet_forwards(model: nn.Module) -> int:
    """Undo :func:`swap_resnet_forwards`: every block runs diffusers' forward again (to measure the
    fusion, or where something must see the convs' 16-bit inputs). Returns how many it restored."""
    n = 0
    for mod in model.modules():
        if hasattr(mod, _MARK):
            delattr(mod, _MARK)
            del mod.forward  # the instance attribute: the class's forward shows through again
            n += 1
    return n
