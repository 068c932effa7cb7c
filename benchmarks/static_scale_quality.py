"""What static activation scales cost in quality, on the shipped trained Fashion-MNIST denoisers.

Per model and 8-bit scheme: the float model samples a class grid (DDIM, eta = 0) from fixed
noise; a copy is calibrated as ``qengine calibrate`` does (smoothing + GPTQ along its own
trajectories) and samples the same grid as calibrated: dynamic scales, except convs whose search
picked a static scale. Then ``qengine.calib.calibrate_static_scales`` runs on trajectories of
other noise (seed 10000), keeping the search's conv scales, and the grid is sampled again, once
with the default rule (INT8 linears stay dynamic) and once with ``int8_linears=True`` (every layer
static). Reported: SQNR of the final samples against the float model's, in dB (higher is better),
and how many 8-bit layers ran static (new scales, or kept from the search) or dynamic. CPU only,
minutes per model at the defaults.

    python benchmarks/static_scale_quality.py --models dit unet [--per-class 10] [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

import qengine
from qengine.calib import calibrate_static_scales
from qengine.nn import QConv2d
from qengine.eval.run import calibrate_reference
from qengine.models import reference as ref

SCHEMES = ("w8a8-fp8", "w8a8-int8")


def sqnr_db(y: torch.Tensor, expect: torch.Tensor) -> float:
    err = (y.double() - expect.double()).pow(2).sum().item()
    return math.inf if err == 0 else 10 * math.log10(expect.double().pow(2).sum().item() / err)


def measure(kind: str, scheme: str, *, per_class: int, steps: int, calib_per_class: int, naive: bool, log) -> dict:
    torch.manual_seed(0)
    model = ref.load_denoiser(kind)
    labels = ref.class_grid_labels(per_class)
    expect = ref.sample(model, labels, seed=123, steps=steps)
    if naive:
        q = qengine.quantize(copy.deepcopy(model), qengine.QuantConfig.preset(scheme))
    else:
        res = calibrate_reference(model, scheme, steps=steps, per_class=calib_per_class, log=lambda *a: None)
        q = qengine.quantize(copy.deepcopy(model), calibration=res)
    row = {"model": kind, "scheme": scheme, "quantization": "naive" if naive else "calibrated",
           "samples": len(labels), "steps": steps,
           "dynamic_db": sqnr_db(ref.sample(q, labels, seed=123, steps=steps), expect)}
    calib_labels = ref.class_grid_labels(calib_per_class)
    for key, int8_linears in (("static_db", False), ("static_all_db", True)):
        if key == "static_all_db" and scheme != "w8a8-int8":
            continue  # FP8 linears are static under the default rule already
        if key == "static_db" and scheme == "w8a8-int8" and not any(isinstance(m, QConv2d) for m in q.modules()):
            row[key] = None  # INT8 linears stay dynamic by default and no conv is quantized: nothing static
            continue
        report = calibrate_static_scales(q, lambda: ref.sample(q, calib_labels, seed=10_000, steps=steps),
                                         int8_linears=int8_linears)
        row[key] = sqnr_db(ref.sample(q, labels, seed=123, steps=steps), expect)
        row[key.replace("_db", "_layers")] = counts = layer_counts(report)
        log(f"{kind} {scheme}: {key} {row[key]:.2f} dB (dynamic {row['dynamic_db']:.2f} dB; {counts})")
    return row


def layer_counts(report: dict) -> str:
    """'N new + K kept static, D dynamic' over the 8-bit linears and convs of a
    calibrate_static_scales report: new scales come from this calibration, kept ones were already
    static (the search's conv scales), dynamic layers were skipped."""
    new = sum("scale" in r for r in report.values())
    kept = sum("kept" in r for r in report.values())
    return f"{new} new + {kept} kept static, {len(report) - new - kept} dynamic"


def table(rows: list[dict]) -> str:
    lines = ["| model | scheme | quantization | as calibrated (dynamic; the search's static conv scales) | "
             "static (default: INT8 linears dynamic) | every layer static |", "|---|---|---|---|---|---|"]
    for r in rows:
        all_static = f"{r['static_all_db']:.2f} dB ({r['static_all_layers']})" if "static_all_db" in r else "(same)"
        default = ("(no static layer)" if r["static_db"] is None
                   else f"{r['static_db']:.2f} dB ({r['static_layers']})")
        lines.append(f"| {r['model']} | {r['scheme']} | {r['quantization']} | {r['dynamic_db']:.2f} dB | {default} | "
                     f"{all_static} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["dit", "unet"], choices=["dit", "unet"])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    ap.add_argument("--per-class", type=int, default=10, help="samples per class in the measured grid (default 10)")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    ap.add_argument("--calib-per-class", type=int, default=2,
                    help="trajectories per class for the calibration and for the static scales (default 2)")
    ap.add_argument("--naive", action="store_true",
                    help="quantize with the preset only (no smoothing / GPTQ search): fast, for a first look")
    ap.add_argument("--out-dir", type=Path, help="write static_scale_quality.{md,json} here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    rows = [measure(kind, scheme, per_class=args.per_class, steps=args.steps, calib_per_class=args.calib_per_class,
                    naive=args.naive, log=log) for kind in args.models for scheme in args.schemes]
    md = table(rows)
    print(md)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "static_scale_quality.md").write_text(md + "\n")
        (args.out_dir / "static_scale_quality.json").write_text(json.dumps({"args": vars(args) | {"out_dir": str(
            args.out_dir)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
