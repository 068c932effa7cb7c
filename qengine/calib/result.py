"""The calibration result: what ``qengine.quantize(model, calibration=...)`` consumes, saved atomically.

On disk it is ONE safetensors file: the per-layer tensors (``<layer>/smooth``, ``<layer>/lora_down``,
``<layer>/lora_up``, ``<layer>/input_scale``, GPTQ's ``<layer>/weight`` + ``<layer>/weight_scale``,
``<layer>/split_input_scale``) and, in the header metadata, a JSON document with the
calibrated QuantConfig (its overrides are the mixed-precision plan), each layer's scalar choices
(config, clip ratio, smoothing exponent), the per-layer report and the run's metadata. One file
written to a temporary name, fsynced and renamed, so a reader sees the old result or the new one,
never half of each.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import QuantConfig

RESULT_FORMAT = "qengine-calibration"
RESULT_VERSION = 1
# weight/weight_scale: a GPTQ-rounded weight in the module's stored layout; split_input_scale [2]:
# per-half static activation scales of a conv fed by a skip concatenation (for a two-scale op).
_TENSOR_KEYS = ("smooth", "lora_down", "lora_up", "input_scale", "weight", "weight_scale", "split_input_scale")


class CalibrationError(ValueError):
    """A calibration file that cannot be read, or a calibration that cannot run."""


@dataclass
class CalibrationResult:
    #: the config to quantize with (incl. the mixed-precision overrides)
    config: QuantConfig
    #: layer name -> {"config": LayerQuantConfig dict, "clip": float, optional tensors smooth/lora_*/input_scale}
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: one row per calibrated layer (see ``summary_table``)
    report: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        tensors, scalars = {}, {}
        for name, lc in self.layers.items():
            scalars[name] = {k: v for k, v in lc.items() if k not in _TENSOR_KEYS}
            for k in _TENSOR_KEYS:
                if lc.get(k) is not None:
                    tensors[f"{name}/{k}"] = lc[k].detach().cpu().contiguous()
        doc = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "config": self.config.to_dict(),
               "layers": scalars, "report": self.report, "meta": self.meta}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            save_file(tensors, str(tmp), metadata={"qengine_calibration": json.dumps(doc)})
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> CalibrationResult:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                doc = json.loads((f.metadata() or {}).get("qengine_calibration", "null"))
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for a corrupt header
            raise CalibrationError(f"{path} is not a readable calibration file: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
            raise CalibrationError(f"{path} is a safetensors file but not a qengine calibration")
        if doc.get("version") != RESULT_VERSION:
            raise CalibrationError(f"{path} has calibration version {doc.get('version')}; this qengine reads "
                                   f"{RESULT_VERSION}")
        layers = {name: dict(sc) for name, sc in doc["layers"].items()}
        for key, t in tensors.items():
            name, _, k = key.rpartition("/")
            if name not in layers:
                raise CalibrationError(f"{path}: tensor {key} belongs to no calibrated layer")
            layers[name][k] = t
        return cls(QuantConfig.from_dict(doc["config"]), layers, doc.get("report", []), doc.get("meta", {}))


def summary_table(report: list[dict[str, Any]]) -> str:
    """The per-layer summary: final config, choices, and the layer-output error before/after."""
    head = f"{'layer':<44} {'quantized as':<18} {'alpha':>5} {'clip':>5} {'act scale':<14} " \
           f"{'err RTN':>8} {'err cal':>8} {'sens':>8}  note"
    lines = [head, "-" * len(head)]
    for r in report:
        alpha = "-" if r.get("alpha") is None else f"{r['alpha']:.1f}"
        sens = "-" if r.get("sensitivity") is None else f"{r['sensitivity']:.1e}"
        lines.append(f"{r['name'][-44:]:<44} {r['as']:<18} {alpha:>5} {r.get('clip', 1.0):>5.3f} "
                     f"{r.get('act_scale', 'dynamic'):<14} {r['err_rtn']:>8.1e} {r['err']:>8.1e} {sens:>8}  "
                     f"{r.get('note', '')}")
    return "\n".join(lines)
