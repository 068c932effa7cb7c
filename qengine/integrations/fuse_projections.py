"""Fuse the q/k/v projections of diffusers attention layers into one Linear (``QuantConfig.fuse_qkv``).

A UNet's self-attention computes ``to_q(x)``, ``to_k(x)`` and ``to_v(x)`` from the same ``x``; its
cross-attention computes ``to_k(c)`` and ``to_v(c)`` from the same text states ``c``. Quantized
separately, each of them quantizes its input again (one activation pass per projection) and runs a
GEMM too small to fill an H100 (SDXL: 1024 x 1280 x 1280, ~8 us, where FP8 buys nothing). Fused,
the input is quantized once and one GEMM of 3x (2x) the width runs instead: the weight rows are
simply stacked, so per-output-channel weight scales and per-token activation scales are the same
numbers as before, and so is every output element up to the GEMM's summation order. (With an
SVDQuant low-rank branch the fused layer gets one branch of the configured rank for its stacked
weight, as nunchaku's fused FLUX projections do, instead of one per projection.)

The fusion acts on the float model, before quantization or calibration, the way diffusers'
``fuse_qkv_projections`` does; the separate projections are removed (not kept beside, as diffusers
does: that would hold their weights twice). The checkpoint stores the fused layers, and
``qengine.load`` fuses the float model the same way before loading (the config says so).

Fused:
- attention layers running diffusers' ``AttnProcessor2_0`` with plain ``nn.Linear`` projections
  and no added (joint) projections, i.e. the UNets' (SD1.5, SDXL): ``to_qkv`` (self) or ``to_kv``
  (cross), and diffusers' ``FusedAttnProcessor2_0``;
- FLUX's ``FluxAttention`` (running diffusers' ``FluxAttnProcessor`` or qengine's fused-norm
  subclass of it, which read ``attn.fused_projections`` themselves): ``to_qkv`` for the image
  stream (4096 x 3072 -> 9216 at 1024x1024 in the double blocks, 4608 x 3072 -> 9216 in the single
  ones, instead of three 3072-wide GEMMs) and ``to_added_qkv`` for the text stream of the double
  blocks. The processor stays;
- SD3's joint attention (diffusers' ``JointAttnProcessor2_0``, text projections present, no q/k
  RMSNorm: SD3-medium; SD3.5's q/k norms are not applied by the fused processor): ``to_qkv`` and
  ``to_added_qkv``, and diffusers' ``FusedJointAttnProcessor2_0``.
The others keep their layers and processors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

#: Processor classes whose computation FusedAttnProcessor2_0 reproduces with fused projections.
FUSABLE_PROCESSORS = ("AttnProcessor2_0",)
#: ... and FusedJointAttnProcessor2_0 (where the attention has no q/k norms: it applies none).
JOINT_PROCESSORS = ("JointAttnProcessor2_0",)
#: FLUX attention processors that read ``attn.fused_projections`` and then call ``to_qkv`` /
#: ``to_added_qkv`` (diffusers' ``_get_qkv_projections``); qengine's subclass does the same.
FLUX_PROCESSORS = ("FluxAttnProcessor", "FusedFluxAttnProcessor")


@dataclass
class FusedAttention:
    """One fused attention layer, with what :func:`unfuse_qkv_projections` needs to undo it."""

    name: str
    module: nn.Module
    removed: dict[str, nn.Module] = field(default_factory=dict)
    processor: object = None


def _attention_class():
    try:
        from diffusers.models.attention_processor import Attention
    except ImportError:
        return None
    return Attention


def _fused_processor(name: str):
    from diffusers.models import attention_processor

    return getattr(attention_processor, name)()


def _same_linears(mods: list) -> bool:
    """Plain nn.Linear layers (not already quantized, not LoRA-wrapped) that can be stacked."""
    if not all(type(m) is nn.Linear for m in mods):
        return False
    w0 = mods[0].weight
    return all(m.in_features == mods[0].in_features and (m.bias is None) == (mods[0].bias is None)
               and m.weight.dtype == w0.dtype and m.weight.device == w0.device for m in mods)


def _is_flux_attention(module: nn.Module) -> bool:
    return type(module).__name__ == "FluxAttention"


_JOINT_NORMS = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")
_ADDED = ["add_q_proj", "add_k_proj", "add_v_proj"]


def _plan(attn: nn.Module) -> tuple[list[tuple[str, list[str]]], str | None] | None:
    """The fusions for one attention layer, ([(fused name, [projection names]), ...], name of the
    diffusers processor class to set or None to keep the processor), or None if it does not fuse."""
    if getattr(attn, "fused_projections", False):
        return None
    processor = type(getattr(attn, "processor", None)).__name__
    if _is_flux_attention(attn):
        if processor not in FLUX_PROCESSORS:
            return None
        plan = [("to_qkv", ["to_q", "to_k", "to_v"])]
        if getattr(attn, "added_kv_proj_dim", None) is not None:
            plan.append(("to_added_qkv", _ADDED))
        new_processor = None
    elif processor in JOINT_PROCESSORS:
        if any(getattr(attn, n, None) is None for n in _ADDED) or any(
                getattr(attn, n, None) is not None for n in _JOINT_NORMS):
            return None
        plan = [("to_qkv", ["to_q", "to_k", "to_v"]), ("to_added_qkv", _ADDED)]
        new_processor = "FusedJointAttnProcessor2_0"
    elif processor in FUSABLE_PROCESSORS:
        if getattr(attn, "add_q_proj", None) is not None or getattr(attn, "add_k_proj", None) is not None:
            return None
        names = ["to_k", "to_v"] if attn.is_cross_attention else ["to_q", "to_k", "to_v"]
        plan = [("to_kv" if len(names) == 2 else "to_qkv", names)]
        new_processor = "FusedAttnProcessor2_0"
    else:
        return None
    if not all(_same_linears([getattr(attn, n, None) for n in names]) for _, names in plan):
        return None
    return plan, new_processor


def _candidates(model: nn.Module):
    attention = _attention_class()
    for name, m in list(model.named_modules()):
        if (attention is not None and isinstance(m, attention)) or _is_flux_attention(m):
            yield name, m


def fusable_attention_names(model: nn.Module) -> list[str]:
    """Names of the attention layers :func:`fuse_qkv_projections` would fuse."""
    return [n for n, m in _candidates(model) if _plan(m) is not None]


def planned_fusions(model: nn.Module) -> dict[str, tuple[str, nn.Linear]]:
    """What :func:`fuse_qkv_projections` would do, without doing it: {projection's full name: (the
    fused layer's full name, a meta-device nn.Linear of the fused shape)} for every projection it
    would remove (``qengine.plan`` shows a fuse_qkv config's layers from this)."""
    out = {}
    for name, attn in _candidates(model):
        planned = _plan(attn)
        if planned is None:
            continue
        for fused_name, names in planned[0]:
            shape = _stacked_linear([getattr(attn, n) for n in names], device="meta")
            for n in names:
                out[f"{name}.{n}" if name else n] = (f"{name}.{fused_name}" if name else fused_name, shape)
    return out


def _stacked_linear(mods: list[nn.Linear], device) -> nn.Linear:
    """An uninitialized nn.Linear with the rows of ``mods`` stacked: their fused layer's shape."""
    return nn.Linear(mods[0].in_features, sum(m.out_features for m in mods), bias=mods[0].bias is not None,
                     device=device, dtype=mods[0].weight.dtype)


def _stack(mods: list[nn.Linear]) -> nn.Linear:
    w0 = mods[0].weight
    fused = _stacked_linear(mods, w0.device)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([m.weight for m in mods]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([m.bias for m in mods]))
    fused.requires_grad_(w0.requires_grad)
    return fused


def fuse_qkv_projections(model: nn.Module) -> list[FusedAttention]:
    """Fuse every fusable attention layer of ``model`` in place; returns what it fused.

    UNet self-attention gets ``to_qkv`` = [to_q; to_k; to_v], cross-attention ``to_kv`` = [to_k;
    to_v] (its ``to_q`` reads other input and stays); FLUX and SD3 attention ``to_qkv`` and, with
    text projections, ``to_added_qkv`` = [add_q_proj; add_k_proj; add_v_proj]. Idempotent: fused
    layers are skipped. Works on meta-device models (no data is read then). Undo with
    :func:`unfuse_qkv_projections`.
    """
    done = []
    for name, attn in _candidates(model):
        planned = _plan(attn)
        if planned is None:
            continue
        plan, new_processor = planned
        record = FusedAttention(name, attn, processor=attn.processor)
        for fused_name, names in plan:
            fused = _stack([getattr(attn, n) for n in names])
            for n in names:
                record.removed[n] = getattr(attn, n)
                delattr(attn, n)
            setattr(attn, fused_name, fused)
        if new_processor is not None:  # (FLUX's processors read fused_projections themselves)
            attn.set_processor(_fused_processor(new_processor))
        attn.fused_projections = True
        done.append(record)
    return done


def unfuse_qkv_projections(records: list[FusedAttention]) -> None:
    """Undo :func:`fuse_qkv_projections` (its returned records): the original modules come back."""
    from ..nn.fused_norm_quant import unfold_layer_norm

    for r in reversed(records):
        attn = r.module
        for fused_name in ("to_qkv", "to_kv", "to_added_qkv"):
            if fused_name in attn._modules:
                unfold_layer_norm(attn._modules[fused_name])  # its norm computes in its own forward again
                delattr(attn, fused_name)
        for n, m in r.removed.items():
            setattr(attn, n, m)
        if not _is_flux_attention(attn):  # FLUX's processor was never changed (and may have been since)
            attn.set_processor(r.processor)
        attn.fused_projections = False
