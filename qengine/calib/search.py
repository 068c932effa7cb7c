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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..api import calibrated_layer
from ..config import LayerQuantConfig
from ..formats import get_scheme

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


@torch.no_grad()
def search_linear(mod: nn.Linear, cfg: LayerQuantConfig, x: torch.Tensor, x_absmax: torch.Tensor,
                  opts: SearchOptions) -> LayerSearch:
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

    best_alpha, best_calib, best_err = None, candidate(None), None
    best_err = _linear_err(mod, cfg, best_calib, x, ref)
    tried = {"off": best_err}
    for alpha in (opts.alphas if opts.smooth else ()):
        c = candidate(alpha)
        e = _linear_err(mod, cfg, c, x, ref)
        tried[alpha] = e
        if e < best_err:
            best_alpha, best_calib, best_err = alpha, c, e
    best_clip, best_err = _search_clip(lambda c: _linear_err(mod, cfg, c, x, ref), best_calib, best_err, opts)
    best_calib["clip"] = best_clip
    return LayerSearch(best_calib, err_rtn, best_err, {"alpha": best_alpha, "clip": best_clip, "alpha_errors": tried})


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
                opts: SearchOptions, split: int | None = None) -> LayerSearch:
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
    if split is not None:
        # The op has one activation scale; record how far apart the halves' ranges are (and what
        # a per-half scale would buy) so the report and the mixed-precision plan can act on it.
        ha, hb = step_absmax[:, :split].max(), step_absmax[:, split:].max()
        ratio = float(torch.maximum(ha, hb) / torch.minimum(ha, hb).clamp_min(1e-8))
        notes["split"] = {"at": split, "range_ratio": ratio,
                          "err_per_half_scales": _per_half_err(mod, cfg, best, x, ref, split)}
    return LayerSearch(best, err_rtn, best_err, notes)


def _act_qmax(cfg: LayerQuantConfig) -> float:
    return get_scheme(cfg.scheme).act.scale_divisor


@torch.no_grad()
def _per_half_err(mod: nn.Conv2d, cfg: LayerQuantConfig, calib: dict, x: torch.Tensor, ref: torch.Tensor,
                  split: int) -> float:
    """Output error if each half had its own dynamic activation scale (two convs over the halves, summed).

    This is what a two-scale conv op would give; qengine's conv op has one scale today, so it is
    reported, not used.
    """
    if split % 16 or (mod.in_channels - split) % 16:
        return float("nan")
    ys = []
    for lo, hi in ((0, split), (split, mod.in_channels)):
        half = nn.Conv2d(hi - lo, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                         bias=False, device=mod.weight.device, dtype=mod.weight.dtype)
        half.weight.copy_(mod.weight[:, lo:hi])
        q = calibrated_layer(half, cfg, {"clip": calib.get("clip", 1.0)}, backend="reference")
        ys.append(q(x[:, lo:hi].to(mod.weight.dtype)).float())
    return _rel_err(ys[0] + ys[1], ref)
