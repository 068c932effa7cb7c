"""GPTQ (Frantar et al. 2022) for qengine's weight layouts, on Hessians gathered along the trajectory.

The quantized GEMM computes ``Q(x') . Q(R)^T`` with ``x' = x / s`` (smoothing) and the residual
``R = W * s - L_up L_down`` (low-rank branch). GPTQ rounds ``R`` one input column at a time and
spreads each column's rounding error over the columns not yet rounded, weighted by the inverse of
``H = E[x' x'^T]`` (the layer-input second moment), so the OUTPUT error ``||x' (R - Q(R))^T||`` is
what gets minimised rather than the weight error. Here:

- ``H`` comes from every input row the layer saw along the calibration trajectories (all steps,
  all samples; ``observers.HessianAccumulator``), not from a reservoir, and is transformed to the
  smoothed input space per smoothing candidate: ``H' = diag(1/s) H diag(1/s)``.
- Scales follow the module's own rule so the result drops into the stored layout unchanged:
  8-bit weights (INT8, FP8 E4M3): one scale per output row, ``clip * absmax(row) / QMAX``,
  fixed before the sweep; INT4: one scale per K-group, taken from the group's (already
  error-updated) weights when the sweep reaches the group (``act_order`` uses static groups from
  the original weights instead, since columns are then visited out of group order).
- Block-wise with lazy batch updates (columns in blocks of ``block``; the rest of the matrix is
  updated once per block), dampening ``damp * mean(diag H)``, optional act-order (columns by
  decreasing ``diag H``).

With ``H`` = identity every error update is zero and GPTQ is exactly round-to-nearest (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import Scheme, absmax_scale, pack_int4, round_to_format
from ..formats.w4a8_layout import prepack


@dataclass
class GPTQResult:
    """``weight``/``weight_scale`` in the module's stored layout, and the dequantized residual."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    dequant: torch.Tensor


def _prepare_hinv(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp*mean(diag H) I)^-1`` (float64)."""
    h = h.double().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0  # a channel that was always 0: its row/column of H is 0, any weight is exact
    diag = torch.diagonal(h)
    h += torch.eye(len(h), dtype=h.dtype, device=h.device) * (damp * float(diag.mean()))
    for extra in (0.0, 1e-6, 1e-4, 1e-2):  # H from few rows can be (numerically) singular
        try:
            if extra:
                h += torch.eye(len(h), dtype=h.dtype, device=h.device) * (extra * float(diag.mean()))
            chol = torch.linalg.cholesky(h)
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
        except torch.linalg.LinAlgError:
            continue
    raise RuntimeError("GPTQ: the Hessian is not positive definite even with extra dampening")


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, scheme: Scheme, group_size: int = 0, *, clip: float = 1.0,
                  block: int = 128, damp: float = 0.01, act_order: bool = False) -> GPTQResult:
    """GPTQ-quantize ``w [N, K]`` (float) for input second moment ``h [K, K]`` in ``scheme``'s weight format.

    ``group_size`` > 0 only for the grouped 4-bit schemes (it must divide K). ``clip`` scales each
    row's (8-bit) or group's (4-bit) absmax before the scale is taken, as ``quantize_weight`` does.
    """
    return gptq_quantize_clips(w, h, scheme, group_size, clips=(clip,), block=block, damp=damp,
                               act_order=act_order)[0]


#: rows x K float64 elements one sweep may hold (several clip candidates are stacked up to this)
_SWEEP_ELEMENTS = 1 << 26  # 512 MiB


@torch.no_grad()
def gptq_quantize_clips(w: torch.Tensor, h: torch.Tensor, scheme: Scheme, group_size: int = 0, *,
                        clips: tuple[float, ...] = (1.0,), block: int = 128, damp: float = 0.01,
                        act_order: bool = False) -> list[GPTQResult]:
    """:func:`gptq_quantize` for each clip ratio in ``clips``, in one sweep over the columns.

    GPTQ treats every output row on its own (the error feedback runs along K, within a row), so
    the candidates are stacked as extra rows of one matrix with a clip ratio per row: the
    column loop, the search's cost, runs once instead of once per clip (results are identical).
    """
    n, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"GPTQ: Hessian shape {tuple(h.shape)} does not match the weight's K={k}")
    grouped = scheme.weight_grouped
    if grouped and group_size == 0:
        group_size = k  # per-channel INT4 (w4a8's default): one group spanning K, as quantize_weight does
    if grouped and (group_size <= 0 or k % group_size):
        raise ValueError(f"GPTQ: K={k} is not a multiple of the group size {group_size}")
    if grouped:
        block = max(group_size, block // group_size * group_size)  # a group never straddles two blocks
    perm = torch.argsort(torch.diagonal(h).double(), descending=True) if act_order else None
    hp = h if perm is None else h[perm][:, perm]
    hinv = _prepare_hinv(hp.to(w.device), damp)
    per_sweep = max(1, _SWEEP_ELEMENTS // max(1, n * k))
    out: list[GPTQResult] = []
    for i in range(0, len(clips), per_sweep):
        out += _sweep(w, hinv, perm, scheme, group_size, clips[i:i + per_sweep], block)
    return out


def _sweep(w: torch.Tensor, hinv: torch.Tensor, perm: torch.Tensor | None, scheme: Scheme, group_size: int,
           clips: tuple[float, ...], block: int) -> list[GPTQResult]:
    fmt = scheme.weight
    n, k = w.shape
    c = len(clips)
    grouped = scheme.weight_grouped
    wc = w.repeat(c, 1)  # [c*N, K]: candidate j is rows j*N .. (j+1)*N
    # One clip per row, float32 like the Python float quantize_weight multiplies by.
    clip_rows = torch.tensor(clips, dtype=torch.float32, device=w.device).repeat_interleave(n)
    W = wc.double().clone() if perm is None else wc.double()[:, perm].clone()
    qmax = fmt.scale_divisor  # the scale rule's QMAX: clamp like clip_weight does (INT4 never gives -8)
    rows = c * n

    # Scales: 8-bit per row up front; 4-bit per group (static when act-order, else at each group's
    # start). In float32 exactly as quantize_weight computes them, so H = I reproduces it bit for bit.
    if grouped:
        n_groups = k // group_size
        scales = torch.zeros(rows, n_groups, dtype=torch.float32, device=w.device)
        if perm is not None:
            scales = absmax_scale(wc.float().reshape(rows, n_groups, group_size).abs().amax(dim=2) * clip_rows[:, None],
                                  fmt)
    else:
        scales = absmax_scale(wc.float().abs().amax(dim=1) * clip_rows, fmt)
    codes = torch.zeros_like(W)
    perm_list = perm.tolist() if perm is not None else None

    def col_scale(j: int, w1: torch.Tensor, i: int) -> torch.Tensor:
        if not grouped:
            return scales
        orig = perm_list[j] if perm is not None else j
        g = orig // group_size
        if perm is None and j % group_size == 0:
            grp = w1[:, i:i + group_size]
            scales[:, g] = absmax_scale(grp.float().abs().amax(dim=1) * clip_rows, fmt)
        return scales[:, g]

    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            sc = col_scale(i1 + i, w1, i)
            # The module's rounding rule, in float32 as in quantize_weight (clamp = clip's saturation).
            q = round_to_format((col.float() / sc).clamp(-qmax, qmax), fmt).float().double()
            codes[:, i1 + i] = q
            e = (col - q * sc.double()) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        if i2 < k:
            W[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    results = []
    for j in range(c):
        cj, sj = codes[j * n:(j + 1) * n], scales[j * n:(j + 1) * n]
        if grouped:
            deq = (cj.reshape(n, -1, group_size) * sj.double()[:, :, None]).reshape(n, k)
            stored = pack_int4(cj.round().to(torch.int8))
            if scheme.name == "w4a8":
                stored = prepack(stored)  # the layout QLinear stores for w4a8 (its sm_90a kernel's)
        else:
            deq = cj * sj.double()[:, None]
            stored = round_to_format(cj.float(), fmt)  # codes are already on the grid: exact
        results.append(GPTQResult(stored, sj.clone(), deq.float()))
    return results
