"""``calibrate``: trajectory statistics -> per-layer searches -> sensitivity -> mixed-precision plan.

1. Run the full-precision pipeline once (``run_pipeline``) with observers on every layer the
   config quantizes (observers.py: streamed, timestep-aware).
2. Per layer, search the smoothing exponent (with the low-rank branch included), the weight
   clip, and for convs the activation scale (search.py); then GPTQ of the residual weight on the
   Hessian gathered along the trajectory, kept where it lowers the layer's output error
   (gptq.py). UNet layers fed by a skip concatenation get per-half statistics and static
   per-half scales (see ``search.split_half_scales``).
3. Sensitivity: swap ONE calibrated layer into the full-precision model and measure how far the
   denoiser's output moves on calls recorded along the trajectory (relative MSE).
4. Mixed precision: under ``budget`` (a fraction of the quantized weights' parameters), the
   layers with the highest sensitivity per parameter go one level up: 4-bit weights -> w8a8-int8,
   8-bit layers -> 16-bit. Promoted 8-bit layers are searched again for their new config. The
   plan lands in the returned config as per-layer overrides.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..api import calibrated_layer, plan, set_submodule
from ..config import LayerQuantConfig, QuantConfig
from ..formats import get_scheme
from ..integrations.fuse_projections import fuse_qkv_projections
from .observers import collect, skip_concat_splits
from .result import CalibrationError, CalibrationResult
from .search import SearchOptions, search_conv, search_linear


def _output(o: Any) -> torch.Tensor:
    if isinstance(o, torch.Tensor):
        return o
    if hasattr(o, "sample"):
        return o.sample
    return o[0]


@torch.no_grad()
def _sensitivity(model: nn.Module, name: str, qmod: nn.Module, probes, refs) -> float:
    orig = model.get_submodule(name)
    set_submodule(model, name, qmod)
    try:
        num = den = 0.0
        for (args, kwargs), ref in zip(probes, refs):
            out = _output(model(*args, **kwargs)).float()
            num += float((out - ref).pow(2).sum())
            den += float(ref.pow(2).sum())
    finally:
        set_submodule(model, name, orig)
    return num / max(den, 1e-20)


def promote(cfg: LayerQuantConfig) -> dict[str, Any]:
    """The override one level up from ``cfg``: 4-bit weights -> w8a8-int8; 8-bit -> 16-bit."""
    if get_scheme(cfg.scheme).weight_grouped:
        return {"scheme": "w8a8-int8", "group_size": 0}
    return {"scheme": "none"}


def mixed_precision_plan(rows: dict[str, dict[str, Any]], budget: float) -> dict[str, dict[str, Any]]:
    """Greedy knapsack: promote layers by sensitivity per parameter while their parameters fit in ``budget``.

    ``rows[name]`` needs ``params``, ``sensitivity`` and ``config`` (a LayerQuantConfig).
    """
    total = sum(r["params"] for r in rows.values())
    allowed = budget * total
    used = 0
    overrides = {}
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["sensitivity"] / kv[1]["params"]):
        if r["sensitivity"] <= 0 or used + r["params"] > allowed:
            continue
        overrides[name] = promote(r["config"])
        used += r["params"]
    return overrides


def calibrate(model: nn.Module, config: QuantConfig | str, run_pipeline: Callable[[], Any], *,
              steps_per_trajectory: int | None = None, budget: float = 0.1, options: SearchOptions | None = None,
              rows: int = 1024, maps: int = 32, probes: int = 8, seed: int = 0, progress: bool = True,
              log: Callable[[str], None] = print) -> CalibrationResult:
    """Calibrate ``config`` for ``model`` (full precision, left unchanged) on ``run_pipeline()``'s trajectory.

    With ``config.fuse_qkv`` the model's attention projections are fused in place first (the same
    function, computed by fewer, wider layers), so the statistics are those of the fused layers.

    ``run_pipeline`` runs the real sampling loop with ``model`` as its denoiser; every call of
    ``model`` is one step (``steps_per_trajectory`` folds several trajectories onto the same
    step indices in the statistics). ``budget``: fraction of the quantized weight parameters
    that may go one precision level up (0 disables mixed precision). Returns the result; save
    it with ``result.save(path)`` and quantize with ``qengine.quantize(model, calibration=result)``.
    """
    if isinstance(config, str):
        config = QuantConfig.preset(config)
    opts = options or SearchOptions()
    if not opts.lowrank and config.rank:
        config = dataclasses.replace(config, rank=0)
    t0 = time.perf_counter()
    if config.fuse_qkv:
        fuse_qkv_projections(model)
    targets = [p for p in plan(model, config) if p.config is not None]
    if not targets:
        raise CalibrationError("the config quantizes no layer of this model: nothing to calibrate")
    names = [p.name for p in targets]
    log(f"calibrate: collecting activations of {len(names)} layers along the sampling trajectory")
    observers, tracker = collect(model, names, run_pipeline, rows=rows, maps=maps, probes=probes,
                                 steps_per_trajectory=steps_per_trajectory, seed=seed, hessian=opts.gptq)
    t_collect = time.perf_counter() - t0
    refs = [_output(model(*a, **k)).float() for a, k in tracker.probes]
    splits = skip_concat_splits(model)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(targets), desc="calibrating layers", unit="layer")

    def search(name: str, cfg: LayerQuantConfig):
        mod, obs = model.get_submodule(name), observers[name]
        x = obs.reservoir.get()
        h = obs.hessian.get() if obs.hessian is not None else None
        if isinstance(mod, nn.Conv2d):
            return search_conv(mod, cfg, x, obs.step_ranges(), opts, splits.get(name), hessian=h)
        score = None
        if opts.alpha_top > 1 and tracker.probes:
            def score(calib):
                q = calibrated_layer(mod, cfg, calib, backend="reference")
                return _sensitivity(model, name, q, tracker.probes, refs)
        return search_linear(mod, cfg, x, obs.absmax, opts, hessian=h, score_fn=score)

    found, rows_mp = {}, {}
    for p in targets:
        res = search(p.name, p.config)
        found[p.name] = (p.config, res)
        qmod = calibrated_layer(model.get_submodule(p.name), p.config, res.calib, backend="reference")
        sens = _sensitivity(model, p.name, qmod, tracker.probes, refs) if tracker.probes else 0.0
        rows_mp[p.name] = {"params": model.get_submodule(p.name).weight.numel(), "sensitivity": sens,
                           "config": p.config}
        if bar is not None:
            bar.update()
            bar.set_postfix_str(p.name[-32:])
    if bar is not None:
        bar.close()

    overrides = mixed_precision_plan(rows_mp, budget) if budget > 0 else {}
    final_config = dataclasses.replace(config, overrides={**config.overrides, **overrides})
    result = CalibrationResult(final_config)
    for p in plan(model, final_config):
        if p.config is None:
            continue
        cfg, res = found[p.name]
        if p.config != cfg:  # promoted to another low-bit config: search again for it
            cfg, res = p.config, search(p.name, p.config)
        result.layers[p.name] = {**res.calib, "config": cfg.to_dict()}
    for name in names:
        cfg, res = found[name]
        ov = overrides.get(name)
        final = result.layers.get(name)
        as_str = "16-bit (mixed prec.)" if final is None else _cfg_str(LayerQuantConfig(**final["config"]))
        note = []
        if ov is not None:
            note.append(f"promoted from {_cfg_str(cfg)}")
        if res.notes.get("gptq"):
            note.append("GPTQ")
        split = res.notes.get("split")
        if split:
            note.append(f"split@{split['at']} ranges x{split['range_ratio']:.1f}, per-half scales would give "
                        f"{split['err_dynamic']:.1e} dynamic / {split['err_static']:.1e} static")
        result.report.append({"name": name, "as": as_str, "alpha": res.notes.get("alpha"),
                              "clip": res.notes.get("clip", 1.0), "act_scale": res.notes.get("input_scale", "dynamic"),
                              "err_rtn": res.err_rtn, "err": res.err, "sensitivity": rows_mp[name]["sensitivity"],
                              "params": rows_mp[name]["params"], "note": "; ".join(note)})
    result.meta = {"steps_seen": tracker.calls, "steps_per_trajectory": steps_per_trajectory,
                   "rows_per_layer": rows, "maps_per_conv": maps, "probes": len(tracker.probes), "budget": budget,
                   "options": dataclasses.asdict(opts), "seed": seed, "collect_s": round(t_collect, 2),
                   "wall_s": round(time.perf_counter() - t0, 2), "promoted": sorted(overrides),
                   "model": type(model).__name__}
    return result


def _cfg_str(cfg: LayerQuantConfig) -> str:
    s = cfg.scheme + (f" g{cfg.group_size}" if cfg.group_size else "")
    return s + (f" r{cfg.rank}" if cfg.rank else "")
