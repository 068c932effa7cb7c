"""Fuse the q/k/v projections of diffusers attention layers into one Linear (``QuantConfig.fuse_qkv``).

A UNet's self-attention computes ``to_q(x)``, ``to_k(x)`` and ``to_v(x)`` from the same ``x``; its
cross-attention computes ``to_k(c)`` and ``to_v(c)`` from the same text states ``c``. Quantized
separately, each of them quantizes its input again (one activation pass per projection) and runs a
GEMM too small to fill an H100 (SDXL: 1024 x 1280 x 1280, ~8 us, where FP8 buys nothing). Fused,
the input is quantized once and one GEMM of 3x (2x) the width runs instead: the weight rows are
simply stacked, so per-output-channel weight scales and per-token activation scales are the same
numbers as before, and so is every output element up to the GEMM's summation order.

The fusion acts on the float model, before quantization or calibration, the way diffusers'
``fuse_qkv_projections`` does: the attention gets ``to_qkv`` (self) or ``to_kv`` (cross)
and diffusers' ``FusedAttnProcessor2_0``; the separate projections are removed (not kept beside,
as diffusers does: that would hold their weights twice). The checkpoint stores the fused layers,
and ``qengine.load`` fuses the float model the same way before loading (the config says so).

Only attention layers running diffusers' ``AttnProcessor2_0`` with plain ``nn.Linear`` projections
and no added (joint) projections are fused: the UNets' (SD1.5, SDXL) attention. The others keep
their layers and processors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

#: Processor classes whose computation FusedAttnProcessor2_0 reproduces with fused projections.
FUSABLE_PROCESSORS = ("AttnProcessor2_0",)


@dataclass
class FusedAttention:
    """One fused attention layer, with what :func:`unfuse_qkv_projections` needs to undo it."""

    name: str
    module: nn.Module
    removed: dict[str, nn.Module] = field(default_factory=dict)
    processor: object = None


def _attention_class():
    try:
        from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0
    except ImportError:
        return None, None
    return Attention, FusedAttnProcessor2_0


def _fusable(attn: nn.Module) -> list[str] | None:
    """The projections to fuse (["to_q", "to_k", "to_v"] or ["to_k", "to_v"]), or None."""
    if getattr(attn, "fused_projections", False):
        return None
    if type(getattr(attn, "processor", None)).__name__ not in FUSABLE_PROCESSORS:
        return None
    if getattr(attn, "add_q_proj", None) is not None or getattr(attn, "add_k_proj", None) is not None:
        return None
    names = ["to_k", "to_v"] if attn.is_cross_attention else ["to_q", "to_k", "to_v"]
    mods = [getattr(attn, n, None) for n in names]
    if not all(type(m) is nn.Linear for m in mods):  # exactly Linear: not already quantized, not LoRA-wrapped
        return None
    w0 = mods[0].weight
    if any(m.in_features != mods[0].in_features or (m.bias is None) != (mods[0].bias is None)
           or m.weight.dtype != w0.dtype or m.weight.device != w0.device for m in mods):
        return None
    return names


def fusable_attention_names(model: nn.Module) -> list[str]:
    """Names of the attention layers :func:`fuse_qkv_projections` would fuse."""
    attention, _ = _attention_class()
    if attention is None:
        return []
    return [n for n, m in model.named_modules() if isinstance(m, attention) and _fusable(m) is not None]


def fuse_qkv_projections(model: nn.Module) -> list[FusedAttention]:
    """Fuse every fusable attention layer of ``model`` in place; returns what it fused.

    Self-attention gets ``to_qkv`` = [to_q; to_k; to_v], cross-attention ``to_kv`` = [to_k; to_v]
    (its ``to_q`` reads other input and stays). Idempotent: fused layers are skipped. Works on
    meta-device models (no data is read then). Undo with :func:`unfuse_qkv_projections`.
    """
    attention, fused_processor = _attention_class()
    if attention is None:
        return []
    done = []
    for name, attn in list(model.named_modules()):
        if not isinstance(attn, attention):
            continue
        names = _fusable(attn)
        if names is None:
            continue
        mods = [getattr(attn, n) for n in names]
        w0 = mods[0].weight
        fused = nn.Linear(mods[0].in_features, sum(m.out_features for m in mods), bias=mods[0].bias is not None,
                          device=w0.device, dtype=w0.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([m.weight for m in mods]))
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([m.bias for m in mods]))
        fused.requires_grad_(w0.requires_grad)
        record = FusedAttention(name, attn, {n: m for n, m in zip(names, mods)}, attn.processor)
        for n in names:
            delattr(attn, n)
        setattr(attn, "to_qkv" if len(names) == 3 else "to_kv", fused)
        attn.set_processor(fused_processor())
        attn.fused_projections = True
        done.append(record)
    return done


def unfuse_qkv_projections(records: list[FusedAttention]) -> None:
    """Undo :func:`fuse_qkv_projections` (its returned records): the original modules come back."""
    from ..nn.fused_norm_quant import unfold_layer_norm

    for r in reversed(records):
        attn = r.module
        for fused_name in ("to_qkv", "to_kv"):
            if fused_name in attn._modules:
                unfold_layer_norm(attn._modules[fused_name])  # its norm computes in its own forward again
                delattr(attn, fused_name)
        for n, m in r.removed.items():
            setattr(attn, n, m)
        attn.set_processor(r.processor)
        attn.fused_projections = False
