"""Where one denoiser step spends its GPU time and memory, for one model and mode of bench_pipeline.

    python benchmarks/profile_step.py --model sdxl --mode fp8 [--rows 30] [--trace out/trace.json]
    python benchmarks/profile_step.py --model sdxl --mode fp8+compile --compile-scope model

Builds the model exactly as ``bench_pipeline.py`` does (real config, random weights), applies the
mode, runs warm-up steps, then profiles one step with ``torch.profiler``: the GPU time by kernel
category (qengine GEMM / conv / quantize, cuBLAS, cuDNN, attention, inductor's Triton kernels),
a table of the CUDA kernels by total time, the operators by input shape, and the operators that
allocated the most memory. Use it to find which op makes a quantized step slower than it should
be; the figures of record come from bench_pipeline.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline as bp  # noqa: E402


# (category, test on the kernel's lower-cased name), first match wins.
KERNEL_CATEGORIES = (
    # conv first: the conv kernels' mangled template names mention their activation quantization
    ("qengine conv", lambda n: "qengine" in n and "conv" in n),
    ("qengine quantize", lambda n: "qengine" in n and ("quantiz" in n or "absmax" in n or "im2col" in n)),
    ("qengine norm", lambda n: "qengine" in n and ("gn_" in n or "rmsnorm" in n or "norm" in n)),
    ("qengine gemm", lambda n: "qengine" in n),
    ("attention", lambda n: "flash" in n or "fmha" in n or "attention" in n or "cudnn_generated_fort_native_sdpa" in n),
    ("triton (inductor)", lambda n: n.startswith("triton") or "triton_" in n),
    ("cuDNN conv", lambda n: "conv" in n or "implicit_convolve" in n or "xmma_fprop" in n or "cudnn" in n),
    ("cuBLAS / other GEMM", lambda n: "nvjet" in n or "gemm" in n or "cutlass" in n or "xmma" in n),
    ("elementwise / copy", lambda n: "elementwise" in n or "copy" in n or "reduce" in n),
)


def is_annotation(name: str) -> bool:
    return name.startswith("## ") or "Compiled" in name or name.startswith("ProfilerStep")


def kernel_category(name: str) -> str:
    n = name.lower()
    return next((cat for cat, test in KERNEL_CATEGORIES if test(n)), "other")


def category_table(prof) -> str:
    """GPU time per kernel category over the profiled step (kernel events only)."""
    total, count = defaultdict(float), defaultdict(int)
    for ev in prof.events():
        # GPU-side ranges of user annotations ("## Call CompiledFxGraph ...", "Torch-Compiled
        # Region") span many kernels: counting them would count those kernels twice.
        if ev.device_type == torch.autograd.DeviceType.CUDA and not is_annotation(ev.name):
            cat = kernel_category(ev.name)
            total[cat] += ev.time_range.elapsed_us()
            count[cat] += 1
    all_us = sum(total.values()) or 1.0
    lines = [f"{'category':24s} {'kernels':>8s} {'GPU us':>10s} {'share':>7s}"]
    for cat in sorted(total, key=total.get, reverse=True):
        lines.append(f"{cat:24s} {count[cat]:8d} {total[cat]:10.1f} {100 * total[cat] / all_us:6.1f}%")
    lines.append(f"{'total':24s} {sum(count.values()):8d} {all_us:10.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(bp.MODEL_CONFIGS), required=True)
    ap.add_argument("--mode", required=True, help="a bench_pipeline mode, e.g. fp8, int8, w4a8-lr32")
    ap.add_argument("--rows", type=int, default=30, help="table rows (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--trace", type=Path, help="also write a Chrome trace here")
    ap.add_argument("--compile-scope", choices=("blocks", "model"), default="blocks",
                    help="what +compile compiles, as in bench_pipeline (default %(default)s)")
    ap.add_argument("--lowrank-cat-down", choices=["fused", "matmul"],
                    help="qengine.nn.QLinear.lowrank_cat_down, as in bench_pipeline (default: the library's)")
    ap.add_argument("--compiled-quantize", choices=["op", "inductor"],
                    help="qengine.nn.QLinear.compiled_quantize, as in bench_pipeline (default: the library's)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_step.py needs a CUDA GPU")
    device, dtype = torch.device("cuda"), torch.bfloat16
    from qengine.nn import QLinear
    if args.lowrank_cat_down is not None:
        QLinear.lowrank_cat_down = args.lowrank_cat_down
    if args.compiled_quantize is not None:
        QLinear.compiled_quantize = args.compiled_quantize
    mode = bp.Mode.parse(args.mode)
    model = bp.build_model(args.model, False, device, dtype)
    calib = bp.calibration_inputs(args.model, model, mode, False, device, dtype)  # -static modes only
    model = bp.apply_mode(model, args.model, mode, device, args.compile_scope, calib)
    inputs = bp.make_inputs(args.model, model, False, device, dtype)
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(**inputs)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts, profile_memory=True, record_shapes=True) as prof:
            model(**inputs)
            torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    print(f"{args.model} {args.mode}: weights+state {base / 2**20:.0f} MiB, step peak {peak / 2**20:.0f} MiB "
          f"(+{(peak - base) / 2**20:.0f} MiB during the step)")
    print(category_table(prof))
    ka = prof.key_averages()
    print(ka.table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=70))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=args.rows,
                                                             max_name_column_width=50, max_shapes_column_width=70))
    print(ka.table(sort_by="self_cuda_memory_usage", row_limit=15, max_name_column_width=70))
    if args.trace:
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(args.trace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
