"""LayerNorms folded into the quantized linear they feed (one kernel: normalize + quantize).

In an SD/SDXL ``BasicTransformerBlock`` each LayerNorm feeds exactly one linear: ``norm1`` the
fused q/k/v projection (``to_qkv``, ``QuantConfig.fuse_qkv``), ``norm2`` the cross-attention's
``to_q``, ``norm3`` the feed-forward's input projection. Unfused, that is a LayerNorm pass
writing [M, C] 16-bit and a quantize pass reading it back (in the compiled SDXL step on an
H100: ~6-9 us + ~2.5 us per norm, 210 norms a step; ``notes/h100_2026-11-23b``).

:func:`fold_layer_norms` makes each such LayerNorm's forward pass its input through and hands
the norm to the :class:`~qengine.nn.QLinear` it feeds, whose forward then runs
``qengine::layer_norm_quant_*`` (LayerNorm + per-token quantization, the normalized rows never
written) before its GEMM. The LayerNorm stays where it was (same parameters, same state_dict
keys); the QLinear only holds a reference to it. Off the kernel's device (CPU, fp32, C > 4096)
the QLinear applies the norm's own forward first, so the result there is the stock one, bit for
bit. On CUDA the kernel's mean and rstd round differently from torch's LayerNorm: an element of
the normalized row may differ by one unit in its last place (tests/gpu/test_layer_norm_quant.py).

A pair is folded only where the norm's output provably goes nowhere else: a layer_norm block
without positional embedding, chunked feed-forward or cross-attention-only mode, attention
processors that pass the input straight to the projection (diffusers' ``AttnProcessor2_0`` /
``FusedAttnProcessor2_0`` with no group/spatial norm and no residual connection; ``norm1`` only
with fused q/k/v), and a QLinear with 8-bit per-token activations and no low-rank branch.
"""
from __future__ import annotations

import functools

from torch import nn

from .. import ops
from ..ops.reference import LAYER_NORM_QUANT_MAX_C
from .linear import QLinear

_MARK = "_qengine_norm_folded"  # on a folded LayerNorm


def _passthrough(norm: nn.Module, x, *args, **kwargs):
    return x


def _plain_attention_input(attn: nn.Module | None, self_attention: bool) -> bool:
    """Whether ``attn``'s processor feeds its hidden_states straight into to_qkv / to_q."""
    if attn is None:
        return False
    proc = type(getattr(attn, "processor", None)).__name__
    procs = ("FusedAttnProcessor2_0",) if self_attention else ("AttnProcessor2_0", "FusedAttnProcessor2_0")
    return (proc in procs and getattr(attn, "spatial_norm", None) is None and getattr(attn, "group_norm", None) is None
            and not getattr(attn, "residual_connection", True))


def foldable_pairs(block: nn.Module) -> list[tuple[nn.LayerNorm, QLinear]]:
    """The (LayerNorm, QLinear) pairs of ``block`` that :func:`fold_layer_norms` would fold."""
    if (type(block).__name__ != "BasicTransformerBlock" or getattr(block, "norm_type", None) != "layer_norm"
            or getattr(block, "pos_embed", 1) is not None or getattr(block, "only_cross_attention", True)
            or getattr(block, "_chunk_size", 1) is not None):
        return []
    pairs = []
    if _plain_attention_input(block.attn1, True):
        pairs.append((block.norm1, getattr(block.attn1, "to_qkv", None)))
    if _plain_attention_input(getattr(block, "attn2", None), False):
        pairs.append((block.norm2, block.attn2.to_q))
    ff = getattr(block, "ff", None)
    if type(ff).__name__ == "FeedForward" and len(ff.net) and isinstance(getattr(ff.net[0], "proj", None), QLinear):
        pairs.append((block.norm3, ff.net[0].proj))
    return [(n, lin) for n, lin in pairs
            if type(n) is nn.LayerNorm and isinstance(lin, QLinear) and lin.supports_producer_quant()
            and lin._pre_norm is None and not hasattr(n, _MARK) and tuple(n.normalized_shape) == (lin.in_features,)
            and lin.in_features % 16 == 0 and lin.in_features <= LAYER_NORM_QUANT_MAX_C]


def fold_layer_norms(model: nn.Module) -> int:
    """Fold every foldable LayerNorm of ``model``'s transformer blocks into the QLinear it feeds.
    Returns how many it folded; calling it again folds none."""
    from . import fused

    n = 0
    for block in model.modules():
        for norm, lin in foldable_pairs(block):
            op = ops.producer_quantize_op(lin.scheme, "layer_norm")
            # Plain attributes, not submodules: the norm stays registered in its block only (no
            # second state_dict entry); a partial of a module-level function pickles and deep-copies.
            lin.__dict__["_pre_norm"] = norm
            lin.__dict__["_pre_norm_built"] = fused._has_cuda_kernel(op)
            norm.forward = functools.partial(_passthrough, norm)
            setattr(norm, _MARK, True)
            n += 1
    return n


def unfold_layer_norm(lin: nn.Module) -> bool:
    """Undo the fold of the LayerNorm feeding ``lin`` (if any): the norm computes in its own forward again."""
    norm = getattr(lin, "_pre_norm", None) if isinstance(lin, QLinear) else None
    if norm is None:
        return False
    del lin.__dict__["_pre_norm"], lin.__dict__["_pre_norm_built"]
    if hasattr(norm, _MARK):
        del norm.forward
        delattr(norm, _MARK)
    return True


def unfold_layer_norms(model: nn.Module) -> int:
    """Undo :func:`fold_layer_norms` on all of ``model``; returns how many norms it restored."""
    return sum(unfold_layer_norm(m) for m in list(model.modules()))
