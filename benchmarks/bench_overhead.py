"""Host (CPU) cost per call of qengine's ops and modules next to torch's, at shapes so small that
the GPU work is negligible: what an eager batch-1 denoiser step pays per layer on top of the kernels.

    python benchmarks/bench_overhead.py [--calls 2000]

Each row times ``--calls`` back-to-back calls with one synchronize at the end, so the figure is
the launch path (Python wrapper, dispatcher, argument checks, allocations, kernel launch). Eager
SDXL/SD1.5 steps at batch 1 are bound by exactly this (profile_step.py shows the GPU idle).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def per_call_us(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_overhead.py needs a CUDA GPU")
    import qengine
    from qengine import ops
    from qengine.formats import get_scheme

    dev, bf = "cuda", torch.bfloat16
    m, k, n = 64, 256, 256
    x = torch.randn(m, k, device=dev, dtype=bf)
    lin = torch.nn.Linear(k, n, device=dev, dtype=bf)
    rows = []
    with torch.inference_mode():
        rows.append(("F.linear bf16", per_call_us(lambda: F.linear(x, lin.weight, lin.bias), args.calls)))
        rows.append(("torch.empty [64,256]", per_call_us(lambda: torch.empty(m, k, device=dev, dtype=bf), args.calls)))
        for scheme_name in ("w8a8-fp8", "w8a8-int8"):
            scheme = get_scheme(scheme_name)
            q = qengine.QuantConfig.preset(scheme_name, rank=0)
            ql = qengine.quantize(torch.nn.Sequential(torch.nn.Linear(k, n, device=dev, dtype=bf)), q)[0]
            op_q = getattr(torch.ops.qengine, ops._QUANTIZE_OP[scheme_name])
            op_g = getattr(torch.ops.qengine, ops._GEMM_OP[scheme_name])
            qa, sa, la = op_q(x, None, None)
            rows.append((f"{scheme_name} quantize op (torch.ops)", per_call_us(lambda: op_q(x, None, None), args.calls)))
            rows.append((f"{scheme_name} quantize op (.default)", per_call_us(lambda: op_q.default(x, None, None), args.calls)))
            rows.append((f"{scheme_name} gemm op", per_call_us(lambda: op_g(qa, sa, ql.weight, ql.weight_scale, ql.bias, None, None, bf), args.calls)))
            rows.append((f"{scheme_name} ops.quantize_act+ops.gemm", per_call_us(
                lambda: ops.gemm(scheme, *ops.quantize_act(x, scheme)[:2], ql.weight, ql.weight_scale, ql.bias, out_dtype=bf),
                args.calls)))
            rows.append((f"{scheme_name} QLinear", per_call_us(lambda: ql(x), args.calls)))
        xc = torch.randn(1, 64, 16, 16, device=dev, dtype=bf).contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, device=dev, dtype=bf).to(memory_format=torch.channels_last)
        rows.append(("F.conv2d bf16 cl 64ch 16x16", per_call_us(lambda: conv(xc), args.calls)))
        qc = qengine.quantize(torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1, device=dev, dtype=bf)),
                              qengine.QuantConfig.preset("w8a8-fp8", rank=0, conv_scheme="w8a8-fp8"))[0]
        rows.append(("w8a8-fp8 QConv2d", per_call_us(lambda: qc(xc), args.calls)))
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}; host microseconds per call, {args.calls} calls")
    print("| call | us/call |\n|---|---:|")
    for label, us in rows:
        print(f"| {label} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
