"""Static activation scales: record each quantized layer's input range on calibration runs, then
quantize its activations with that one fixed scale per tensor.

Dynamic scales cost a pass over every activation (a per-token absmax for a linear, a whole-tensor
absmax for a conv) before the GEMM can start. A static scale turns the linear's activation
quantization into a few elementwise ops, which torch.compile fuses into the kernel producing
the activation (LayerNorm, the GEGLU product, a residual add), and lets the conv kernel quantize
its input on the fly with no pre-pass. The price is range: a token whose values are far below
the tensor's calibrated absmax keeps fewer significant bits (INT8) or drifts towards FP8's
subnormals.

FP8 linear scales are rounded up to a power of two: E4M3 keeps its 3 mantissa bits at any
scale, so this costs at most one binade at the bottom of the range, and it makes ``x / scale``
exact whatever code computes it (an eager kernel, inductor's generated one), so compiled and
eager runs quantize identically. INT8 and conv scales are ``absmax / QMAX`` exactly (for INT8 a
power of two would cost up to one bit of the 8).

Usage (after :func:`qengine.quantize`, before compiling)::

    report = calibrate_static_scales(unet, lambda: [unet(**inputs) for inputs in calibration_batches])
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import ops
from ..formats import Format
from ..nn.conv import QConv2d
from ..nn.linear import QLinear

__all__ = ["calibrate_static_scales", "static_scale"]


def static_scale(absmax: float, fmt: Format, power_of_two: bool) -> float:
    """The scale mapping ``absmax`` to the format's largest value (``absmax / QMAX``), rounded up
    to a power of two if asked; 1.0 for an all-zero input."""
    if not math.isfinite(absmax) or absmax < 0:
        raise ValueError(f"static_scale: absmax must be finite and >= 0, got {absmax}")
    if absmax == 0:
        return 1.0
    scale = absmax / fmt.scale_divisor
    return 2.0 ** math.ceil(math.log2(scale)) if power_of_two else scale


def _linear_candidate(mod: QLinear, int8_linears: bool) -> str | None:
    """Why ``mod`` does not get a static scale, or None if it does."""
    if not ops.supports_static(mod.scheme):
        return f"scheme {mod.scheme.name} has no static activation scales"
    if mod.scheme.act is Format.INT8 and not int8_linears:
        return "INT8 activations keep their per-token scales (static ones cost accuracy; int8_linears=True forces them)"
    if mod.layer_config.rank:
        return "has a low-rank branch (its down-projection needs the dynamic quantize kernel)"
    return None


class _Recorder:
    """Running absmax of each watched layer's (smoothed) input, per half for split convs."""

    def __init__(self):
        self.absmax: dict[str, list[float]] = {}

    def linear_hook(self, name: str):
        def hook(mod: QLinear, args, kwargs):
            x = args[0] if args else kwargs["x"]
            if mod._pre_norm is not None:  # folded LayerNorm: the layer quantizes the normalized rows
                x = type(mod._pre_norm).forward(mod._pre_norm, x)
            xf = x.detach().float()
            if mod.smooth is not None:
                xf = xf / mod.smooth.float()
            self._update(name, [xf.abs().amax()])
        return hook

    def conv_hook(self, name: str):
        def hook(mod: QConv2d, args, kwargs):
            x = (args[0] if args else kwargs["x"]).detach()
            if mod.split is None:
                parts = [x.abs().amax()]
            else:
                parts = [x[:, :mod.split].abs().amax(), x[:, mod.split:].abs().amax()]
            self._update(name, parts)
        return hook

    def _update(self, name: str, parts: list[torch.Tensor]) -> None:
        vals = [float(p) for p in parts]
        old = self.absmax.get(name)
        self.absmax[name] = vals if old is None else [max(a, b) for a, b in zip(old, vals)]


@torch.no_grad()
def calibrate_static_scales(model: nn.Module, run: Callable[[], Any], *, linears: bool = True, convs: bool = True,
                            int8_linears: bool = False, margin: float = 1.0,
                            recalibrate: bool = False) -> dict[str, dict[str, Any]]:
    """Run ``run()`` (which calls ``model`` on calibration inputs, e.g. a few sampling steps) with
    the model's current quantization, record the absmax of every quantized layer's input, then
    give each layer a static activation scale: ``margin x absmax`` maps to the format's largest
    value (see :func:`static_scale`).

    ``linears`` / ``convs`` choose the layer kinds. Linears that cannot take a static scale
    (4-bit schemes, a low-rank branch) and layers ``run`` never called stay dynamic. So do INT8
    linears unless ``int8_linears``: per-token scales matter to a fixed-point format (on the
    trained Fashion-MNIST DiT, INT8 samples fell from 45.3 to 36.3 dB SQNR against float with
    static scales, FP8 ones stayed at 34.1 dB; notes/h100_2026-11-23d/README.md). Convs are
    quantized per tensor either way.

    Layers that already have a static scale keep it (reported as ``{"kept": scale}``) and run with
    it during ``run``, unless ``recalibrate``. Such scales come from an earlier call or from
    ``qengine calibrate``'s search, which picks a conv's scale (a fraction of its absmax, or one
    per half of a split shortcut) by the layer's output error, with GPTQ rounding the weights
    against it. Replacing it by the plain absmax lowered the trained Fashion-MNIST UNet's FP8
    sample SQNR (37.10 vs 38.20 dB kept; notes/h100_2026-11-23f/README.md). With
    ``recalibrate=True`` every watched layer is measured again, running with dynamic scales
    during ``run``.
    The model's checkpoint description (``model.qengine_state``) is updated, so a saved
    checkpoint reloads with the static scales. Returns
    ``{layer: {"absmax", "scale"}, {"kept"} or {"skipped"}}``.
    """
    if not margin > 0:
        raise ValueError(f"calibrate_static_scales: margin must be > 0, got {margin}")
    watched: dict[str, nn.Module] = {}
    report: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, QLinear) and linears:
            why = _linear_candidate(mod, int8_linears)
        elif isinstance(mod, QConv2d) and convs:
            why = None
        else:
            continue
        if why is not None:
            report[name] = {"skipped": why}
        elif mod.input_scale is not None and not recalibrate:
            report[name] = {"kept": mod.input_scale.flatten().tolist()}
        else:
            watched[name] = mod
    if not watched and any("kept" in r for r in report.values()):
        return report  # every layer already has its static scale: nothing to measure
    if not watched:
        raise ValueError("calibrate_static_scales: the model has no quantized layer that takes a static scale "
                         "(quantize it with qengine.quantize first)")
    rec = _Recorder()
    handles, saved = [], {}
    try:
        for name, mod in watched.items():
            saved[name] = None if mod.input_scale is None else mod.input_scale.clone()
            if isinstance(mod, QLinear):
                mod.set_input_scale(None)
                # the gelu-cat / GEGLU forwards bypass __call__; route them through it while recording
                mod.__dict__["supports_gelu_cat"] = lambda: False
                handles.append(mod.register_forward_pre_hook(rec.linear_hook(name), with_kwargs=True))
            else:
                mod.input_scale = None
                handles.append(mod.register_forward_pre_hook(rec.conv_hook(name), with_kwargs=True))
        run()
    except BaseException:
        for name, mod in watched.items():  # leave the model as it was
            _restore(mod, saved[name])
        raise
    finally:
        for h in handles:
            h.remove()
        for mod in watched.values():
            mod.__dict__.pop("supports_gelu_cat", None)
    state = getattr(model, "qengine_state", None)
    for name, mod in watched.items():
        absmax = rec.absmax.get(name)
        if absmax is None:
            _restore(mod, saved[name])
            report[name] = {"skipped": "not called during calibration"}
            continue
        fmt = mod.scheme.act
        if isinstance(mod, QLinear):
            scales = [static_scale(absmax[0] * margin, fmt, power_of_two=fmt is Format.FP8_E4M3)]
            mod.set_input_scale(scales[0])
        else:
            scales = [static_scale(a * margin, fmt, power_of_two=False) for a in absmax]
            mod.input_scale = torch.tensor(scales, dtype=torch.float32, device=mod.weight_scale.device)
        report[name] = {"absmax": absmax, "scale": scales}
        if state is not None and name in state.layers:
            from ..api import layer_spec

            state.layers[name] = layer_spec(mod)
    return report


def _restore(mod: nn.Module, scale: torch.Tensor | None) -> None:
    if isinstance(mod, QLinear):
        mod.set_input_scale(scale)
    else:
        mod.input_scale = scale
