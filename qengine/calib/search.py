"""Per-layer searches on the layer's own output error, with the inputs observed along the trajectory.

Every candidate is scored by building the real quantized module (``api.calibrated_layer``, the
same code ``quantize`` uses) and running it on the layer's reservoir of inputs:
``err = ||Q(x) - x W^T||^2 / ||x W^T||^2`` (bias excluded: it is exact in 16 bits). So the error
includes everything inference does: smoothing, the low-rank branch, activation and weight
rounding, clipping.

Linear: the smoothing exponent alpha (s_j = max|x_j|^alpha / max|W_:j|^(1-alpha), SmoothQuant's
form; "off" is a candidate too) is chosen on a grid with the rank-r SVD branch of the smoothed
weight recomputed for each candidate (SVDQuant: smoothing moves outliers into the weight, the
branch takes them), then the weight clipping ratio for the chosen alpha.

Conv2d: the op has one activation scale per image (dynamic) or per tensor (static). The search
picks dynamic or a static scale at a fraction of the trajectory's absmax, then a weight clip.

GPTQ (``SearchOptions.gptq``, needs the layer's Hessian from ``observers.HessianAccumulator``):
after the round-to-nearest choice, the residual is GPTQ-rounded for every clip candidate (Linear)
or for the chosen clip and no clip (Conv2d); a GPTQ weight is kept only where it lowers the
layer's real output error (activations quantized too, which GPTQ's objective ignores), so
turning GPTQ on never makes a layer worse on the calibration data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..api import calibrated_layer
from ..config import LayerQuantConfig
from ..formats import get_scheme
from .gptq import gptq_quantize_clips

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
CLIPS = (1.0, 0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.8)
CONV_SCALE_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass
class SearchOptions:
    smooth: bool = True
    lowrank: bool = True
    clip: bool = True
    static_conv_scales: bool = True
    alphas: tuple[float, ...] = ALPHAS
    clips: tuple[float, ...] = CLIPS
    #: GPTQ of the (smoothed, low-rank residual) weight on the trajectory's Hessian
    gptq: bool = True
    gptq_act_order: bool = False
    gptq_damp: float = 0.01
    gptq_block: int = 128
    #: > 1: the smoothing exponent is chosen among the ``alpha_top`` best by layer error on the
    #: denoiser's output error (sensitivity) instead of the layer's own error
    alpha_top: int = 1


@dataclass
class LayerSearch:
    """The chosen calibration of one layer (``calib`` is what ``api.calibrated_layer`` takes) and its errors."""

    calib: dict
    err_rtn: float
    err: float
    notes: dict = field(default_factory=dict)


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-20))


@torch.no_grad()
def _linear_err(mod: nn.Linear, cfg: LayerQuantConfig, calib: dict, x: torch.Tensor, ref: torch.Tensor) -> float:
    q = calibrated_layer(mod, cfg, calib, backend="reference")
    bias = 0.0 if mod.bias is None else mod.bias.float()
    return _rel_err(q(x.to(mod.weight.dtype)).float() - bias, ref)


def smooth_vector(x_absmax: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel divisor, normalised to geometric mean 1 (keeps 16-bit ranges sane)."""
    xa = x_absmax.float().clamp_min(1e-5)
    wa = w.float().abs().amax(dim=0).clamp_min(1e-5)
    s = xa.pow(alpha) / wa.pow(1 - alpha)
    s = s / s.log().mean().exp()
    return s.clamp(1e-4, 1e4)


def top_svd(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lora_down [r, K], lora_up [N, r])`` of the top-``rank`` SVD of ``w [N, K]``, split like
    ``nn.quantize_weight.lowrank_split`` (sqrt of the singular values on each side).

    From the eigendecomposition of the smaller Gram matrix in float64: the search needs one SVD
    per smoothing candidate, and a full float64 SVD costs ~30x more on a CPU. The top singular
    directions (the ones kept) are as accurate as the full SVD's for these condition numbers.
    """
    wd = w.double()
    n, k = wd.shape
    if k <= n:
        evals, v = torch.linalg.eigh(wd.t() @ wd)  # ascending
        v = v[:, -rank:].flip(1)
        sv = evals[-rank:].flip(0).clamp_min(0).sqrt()
        u = (wd @ v) / sv.clamp_min(1e-30)[None, :]
    else:
        evals, u = torch.linalg.eigh(wd @ wd.t())
        u = u[:, -rank:].flip(1)
        sv = evals[-rank:].flip(0).clamp_min(0).sqrt()
        v = (wd.t() @ u) / sv.clamp_min(1e-30)[None, :]
    root = sv.sqrt()
    return (root[:, None] * v.t()).float(), (u * root[None, :]).float()


def _gptq_calibs(w_res: torch.Tensor, h: torch.Tensor, cfg: LayerQuantConfig, calib: dict, clips: tuple[float, ...],
                 opts: SearchOptions) -> list[tuple[float, dict]]:
    """Per clip ratio: ``calib`` plus the GPTQ-rounded residual (``weight``/``weight_scale`` in the
    module's stored layout). One GPTQ sweep serves every clip (``gptq_quantize_clips``)."""
    rs = gptq_quantize_clips(w_res, h, get_scheme(cfg.scheme), cfg.group_size, clips=tuple(clips),
                             block=opts.gptq_block, damp=opts.gptq_damp, act_order=opts.gptq_act_order)
    return [(clip, {**calib, "clip": clip, "weight": r.weight, "weight_scale": r.weight_scale})
            for clip, r in zip(clips, rs)]


def _linear_residual(w: torch.Tensor, calib: dict) -> torch.Tensor:
    """What ``QLinear.from_float`` rounds: W * s - L_up L_down, with s and the factors as stored."""
    ws = w if calib.get("smooth") is None else w * calib["smooth"].float()[None, :]
    if calib.get("lora_down") is not None:
        ws = ws - calib["lora_up"].float() @ calib["lora_down"].float()
    return ws


@torch.no_grad()
def search_linear(mod: nn.Linear, cfg: LayerQuantConfig, x: torch.Tensor, x_absmax: torch.Tensor,
                  opts: SearchOptions, hessian: torch.Tensor | None = None, score_fn=None) -> LayerSearch:
    x = x.to(mod.weight.device)
    w = mod.weight.float()
    ref = x.float() @ w.t()
    dtype = mod.weight.dtype
    rank = cfg.rank if opts.lowrank else 0
    if rank != cfg.rank:
        raise ValueError("SearchOptions.lowrank=False needs a config with rank 0 (the ablation quantizes with rank 0)")
    err_rtn = _linear_err(mod, cfg, {}, x, ref)  # what plain quantize() does (incl. its own SVD if rank > 0)

    def candidate(alpha: float | None) -> dict:
        calib: dict = {}
        ws = w
        if alpha is not None:
            s = smooth_vector(x_absmax.to(w.device), w, alpha).to(dtype)
            calib["smooth"] = s
            ws = w * s.float()[None, :]
        if rank:
            down, up = top_svd(ws, rank)
            calib["lora_down"], calib["lora_up"] = down.to(dtype), up.to(dtype)
        return calib

    cands = [(_linear_err(mod, cfg, candidate(None), x, ref), None)]
    for alpha in (opts.alphas if opts.smooth else ()):
        cands.append((_linear_err(mod, cfg, candidate(alpha), x, ref), alpha))
    tried = {("off" if a is None else a): e for e, a in cands}
    cands.sort(key=lambda c: c[0])
    best_err, best_alpha = cands[0]
    if score_fn is not None and opts.smooth and opts.alpha_top > 1:
        # The layer's own error does not always transfer to the model output: let the model
        # decide among the few best (score_fn: e.g. the denoiser-output error with this layer swapped in).
        scored = [(score_fn(candidate(a)), e, a) for e, a in cands[:opts.alpha_top]]
        _, best_err, best_alpha = min(scored, key=lambda t: t[0])
    best_calib = candidate(best_alpha)
    best_clip, best_err = _search_clip(lambda c: _linear_err(mod, cfg, c, x, ref), best_calib, best_err, opts)
    best_calib["clip"] = best_clip
    notes = {"alpha": best_alpha, "clip": best_clip, "alpha_errors": tried, "gptq": False}
    if opts.gptq and hessian is not None:
        h = hessian.to(w.device).double()
        s = best_calib.get("smooth")
        if s is not None:  # the GEMM sees x / s
            inv = 1.0 / s.double().to(w.device)
            h = h * inv[:, None] * inv[None, :]
        res = _linear_residual(w, best_calib)
        for clip, c in _gptq_calibs(res, h, cfg, best_calib, opts.clips if opts.clip else (1.0,), opts):
            e = _linear_err(mod, cfg, c, x, ref)
            if e < best_err:
                best_calib, best_err, notes["clip"], notes["gptq"] = c, e, clip, True
    return LayerSearch(best_calib, err_rtn, best_err, notes)


def _search_clip(err_fn, calib: dict, best_err: float, opts: SearchOptions) -> tuple[float, float]:
    """The weight clip ratio (1 = none) that lowers ``err_fn(calib + clip)`` most, and that error."""
    best_clip = 1.0
    for clip in (opts.clips[1:] if opts.clip else ()):
        e = err_fn({**calib, "clip": clip})
        if e < best_err:
            best_clip, best_err = clip, e
    return best_clip, best_err


@torch.no_grad()
def _conv_err(mod: nn.Conv2d, cfg: LayerQuantConfig, calib: dict, x: torch.Tensor, ref: torch.Tensor) -> float:
    q = calibrated_layer(mod, cfg, calib, backend="reference")
    bias = 0.0 if mod.bias is None else mod.bias.float()[None, :, None, None]
    return _rel_err(q(x.to(mod.weight.dtype)).float() - bias, ref)


@torch.no_grad()
def search_conv(mod: nn.Conv2d, cfg: LayerQuantConfig, x: torch.Tensor, step_absmax: torch.Tensor,
                opts: SearchOptions, split: int | None = None, hessian: torch.Tensor | None = None) -> LayerSearch:
    x = x.to(mod.weight.device)
    ref = F.conv2d(x.float(), mod.weight.float(), None, mod.stride, mod.padding, mod.dilation)
    err_rtn = _conv_err(mod, cfg, {}, x, ref)
    best, best_err = {}, err_rtn
    notes: dict = {"input_scale": "dynamic"}
    if opts.static_conv_scales:
        top = float(step_absmax.max())
        for frac in CONV_SCALE_FRACTIONS:
            scale = torch.tensor([top * frac / _act_qmax(cfg)], dtype=torch.float32)
            e = _conv_err(mod, cfg, {"input_scale": scale}, x, ref)
            if e < best_err:
                best, best_err, notes["input_scale"] = {"input_scale": scale}, e, f"static {frac:.1f} x absmax"
    best_clip, best_err = _search_clip(lambda c: _conv_err(mod, cfg, c, x, ref), best, best_err, opts)
    best["clip"] = best_clip
    notes["clip"] = best_clip
    notes["gptq"] = False
    if opts.gptq and hessian is not None:
        w2 = mod.weight.float().permute(0, 2, 3, 1).reshape(mod.out_channels, -1)  # the stored (kh, kw, C) order
        h = hessian.to(w2.device).double()
        for clip, c in _gptq_calibs(w2, h, cfg, best, tuple(sorted({best_clip, 1.0})), opts):
            e = _conv_err(mod, cfg, c, x, ref)
            if e < best_err:
                best, best_err, notes["clip"], notes["gptq"] = c, e, clip, True
    if split is not None:
        # Split shortcut: the conv quantizes the two halves of its concatenated input with their
        # own static scales (QConv2d(split=...)) where that measurably beats the best one-scale
        # choice above; the per-half ranges and errors go to the report either way.
        ha, hb = step_absmax[:, :split].max(), step_absmax[:, split:].max()
        ratio = float(torch.maximum(ha, hb) / torch.minimum(ha, hb).clamp_min(1e-8))
        halves = split_half_scales(mod, cfg, best.get("clip", 1.0), x, ref, step_absmax, split)
        notes["split"] = {"at": split, "range_ratio": ratio, **{k: v for k, v in halves.items() if k != "scales"}}
        if halves.get("scales") is not None and split % 16 == 0:
            e = _conv_err(mod, cfg, {**best, "input_scale": None, "split_input_scale": halves["scales"],
                                     "split_at": split}, x, ref)
            if e < best_err:
                best.pop("input_scale", None)
                best["split_input_scale"], best["split_at"] = halves["scales"], split
                best_err, notes["input_scale"] = e, "static per half (split shortcut)"
    return LayerSearch(best, err_rtn, best_err, notes)


def _act_qmax(cfg: LayerQuantConfig) -> float:
    return get_scheme(cfg.scheme).act.scale_divisor


@torch.no_grad()
def split_half_scales(mod: nn.Conv2d, cfg: LayerQuantConfig, clip: float, x: torch.Tensor, ref: torch.Tensor,
                      step_absmax: torch.Tensor, split: int) -> dict:
    """Per-half activation scales for a conv fed by ``cat([a, b])`` (b from channel ``split`` on).

    Emulates a two-scale conv as two convs over the halves, summed (each half's weight columns
    quantized per output channel with ``clip``, round-to-nearest). Returns the output error with
    per-half dynamic scales (``err_dynamic``), with per-half static scales (``err_static``:
    each half's fraction of its trajectory absmax chosen on that half's partial output), the
    chosen fractions and the static scales ``[2]`` float32.
    """
    if split % 16 or (mod.in_channels - split) % 16:
        return {"err_dynamic": float("nan"), "err_static": float("nan"), "scales": None}
    qmax = _act_qmax(cfg)
    dyn, stat, scales, fracs = [], [], [], []
    for lo, hi in ((0, split), (split, mod.in_channels)):
        half = nn.Conv2d(hi - lo, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                         bias=False, device=mod.weight.device, dtype=mod.weight.dtype)
        half.weight.copy_(mod.weight[:, lo:hi])
        xh = x[:, lo:hi].to(mod.weight.dtype)
        part_ref = F.conv2d(xh.float(), half.weight.float(), None, mod.stride, mod.padding, mod.dilation)
        dyn.append(calibrated_layer(half, cfg, {"clip": clip}, backend="reference")(xh).float())
        top = float(step_absmax[:, lo:hi].max())
        best = None
        for frac in CONV_SCALE_FRACTIONS:
            sc = torch.tensor([top * frac / qmax], dtype=torch.float32)
            y = calibrated_layer(half, cfg, {"clip": clip, "input_scale": sc}, backend="reference")(xh).float()
            e = _rel_err(y, part_ref)
            if best is None or e < best[0]:
                best = (e, frac, sc, y)
        stat.append(best[3])
        fracs.append(best[1])
        scales.append(best[2])
    return {"err_dynamic": _rel_err(dyn[0] + dyn[1], ref), "err_static": _rel_err(stat[0] + stat[1], ref),
            "fractions": fracs, "scales": torch.cat(scales)}
