"""Round-to-nearest weight quantization into each scheme's stored layout, and the SVD split."""
from __future__ import annotations

import torch

from ..formats import Scheme, pack_int4, quantize_groups, quantize_rows
from ..formats.w4a8_layout import prepack


def weight_shapes(scheme: Scheme, n: int, k: int, group_size: int):
    """``((weight shape, dtype), (scale shape, dtype))`` of a [N, K] weight in ``scheme``."""
    if scheme.weight_grouped:  # packed INT4; per-channel INT4 is one group of K: scale [N, 1]
        return ((n, k // 2), torch.uint8), ((n, k // group_size if group_size else 1), torch.float32)
    return ((n, k), scheme.weight.spec.storage_dtype), ((n,), torch.float32)


def clip_weight(w: torch.Tensor, clip: float, scheme: Scheme, group_size: int) -> torch.Tensor:
    """Clamp each row (per-channel schemes) or each K-group (grouped 4-bit) of ``w`` to ``clip`` x its absmax."""
    if clip >= 1.0:
        return w
    if scheme.weight_grouped and group_size:
        g = w.reshape(w.shape[0], -1, group_size)
        lim = g.abs().amax(dim=2, keepdim=True) * clip
        return torch.maximum(torch.minimum(g, lim), -lim).reshape(w.shape)
    lim = w.abs().amax(dim=1, keepdim=True) * clip
    return torch.maximum(torch.minimum(w, lim), -lim)


def quantize_weight(scheme: Scheme, w: torch.Tensor, group_size: int,
                    clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a float [N, K] weight: per output channel, or packed INT4 in groups along K.

    ``clip`` < 1 first clamps each row or group to that fraction of its absmax (a clipping
    search trades the outliers' error for a finer grid everywhere else)."""
    w = clip_weight(w, clip, scheme, group_size)
    if scheme.weight_grouped:
        q, scale = quantize_groups(w, scheme.weight, group_size or w.shape[1])
        packed = pack_int4(q)
        # w4a8 stores the layout its sm_90a kernel reads (the checkpoint holds it as is).
        return (prepack(packed) if scheme.name == "w4a8" else packed), scale
    return quantize_rows(w, scheme.weight)


def lowrank_split(w: torch.Tensor, rank: int, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` truncated SVD of ``w [N, K]``: ``(lora_down [r, K], lora_up [N, r])``, w ~= up @ down.

    ``method``: "exact" is a float64 SVD (the tail singular values matter for the residual);
    "randomized" is ``torch.svd_lowrank`` in float32 (oversampled by ``rank + 16``, 4 power
    iterations): the top-r subspace of a 3072x12288 layer in milliseconds on a GPU, where the
    float64 SVD takes seconds per layer and minutes per FLUX model. "auto" (default) picks
    randomized for matrices on a GPU with min(N, K) >= 2048, else exact. Either way the residual
    ``w - up @ down`` is exact arithmetic on whatever factors come out, so only how much of ``w``
    the branch absorbs depends on the method. The singular values are split evenly between the
    factors so neither has an outsized range in 16 bits.
    """
    if method == "auto":
        method = "randomized" if w.is_cuda and min(w.shape) >= 2048 else "exact"
    if method == "randomized":
        u, s, v = torch.svd_lowrank(w.float(), q=min(rank + 16, min(w.shape)), niter=4)
        vh = v.mT
    elif method == "exact":
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    else:
        raise ValueError(f"lowrank_split: method must be 'auto', 'exact' or 'randomized', got {method!r}")
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).float(), (u[:, :rank] * root[None, :]).float()
