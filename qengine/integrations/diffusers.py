"""What qengine knows about diffusers denoisers: where the denoiser sits in a pipeline, which of
its layers stay 16-bit by default, and the real-size configs we ship.

Nothing here imports diffusers at module import time; only ``build_from_config`` needs it.

Layers kept 16-bit by default
-----------------------------
``KEEP_16BIT[class_name]`` holds ``fnmatch`` patterns over the fully-qualified names that
``denoiser.named_modules()`` yields (matched with ``fnmatch.fnmatchcase`` against the whole name;
``*`` also crosses dots). Only Linear and Conv2d layers are candidates for low-bit in the first
place. Three reasons recur:

- **in/out**: the first and last projections of the network. Their inputs (latents, raw text
  encoder states) or outputs (the predicted noise/velocity itself) have no redundancy to hide
  quantization noise, their shapes (in_channels 4/16/64) are a poor fit for low-bit kernels,
  and they are a negligible share of the FLOPs.
- **embed**: the timestep / guidance / pooled-text / class embedding MLPs. The time path is
  hypersensitive (TFMQ-DM, Q-Diffusion) and depends only on (t, conditioning), so it is computed
  once per step (M = batch) and can be cached: low-bit would buy nothing and cost quality.
- **mod**: every projection of that embedding into a block: a UNet resnet's ``time_emb_proj``
  and every adaLN modulation Linear of a DiT-style block. They are M = batch GEMVs that produce
  the scale/shift/gate of whole blocks, so an error there is an error in every token.

====================== ================================================ ======================
architecture           kept 16-bit (pattern)                            why
====================== ================================================ ======================
UNet2DConditionModel   ``conv_in``, ``conv_out``                        in/out (latent convs)
(SD1.x, SD2.x, SDXL)   ``time_embedding.*``                             embed (t; LCM cond_proj)
                       ``add_embedding.*``                              embed (SDXL text_time)
                       ``class_embedding*``                             embed (class/noise lvl)
                       ``encoder_hid_proj*``                            in (text proj, IF/Kand.)
                       ``*.time_emb_proj``                              mod (per-resnet t proj)
UNet2DModel            ``conv_in``, ``conv_out``                        in/out
(DDPM-style)           ``time_embedding.*``, ``class_embedding*``       embed
                       ``*.time_emb_proj``                              mod
FluxTransformer2DModel ``x_embedder``, ``context_embedder``             in (latent / T5 proj)
(FLUX.1 dev/schnell)   ``proj_out``                                     out
                       ``time_text_embed.*``                            embed (t, guidance,
                                                                        pooled CLIP)
                       ``transformer_blocks.*.norm1.linear``            mod (adaLN-Zero, image)
                       ``transformer_blocks.*.norm1_context.linear``    mod (adaLN-Zero, text)
                       ``single_transformer_blocks.*.norm.linear``      mod (single-block adaLN)
                       ``norm_out.linear``                              mod (final adaLN)
SD3Transformer2DModel  ``pos_embed.proj``                               in (patchify conv)
(SD3, SD3.5)           ``context_embedder``, ``proj_out``               in / out
                       ``time_text_embed.*``                            embed (t, pooled text)
                       ``transformer_blocks.*.norm1.linear``            mod (adaLN-Zero(X))
                       ``transformer_blocks.*.norm1_context.linear``    mod (adaLN; last block
                                                                        continuous)
                       ``norm_out.linear``                              mod (final adaLN)
DiTTransformer2DModel  ``pos_embed.proj``                               in (patchify conv)
(class-conditional)    ``transformer_blocks.*.norm1.emb.*``             embed (t + class, one
                                                                        copy per block)
                       ``transformer_blocks.*.norm1.linear``            mod (adaLN-Zero)
                       ``proj_out_1``                                   mod (final shift/scale)
                       ``proj_out_2``                                   out
====================== ================================================ ======================

Everything else that is a Linear or Conv2d is a low-bit candidate: attention q/k/v/out (incl.
FLUX's ``add_*_proj``/``to_add_out``), feed-forwards, FLUX single-block ``proj_mlp`` and
``proj_out``, UNet resnet convs and shortcuts, down/up-sampler convs, and the UNet transformers'
``proj_in``/``proj_out`` (1x1 Conv2d in SD1.x, Linear in SDXL).

Names checked against diffusers 0.42 models built from ``model_configs/`` and from tiny configs
(incl. class-/encoder_hid-/SD3.5 dual-attention variants): every pattern matches a Linear or
Conv2d in at least one of them. Watch for near-misses a looser pattern would catch: FLUX's
``single_transformer_blocks.*.proj_out`` is a 15360-wide fused attention+MLP output (quantize
it), not the model's ``proj_out``; and every UNet attention has its own ``proj_in``/``proj_out``,
so the UNet patterns never use ``proj_*``.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "KEEP_16BIT",
    "MODEL_CONFIGS",
    "find_denoiser",
    "keep_16bit_patterns",
    "keep_16bit_names",
    "MODULATION",
    "modulation_overrides",
    "load_model_config",
    "build_from_config",
]

SUPPORTED_ARCHITECTURES: tuple[str, ...] = (
    "UNet2DConditionModel",
    "FluxTransformer2DModel",
    "SD3Transformer2DModel",
    "DiTTransformer2DModel",
    "UNet2DModel",
)

_UNET_KEEP: tuple[str, ...] = (
    # in: the latent (4 channels for SD/SDXL) -> first feature map
    "conv_in",
    # out: last feature map -> predicted noise; its output IS the model output
    "conv_out",
    # embed: sinusoidal t -> time embedding MLP (linear_1, linear_2; LCM's cond_proj)
    "time_embedding.*",
    # mod: each resnet's projection of the time embedding to a per-channel bias (or
    # scale/shift); one per resnet in every down/mid/up block
    "*.time_emb_proj",
    # embed: class / noise-level conditioning (a Linear itself for "simple_projection", a
    # TimestepEmbedding for "timestep"/"projection"; an nn.Embedding for num_class_embeds)
    "class_embedding*",
)

KEEP_16BIT: dict[str, tuple[str, ...]] = {
    "UNet2DConditionModel": _UNET_KEEP
    + (
        # embed: SDXL's "text_time" added embedding (pooled text + size/crop ids, 2816 wide),
        # and the other addition_embed_type variants (Kandinsky, ...)
        "add_embedding.*",
        # in: projection of the encoder hidden states before cross-attention (DeepFloyd IF's
        # text_proj, Kandinsky's text/image projections); a Linear itself or a container
        "encoder_hid_proj*",
    ),
    "UNet2DModel": _UNET_KEEP,
    "FluxTransformer2DModel": (
        # in: packed latent patches (64 = 16 channels x 2x2) -> hidden
        "x_embedder",
        # in: T5 hidden states (4096) -> hidden; computed per step on constant inputs
        "context_embedder",
        # out: final hidden -> packed velocity
        "proj_out",
        # embed: timestep_embedder, guidance_embedder (dev), text_embedder (pooled CLIP)
        "time_text_embed.*",
        # mod: adaLN-Zero of the image stream of each double block (6 x hidden out)
        "transformer_blocks.*.norm1.linear",
        # mod: adaLN-Zero of the text stream of each double block
        "transformer_blocks.*.norm1_context.linear",
        # mod: adaLN-Zero of each single block (3 x hidden out)
        "single_transformer_blocks.*.norm.linear",
        # mod: final AdaLayerNormContinuous (scale, shift) before proj_out
        "norm_out.linear",
    ),
    "SD3Transformer2DModel": (
        # in: patchify conv (2x2, stride 2) of the 16-channel latent
        "pos_embed.proj",
        # in: joint CLIP+T5 hidden states (4096) -> hidden
        "context_embedder",
        # out: final hidden -> velocity patches
        "proj_out",
        # embed: timestep_embedder and text_embedder (pooled CLIP-L+G, 2048)
        "time_text_embed.*",
        # mod: adaLN-Zero of the image stream (AdaLayerNormZeroX with 9 x hidden in SD3.5's
        # dual-attention blocks)
        "transformer_blocks.*.norm1.linear",
        # mod: adaLN of the text stream (AdaLayerNormContinuous in the context_pre_only last
        # block)
        "transformer_blocks.*.norm1_context.linear",
        # mod: final AdaLayerNormContinuous before proj_out
        "norm_out.linear",
    ),
    "DiTTransformer2DModel": (
        # in: patchify conv of the latent
        "pos_embed.proj",
        # embed: CombinedTimestepLabelEmbeddings inside each block's AdaLayerNormZero
        # (timestep_embedder.linear_1/2; the class_embedder is an nn.Embedding)
        "transformer_blocks.*.norm1.emb.*",
        # mod: adaLN-Zero shift/scale/gate projection of each block
        "transformer_blocks.*.norm1.linear",
        # mod: final adaLN (emb -> shift, scale) before the output projection
        "proj_out_1",
        # out: final hidden -> noise (and learned sigma) patches
        "proj_out_2",
    ),
}

#: The "mod" subset of KEEP_16BIT: the projections of the time/conditioning embedding into each
#: block. They stay 16-bit by default (an error there is an error in every token), but they
#: hold many weights (FLUX.1: 3.2B of 11.9B parameters), so a memory-bound deployment can make
#: them low-bit too with :func:`modulation_overrides`; bench_pipeline's ``-mod`` modes measure
#: what that costs in output SQNR.
MODULATION: dict[str, tuple[str, ...]] = {
    "UNet2DConditionModel": ("*.time_emb_proj",),
    "UNet2DModel": ("*.time_emb_proj",),
    "FluxTransformer2DModel": ("transformer_blocks.*.norm1.linear", "transformer_blocks.*.norm1_context.linear",
                               "single_transformer_blocks.*.norm.linear", "norm_out.linear"),
    "SD3Transformer2DModel": ("transformer_blocks.*.norm1.linear", "transformer_blocks.*.norm1_context.linear",
                              "norm_out.linear"),
    "DiTTransformer2DModel": ("transformer_blocks.*.norm1.linear", "proj_out_1"),
}

MODEL_CONFIGS: dict[str, str] = {
    "sd15_unet": "UNet2DConditionModel",
    "sdxl_unet": "UNet2DConditionModel",
    "flux1_dev_transformer": "FluxTransformer2DModel",
    "sd3_medium_transformer": "SD3Transformer2DModel",
}

_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


def find_denoiser(obj) -> tuple[nn.Module, str | None]:
    """The denoiser to quantize, and the pipeline attribute holding it.

    An ``nn.Module`` is the denoiser itself (``(obj, None)``). Otherwise ``obj`` is taken as a
    diffusers pipeline: its ``transformer``, else its ``unet``, if that is an ``nn.Module``.
    """
    if isinstance(obj, nn.Module):
        return obj, None
    for attr in ("transformer", "unet"):
        module = getattr(obj, attr, None)
        if isinstance(module, nn.Module):
            return module, attr
    raise TypeError(
        f"expected an nn.Module or a diffusers pipeline with a `transformer` or `unet` module, "
        f"got {type(obj).__module__}.{type(obj).__qualname__}"
    )


def keep_16bit_patterns(model: nn.Module) -> tuple[str, ...]:
    """Default keep-16-bit patterns for ``model``'s class (by class name); () if unknown."""
    return KEEP_16BIT.get(type(model).__name__, ())


def modulation_overrides(model: nn.Module, **layer: Any) -> dict[str, dict[str, Any]]:
    """``QuantConfig.overrides`` that quantize ``model``'s modulation layers (see :data:`MODULATION`)
    with the config's scheme, or with ``layer`` (e.g. ``rank=0``); {} for an unknown class.

    >>> cfg = QuantConfig.preset("w4a8", rank=32, overrides=modulation_overrides(transformer))
    """
    return {pattern: dict(layer) for pattern in MODULATION.get(type(model).__name__, ())}


def keep_16bit_names(model: nn.Module, patterns: tuple[str, ...] | None = None) -> list[str]:
    """Names of the Linear/Conv2d modules of ``model`` that ``patterns`` (default: the class
    defaults) keep 16-bit, in ``named_modules()`` order."""
    if patterns is None:
        patterns = keep_16bit_patterns(model)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
        and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    ]


def load_model_config(name: str) -> dict:
    """A shipped real-size config (see ``MODEL_CONFIGS``) as a dict for ``Model.from_config``."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model config {name!r}; shipped: {sorted(MODEL_CONFIGS)}")
    with open(_CONFIG_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def build_from_config(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The real-size architecture ``name`` with uninitialised weights on ``device`` (meta by
    default: exact layer names and shapes at no memory cost)."""
    import diffusers

    cls = getattr(diffusers, MODEL_CONFIGS[name]) if name in MODEL_CONFIGS else None
    if cls is None:
        raise ValueError(f"unknown model config {name!r}; shipped: {sorted(MODEL_CONFIGS)}")
    with torch.device(device):
        return cls.from_config(load_model_config(name))
