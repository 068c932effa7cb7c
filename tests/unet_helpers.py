"""The tiny diffusers UNet (qengine.integrations.tiny_models) in bf16 and its inputs, for the CPU
tests of the UNet-side fusions (test_geglu.py, test_layer_norm_quant.py)."""
from __future__ import annotations

import torch


def tiny_unet():
    from qengine.integrations.tiny_models import build_tiny

    model, _ = build_tiny("unet2d_condition")
    return model.to(torch.bfloat16).eval()


def tiny_unet_inputs(model, seed):
    """(sample, timestep, text) for ``model``, from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    sample = torch.randn(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen).bfloat16()
    text = torch.randn(1, 7, cfg.cross_attention_dim, generator=gen).bfloat16()
    return sample, torch.tensor([500.0]), text
