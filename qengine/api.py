"""``qengine.quantize``: swap a model's Linear/Conv2d layers for quantized ones, in place."""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import LayerQuantConfig, QuantConfig
from .integrations.diffusers import find_denoiser, keep_16bit_patterns
from .integrations.fuse_projections import fuse_qkv_projections, planned_fusions
from .nn import QConv2d, QLinear, check_conv_module, check_linear_shape, enable_fused_kernels, max_lowrank


@dataclass
class PlannedLayer:
    name: str
    kind: str  # "linear" | "conv2d"
    config: LayerQuantConfig | None  # None: stays 16-bit
    reason: str


@dataclass
class QuantState:
    """What ``quantize``/``load`` leave on the model (as ``model.qengine_state``) for ``save``."""

    config: QuantConfig
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> layer spec (checkpoint form)
    kept: dict[str, str] = field(default_factory=dict)  # name -> why it stays 16-bit


def is_quantized(model: nn.Module) -> bool:
    return getattr(model, "qengine_state", None) is not None


def plan(model: nn.Module, config: QuantConfig) -> list[PlannedLayer]:
    """Decide, for every Linear and Conv2d of ``model``, what it becomes and why.

    With ``config.fuse_qkv`` on a model not fused yet, the plan shows the layers as
    :func:`quantize` will make them: each fused layer (``to_qkv`` ...) once, in place of the
    projections it replaces."""
    keep = keep_16bit_patterns(model)
    fusions = planned_fusions(model) if config.fuse_qkv else {}
    planned_fused = set()
    out = []
    for name, mod in model.named_modules():
        if name in fusions:
            name, mod = fusions[name]
            if name in planned_fused:
                continue
            planned_fused.add(name)
        if isinstance(mod, nn.Linear):
            cfg, reason = config.resolve(name, mod, is_conv=False, default_keep=keep)
            if cfg is not None and cfg.rank > max_lowrank(mod.in_features, mod.out_features):
                cfg = dataclasses.replace(cfg, rank=0)
                reason += "; low-rank branch dropped (layer too small for the rank)"
            if cfg is not None:
                try:
                    check_linear_shape(mod.in_features, mod.out_features, cfg)
                except ValueError as e:
                    cfg, reason = None, f"unsupported shape: {e}"
            out.append(PlannedLayer(name, "linear", cfg, reason))
        elif isinstance(mod, nn.Conv2d):
            cfg, reason = config.resolve(name, mod, is_conv=True, default_keep=keep)
            if cfg is not None:
                try:
                    check_conv_module(mod, cfg)
                except ValueError as e:
                    cfg, reason = None, f"unsupported conv: {e}"
            out.append(PlannedLayer(name, "conv2d", cfg, reason))
    return out


def layer_spec(q: nn.Module) -> dict[str, Any]:
    """The checkpoint description of one quantized layer (enough to rebuild it on meta)."""
    spec: dict[str, Any] = {**q.layer_config.to_dict(), "bias": q.bias is not None}
    if isinstance(q, QLinear):
        spec.update(kind="linear", in_features=q.in_features, out_features=q.out_features,
                    smooth=q.smooth is not None, static_input_scale=q.input_scale is not None)
    else:
        spec.update(kind="conv2d", in_channels=q.in_channels, out_channels=q.out_channels,
                    kernel_size=list(q.kernel_size), stride=list(q.stride), padding=list(q.padding),
                    dilation=list(q.dilation), static_input_scale=q.input_scale is not None, split=q.split)
    return spec


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def quantize(obj: Any, config: QuantConfig | str | None = None, *, backend: str = "auto",
             progress: bool = False, calibration: Any = None, fused_kernels: bool = True) -> Any:
    """Quantize a model or diffusers pipeline in place; returns ``obj``.

    ``config`` is a :class:`QuantConfig` or a preset name (default: the calibration's config, else
    "w8a8-fp8"). For a pipeline, its denoiser (``pipe.transformer`` or ``pipe.unet``) is
    quantized; the pipeline then samples as before.

    Without ``calibration``: round-to-nearest weights, dynamic activation scales, and (rank > 0) a
    truncated SVD branch. With ``calibration`` (a ``qengine.calib.CalibrationResult``, or any object
    with ``.config`` and ``.layers: {name: dict}``; see :func:`calibrated_layer`), each layer gets
    its calibrated smoothing vector, low-rank factors, weight clipping and conv input scale, and
    the calibration's config carries its mixed-precision plan (per-layer overrides).

    With ``config.fuse_qkv`` the attention's q/k/v (k/v) projections are first fused into one
    layer each (:mod:`qengine.integrations.fuse_projections`), so they quantize as ``to_qkv`` /
    ``to_kv`` (UNet) or ``to_qkv`` / ``to_added_qkv`` (FLUX, SD3).

    ``fused_kernels`` (default on) also swaps in qengine's fused GroupNorm and FLUX q/k
    norm + rotary kernels, and folds the low-rank branch of FP8 layers on CUDA into their GEMM's K
    (:func:`qengine.nn.enable_fused_kernels`); they run on CUDA 16-bit activations and leave
    every other case to the stock computation.
    """
    if config is None:
        config = calibration.config if calibration is not None else "w8a8-fp8"
    if isinstance(config, str):
        config = QuantConfig.preset(config)
    model, _ = find_denoiser(obj)
    if is_quantized(model):
        raise ValueError("this model is already quantized by qengine; quantize a float model")
    if config.fuse_qkv:
        fuse_qkv_projections(model)
    layers = plan(model, config)
    todo = [p for p in layers if p.config is not None]
    state = QuantState(config, kept={p.name: p.reason for p in layers if p.config is None})
    it = todo
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(todo, desc="quantizing", unit="layer")
    for p in it:
        mod = model.get_submodule(p.name)
        if calibration is not None:
            new = calibrated_layer(mod, p.config, _layer_calibration(calibration, p), backend=backend)
        else:
            cls = QLinear if p.kind == "linear" else QConv2d
            new = cls.from_float(mod, p.config, backend=backend)
        state.layers[p.name] = layer_spec(new)
        set_submodule(model, p.name, new)
    if fused_kernels:
        enable_fused_kernels(model)
    model.qengine_state = state
    return obj


def _layer_calibration(calibration: Any, p: PlannedLayer) -> dict[str, Any]:
    lc = calibration.layers.get(p.name)
    if lc is None:
        raise ValueError(f"layer {p.name!r} is quantized by this config but was not calibrated; "
                         "calibrate with the same config (or pass config=None to use the calibration's)")
    if LayerQuantConfig(**lc["config"]) != p.config:
        raise ValueError(f"layer {p.name!r} was calibrated for {lc['config']} but the config asks for "
                         f"{p.config.to_dict()}; calibrate with the same config")
    return lc


def calibrated_layer(mod: nn.Module, cfg: LayerQuantConfig, lc: dict[str, Any], backend: str = "auto") -> nn.Module:
    """The quantized module for ``mod`` with one layer's calibration applied.

    ``lc`` keys (all optional): ``smooth`` [K] (Linear), ``lora_down`` [r, K] / ``lora_up`` [N, r]
    (Linear), ``clip`` (ratio of each weight row's or group's absmax kept before rounding; 1 = none),
    ``input_scale`` [1] (static activation scale: Conv2d, and 8-bit Linear without a low-rank
    branch), ``split_at`` + ``split_input_scale`` [2]
    (a Conv2d fed by a skip concatenation: one static scale per half), and ``weight`` + ``weight_scale``: a
    GPTQ-rounded weight (of the smoothed low-rank residual) in the module's stored layout, which
    replaces the module's own round-to-nearest one.
    """
    clip = float(lc.get("clip", 1.0))
    if isinstance(mod, nn.Conv2d):
        split = lc.get("split_at")
        if split is not None:
            q = QConv2d.from_float(mod, cfg, input_scale=lc["split_input_scale"], split=int(split), clip=clip,
                                   backend=backend)
        else:
            q = QConv2d.from_float(mod, cfg, input_scale=lc.get("input_scale"), clip=clip, backend=backend)
    else:
        lowrank = None
        if cfg.rank and lc.get("lora_down") is not None:
            lowrank = (lc["lora_down"], lc["lora_up"])
        q = QLinear.from_float(mod, cfg, smooth=lc.get("smooth"), lowrank=lowrank, clip=clip,
                               input_scale=lc.get("input_scale"), backend=backend)
    if lc.get("weight") is not None:
        # The buffers are the stored layout itself (no re-rounding): shapes and dtypes must match.
        for key in ("weight", "weight_scale"):
            src, dst = lc[key], getattr(q, key)
            if src.dtype != dst.dtype or src.numel() != dst.numel():
                raise ValueError(f"calibrated {key} is {src.dtype} {tuple(src.shape)}, the module stores "
                                 f"{dst.dtype} {tuple(dst.shape)}; calibrate with the same config")
            dst.copy_(src.reshape(dst.shape))
    return q


def build_empty_layer(spec: dict[str, Any], dtype: torch.dtype, device, backend: str) -> nn.Module:
    """A quantized module with uninitialised buffers, from its checkpoint spec."""
    cfg = LayerQuantConfig(spec["scheme"], spec["group_size"], spec["rank"])
    if spec["kind"] == "linear":
        return QLinear(spec["in_features"], spec["out_features"], cfg, bias=spec["bias"], smooth=spec["smooth"],
                       static_input_scale=spec.get("static_input_scale", False), dtype=dtype, device=device,
                       backend=backend)
    return QConv2d(spec["in_channels"], spec["out_channels"], spec["kernel_size"], cfg, stride=spec["stride"],
                   padding=spec["padding"], dilation=spec["dilation"], bias=spec["bias"],
                   static_input_scale=spec["static_input_scale"], split=spec.get("split"), dtype=dtype,
                   device=device, backend=backend)


def model_bytes(model: nn.Module, device_type: str | None = None) -> int:
    """Bytes held by a model's parameters and buffers (only those on ``device_type``, e.g. "cuda",
    if given). Tensors sharing storage (a QLinear's weight viewing its low-rank-cat weight, tied
    weights) count once; tensor subclasses (torchao's quantized weights) count their inner tensors."""
    seen, total = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        for leaf in _leaf_tensors(t):
            if device_type is not None and leaf.device.type != device_type:
                continue
            if leaf.device.type == "meta":
                total += leaf.numel() * leaf.element_size()
                continue
            storage = leaf.untyped_storage()
            key = (leaf.device, storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
    return total


def _leaf_tensors(t: torch.Tensor):
    """The plain tensors holding ``t``'s data (a wrapper subclass: its flattened inner tensors)."""
    data = t.data if isinstance(t, nn.Parameter) else t
    if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):
        names, _ = data.__tensor_flatten__()
        for n in names:
            yield from _leaf_tensors(getattr(data, n))
    else:
        yield data


def summary(model: nn.Module) -> str:
    """A short table: layers per scheme, layers kept 16-bit and why."""
    state: QuantState | None = getattr(model, "qengine_state", None)
    if state is None:
        return "not quantized"
    counts: dict[str, int] = {}
    for spec in state.layers.values():
        key = f"{spec['kind']} {spec['scheme']}" + (f" g{spec['group_size']}" if spec["group_size"] else "") + (
            f" r{spec['rank']}" if spec["rank"] else "")
        counts[key] = counts.get(key, 0) + 1
    reasons: dict[str, int] = {}
    for why in state.kept.values():
        reasons[why] = reasons.get(why, 0) + 1
    lines = [f"{n:5d}  {k}" for k, n in sorted(counts.items())]
    lines += [f"{n:5d}  kept 16-bit: {why}" for why, n in sorted(reasons.items())]
    return "\n".join(lines)
