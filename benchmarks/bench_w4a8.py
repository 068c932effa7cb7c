"""Microbenchmark of the W4A8 GEMM (INT4 per-channel weights x INT8 tokens, sm_90a) in one run
against cuBLAS bf16 and our W8A8 GEMMs.

Per shape (M, K, N): cuBLAS bf16 ``F.linear`` (with bias), our W8A8 FP8 and INT8 GEMMs (scales +
bias epilogue), and our W4A8 GEMM without and with the low-rank term (r = 32: lowrank_act [M, 32]
as QLinear has the quantize kernel write it for W4A8: bf16 above 32 tokens, fp32 up to 32 (the
split-K configs read fp32), fp32 for the W8A8 INT8 GEMM; lora_up
[N, 32] bf16; the cooperative and split-K configs multiply it in their epilogue,
the others add its [M, N] cuBLAS product there: ``w4a8_config_fuses_lowrank``), each timed
through the registered ``torch.ops.qengine`` op (heuristic config).
``--sweep-configs`` also times every W4A8 tile config (forced, without low-rank; and with it, for the
configs that multiply it in their wgmma epilogue). Shapes: FLUX.1-dev
and SD3-medium from benchmarks/shapes.py, an M sweep 1..256 at FLUX's K/N (3072->3072,
3072->12288, 12288->3072; ``--m-sweep`` picks the M values), and FLUX's adaLN modulation GEMVs
(M = 1: 3072->18432, 3072->9216, 3072->6144), which are 4-bit only when a config quantizes them.
``--shapes MxKxN ...`` adds shapes of your own (e.g. FLUX's q/k/v projections fused by
``QuantConfig.fuse_qkv``: 4608x3072x9216 and 4096x3072x9216).

Timing as benchmarks/bench_gemm.py (CUDA-graph replay of one call per rotated operand set, sets
exceeding L2, median of --reps samples), the six ops of a shape interleaved: each round takes one
sample of every op, in an order that rotates from round to round. The big GEMMs hold the GPU at
its power cap, where the SM clock moves between ~1.4 and ~2.0 GHz within a second; timed one op
after the other, two ops of a ratio saw different clocks and the low-rank overhead moved by
+-10 points between runs (notes/h100_2026-11-24c, call 9). Ratios are of medians measured in this
same run. ``--sweep-configs`` times the forced configs interleaved among themselves in the same way.
Writes bench_w4a8.{csv,json,md} to --out-dir and prints the markdown table.

    python benchmarks/bench_w4a8.py --out-dir out/w4a8 [--sweep-configs] [--quick]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gemm import TimedOp, gpu_info, rotation_count, time_ops  # noqa: E402
from shapes import load_shapes  # noqa: E402

DEV = torch.device("cuda")
RANK = 32
SWEEP_M = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256]
SWEEP_KN = [(3072, 3072), (3072, 12288), (12288, 3072)]
MODULATION_KN = [(3072, 18432), (3072, 9216), (3072, 6144)]


def operand_sets(m, k, n, l2_bytes, max_sets):
    from qengine.formats import pack_int4
    from qengine.formats.w4a8_layout import prepack

    # Every timed op must stream from DRAM, so the rotation is sized by the bytes of the op that
    # touches the least: the W4A8 GEMM (4-bit weights, int8 activations, bf16 out). Sizing it by
    # all of a set's operands (as before) left a small-M W4A8 rotation inside L2 (4 x 4.7 MB at
    # 3072x3072) and flattered every small-M figure, the W4A8 ones most.
    smallest_op = n * k // 2 + m * k + m * n * 2
    n_sets, _ = rotation_count(smallest_op, l2_bytes, max_sets)
    sets = []
    for i in range(n_sets):
        g = torch.Generator(device=DEV).manual_seed(i)
        x = torch.randn(m, k, device=DEV, generator=g).bfloat16()
        w = (torch.randn(n, k, device=DEV, generator=g) / math.sqrt(k)).bfloat16()
        b = torch.randn(n, device=DEV, generator=g).bfloat16()
        xi = torch.randint(-127, 128, (m, k), device=DEV, generator=g, dtype=torch.int8)
        xs = torch.rand(m, device=DEV, generator=g) * 1e-2
        wi = torch.randint(-127, 128, (n, k), device=DEV, generator=g, dtype=torch.int8)
        wf = wi.float().div(4).to(torch.float8_e4m3fn)
        xf = xi.float().div(4).to(torch.float8_e4m3fn)
        ws = torch.rand(n, device=DEV, generator=g) * 1e-2
        w4 = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=DEV, generator=g, dtype=torch.int8)))
        ws4 = ws[:, None].contiguous()
        la = torch.randn(m, RANK, device=DEV, generator=g)
        up = torch.randn(n, RANK, device=DEV, generator=g).bfloat16()
        sets.append(dict(x=x, w=w, b=b, xi=xi, xf=xf, xs=xs, wi=wi, wf=wf, ws=ws, w4=w4, ws4=ws4, la=la,
                         la16=la.bfloat16(), up=up))
    return sets


def bench_shape(label, m, k, n, reps, l2, ext, sweep, max_sets):
    sets = operand_sets(m, k, n, l2, max_sets)
    q = torch.ops.qengine
    from qengine.nn.linear import W4A8_SPLITK_MAX_TOKENS
    bf = torch.bfloat16

    r = {"shape": label, "M": m, "K": k, "N": n}
    ops = {
        "bf16": lambda s: F.linear(s["x"], s["w"], s["b"]),
        "w8a8_fp8": lambda s: q.w8a8_fp8_gemm(s["xf"], s["xs"], s["wf"], s["ws"], s["b"], None, None, bf),
        "w8a8_int8": lambda s: q.w8a8_int8_gemm(s["xi"], s["xs"], s["wi"], s["ws"], s["b"], None, None, bf),
        "w8a8_int8_r32": lambda s: q.w8a8_int8_gemm(s["xi"], s["xs"], s["wi"], s["ws"], s["b"], s["la"], s["up"], bf),
        "w4a8": lambda s: q.w4a8_gemm(s["xi"], s["xs"], s["w4"], s["ws4"], s["b"], None, None, bf),
        "w4a8_r32": lambda s: q.w4a8_gemm(s["xi"], s["xs"], s["w4"], s["ws4"], s["b"],
                                          s["la16"] if m > W4A8_SPLITK_MAX_TOKENS else s["la"], s["up"], bf),
    }
    timed = time_ops([TimedOp(name, [lambda fn=fn, s=s: fn(s) for s in sets]) for name, fn in ops.items()], reps,
                     "graph")
    for name in ops:
        r[f"{name}_us"] = timed[name] * 1e6
    r["w4a8_config"] = ext.w4a8_gemm_heuristic(m, n, k)
    if sweep:  # the forced configs interleaved among themselves, so their ratios share the clock (power cap)
        cfg_ops = [TimedOp(f"cfg:{c}", [lambda c=c, s=s: ext.w4a8_gemm_with_config(
            s["xi"], s["xs"], s["w4"], s["ws4"], s["b"], None, None, "bfloat16", c) for s in sets])
            for c in ext.w4a8_gemm_configs()]
        # and the configs that multiply the branch in their wgmma epilogue, with it (lowrank_act in bf16)
        cfg_ops += [TimedOp(f"cfg+r32:{c}", [lambda c=c, s=s: ext.w4a8_gemm_with_config(
            s["xi"], s["xs"], s["w4"], s["ws4"], s["b"], s["la16"], s["up"], "bfloat16", c) for s in sets])
            for c in ext.w4a8_gemm_configs() if "splitk" not in c and ext.w4a8_config_fuses_lowrank(c, RANK)]
        for name, sec in time_ops(cfg_ops, reps, "graph").items():
            r[f"{name}_us"] = sec * 1e6
    flops = 2 * m * n * k
    r["w4a8_tops"] = flops / r["w4a8_us"] / 1e6
    r["w4a8_r32_vs_bf16"] = r["bf16_us"] / r["w4a8_r32_us"]
    # the bar: the branch's cost over the same GEMM without it (<= 10%)
    r["w4a8_lowrank_overhead_pct"] = (r["w4a8_r32_us"] / r["w4a8_us"] - 1) * 100
    r["w4a8_vs_bf16"] = r["bf16_us"] / r["w4a8_us"]
    r["w4a8_vs_w8a8_int8"] = r["w8a8_int8_us"] / r["w4a8_us"]
    r["w4a8_vs_w8a8_fp8"] = r["w8a8_fp8_us"] / r["w4a8_us"]
    r["w4a8_r32_vs_w8a8_int8_r32"] = r["w8a8_int8_r32_us"] / r["w4a8_r32_us"]
    # weight-read bandwidth of the W4A8 GEMM alone (the bound for small M)
    r["w4a8_weight_gbps"] = (n * k / 2) / r["w4a8_us"] / 1e3
    return r


def write_outputs(rows, meta, out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_w4a8.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in rows[0], list(rows[0]).index(k) if k in rows[0] else 0, k))
    with open(out_dir / "bench_w4a8.csv", "w", newline="") as f:
        f.write("# " + json.dumps(meta) + "\n")
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    cfgs = sorted({k for r in rows for k in r if k.startswith("cfg:")}) + sorted(
        {k for r in rows for k in r if k.startswith("cfg+r32:")})
    head = ["shape (M x K -> N)", "bf16 us", "w8a8 fp8 us", "w8a8 int8 us", "w8a8 int8+r32 us", "w4a8 us",
            "w4a8+r32 us", "r32 overhead", "w4a8+r32 / bf16", "w4a8 / bf16", "w4a8 vs int8", "w4a8 vs fp8", "w4a8 TOPS",
            "w4a8 GB/s (weights)", "config"] + [c[4:-3] if c.startswith("cfg:") else c[8:-3] + " +r32" for c in cfgs]
    lines = [f"GPU: {meta.get('gpu')} | torch {meta.get('torch')} | CUDA {meta.get('cuda')} | reps {meta.get('reps')} "
             f"| medians, ratios = speed-up (>1: W4A8 faster), all from this run", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['shape']} {r['M']}x{r['K']}->{r['N']}", f"{r['bf16_us']:.1f}", f"{r['w8a8_fp8_us']:.1f}",
                 f"{r['w8a8_int8_us']:.1f}", f"{r['w8a8_int8_r32_us']:.1f}", f"{r['w4a8_us']:.1f}",
                 f"{r['w4a8_r32_us']:.1f}", f"{r['w4a8_lowrank_overhead_pct']:+.1f}%", f"{r['w4a8_r32_vs_bf16']:.2f}", f"{r['w4a8_vs_bf16']:.2f}",
                 f"{r['w4a8_vs_w8a8_int8']:.2f}", f"{r['w4a8_vs_w8a8_fp8']:.2f}", f"{r['w4a8_tops']:.0f}",
                 f"{r['w4a8_weight_gbps']:.0f}", r["w4a8_config"]] + [f"{r.get(c, float('nan')):.1f}" for c in cfgs]
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    (out_dir / "bench_w4a8.md").write_text(md)
    return md


def parse_shape(text: str) -> tuple[int, int, int]:
    """"MxKxN" -> (M, K, N), for --shapes; the kernel's limits (K % 32, N % 16) are the op's to check."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"shape {text!r}: expected MxKxN with positive integers, e.g. 4608x3072x9216")
    m, k, n = (int(p) for p in parts)
    return m, k, n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path("out/bench_w4a8"))
    ap.add_argument("--reps", type=int, default=15, help="timed samples per measurement (median reported)")
    ap.add_argument("--max-sets", type=int, default=64,
                    help="most rotated operand sets (each timed op's sets together >= 3x L2 where possible)")
    ap.add_argument("--sweep-configs", action="store_true", help="also time every W4A8 tile config")
    ap.add_argument("--no-m-sweep", action="store_true", help="skip the M sweep at FLUX K/N")
    ap.add_argument("--m-sweep", type=int, nargs="+", default=SWEEP_M, metavar="M",
                    help="M values of the sweep (default: %(default)s)")
    ap.add_argument("--no-model-shapes", action="store_true",
                    help="skip the FLUX/SD3 layer shapes (M = image/text tokens); keep the sweep")
    ap.add_argument("--shapes", nargs="+", default=[], metavar="MxKxN", type=parse_shape,
                    help="extra shapes to time first (M tokens, K in, N out), e.g. 4608x3072x9216")
    ap.add_argument("--time-budget", type=float, default=0, help="stop adding shapes after this many seconds (0: none)")
    args = ap.parse_args(argv)

    import qengine  # noqa: F401  (registers the ops)
    from qengine import _extension
    ext = _extension.load_extension()
    if ext is None or not hasattr(ext, "w4a8_gemm_configs"):
        sys.exit("qengine._C with the W4A8 kernel is not built")
    meta = gpu_info()
    meta["reps"] = args.reps
    l2 = meta["l2_bytes"]
    shapes = [] if args.no_model_shapes else [(s.model, s.M, s.K, s.N) for s in load_shapes(["flux1-dev", "sd3-medium"])]
    shapes = sorted(set(shapes), key=lambda s: (s[0], -s[1], s[2], s[3]))
    shapes = [("extra", m, k, n) for m, k, n in args.shapes] + shapes
    if not args.no_m_sweep:
        shapes += [("sweep", m, k, n) for k, n in SWEEP_KN for m in args.m_sweep]
        shapes += [("flux-mod", 1, k, n) for k, n in MODULATION_KN]
    rows, t0 = [], time.time()
    for label, m, k, n in shapes:
        if args.time_budget and time.time() - t0 > args.time_budget:
            print(f"time budget reached: {len(shapes) - len(rows)} shapes left out", flush=True)
            break
        r = bench_shape(label, m, k, n, args.reps, l2, ext, args.sweep_configs, args.max_sets)
        rows.append(r)
        print(f"{label} {m}x{k}->{n}: bf16 {r['bf16_us']:.1f} int8 {r['w8a8_int8_us']:.1f} w4a8 {r['w4a8_us']:.1f} "
              f"w4a8+r32 {r['w4a8_r32_us']:.1f} us ({r['w4a8_r32_vs_bf16']:.2f}x bf16)", flush=True)
    print(write_outputs(rows, meta, args.out_dir))


if __name__ == "__main__":
    main()
