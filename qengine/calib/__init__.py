"""Diffusion-aware calibration (offline; never imported at inference).

    from qengine.calib import calibrate
    result = calibrate(model, "w4a8", run_pipeline=lambda: sample(model, labels))
    result.save("w4a8.calib.safetensors")
    qengine.quantize(model, calibration=result)
    calibrate_static_scales(model, run=...)  # optional: static activation scales (static_scales.py)

See calibrate.py for the steps and notes/calibration.md for the design and the numbers.
"""
from .calibrate import calibrate, mixed_precision_plan
from .result import CalibrationError, CalibrationResult, summary_table
from .search import SearchOptions
from .static_scales import calibrate_static_scales, static_scale

__all__ = ["CalibrationError", "CalibrationResult", "SearchOptions", "calibrate", "calibrate_static_scales",
           "mixed_precision_plan", "static_scale", "summary_table"]
