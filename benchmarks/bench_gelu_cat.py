"""Gelu-cat activation quantization with the low-rank down-projection, against what it replaces.

A FLUX layer that takes GELU output (a single block's proj_out takes [attention | gelu(mlp)], a
feed-forward's output layer gelu(proj)) and has a low-rank branch used to run ``F.gelu``, then
``torch.cat``, then the quantize kernel with lora_down: three kernels and two [M, K] round trips.
``quantize_act_*_gelu_cat_lowrank`` runs qengine's GELU kernel, which also returns each row's
absmax, then the tile kernel reads [x | GELU] in place and quantizes in the same pass as the
down-projection (the scale is known): the row is read twice, not three times. The FP8 cat-mode
twin (whose scale depends on the product) runs torch's GELU and the tile kernel's two passes.
(A first version computed the GELU in both of the tile kernel's passes: slower than unfused,
notes/h100_2026-11-24d call 1.)

Per shape and format, timed interleaved (``bench_gemm.time_ops``, CUDA graphs, operands rotated past
L2), medians:
  unfused     F.gelu + torch.cat + quantize_act_*(row, lora_down)   (the path before this op)
  fused       the gelu-cat op with lora_down                        (this op)
  tile        quantize_act_*(row, lora_down) alone, row precomputed (the tile kernel without the GELU)
  plain       the gelu-cat op without a branch                      (the branch's cost, for reference)

    python3 benchmarks/bench_gelu_cat.py [--rank 32] [--formats int8 fp8-cat] [--reps 15] [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gemm import TimedOp, gpu_info, rotation_count, time_ops  # noqa: E402

# (M, Kx, Kg): FLUX.1-dev at 1024x1024: a single block's proj_out (4608 tokens, attention 3072 +
# MLP 12288), the dual blocks' feed-forward output layers (image 4096 and text 512 tokens).
SHAPES = [(4608, 3072, 12288), (4096, 0, 12288), (512, 0, 12288)]
FORMATS = ("int8", "fp8", "fp8-cat")


def make_ops(fmt: str, m: int, kx: int, kg: int, rank: int, l2_bytes: int) -> list[TimedOp]:
    Q = torch.ops.qengine
    dev = torch.device("cuda")
    set_bytes = m * (kx + kg) * 2
    n_sets, _ = rotation_count(set_bytes, l2_bytes, max_sets=16, set_bytes=3 * set_bytes, mem_budget_bytes=8 * 2**30)
    gen = torch.Generator(device=dev).manual_seed(0)
    sets = []
    for _ in range(n_sets):
        x = torch.randn(m, kx, device=dev, generator=gen).bfloat16() if kx else None
        g = (torch.randn(m, kg, device=dev, generator=gen) * 3).bfloat16()
        row = F.gelu(g, approximate="tanh") if x is None else torch.cat([x, F.gelu(g, approximate="tanh")], 1)
        sets.append((x, g, row))
    down = (torch.randn(rank, kx + kg, device=dev, generator=gen) / (kx + kg) ** 0.5).bfloat16()
    inv_c = torch.rand(rank, device=dev) + 0.5
    if fmt == "fp8-cat":
        fused = lambda x, g: Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down, inv_c)
        tile = lambda row: Q.quantize_act_fp8_lowrank_cat(row, None, down, inv_c)
        plain = lambda x, g: Q.quantize_act_fp8_gelu_cat(x, g, None)
    else:
        fused = lambda x, g: getattr(Q, f"quantize_act_{fmt}_gelu_cat_lowrank")(x, g, None, down)
        tile = lambda row: getattr(Q, f"quantize_act_{fmt}")(row, None, down)
        plain = lambda x, g: getattr(Q, f"quantize_act_{fmt}_gelu_cat")(x, g, None)

    def unfused(x, g):
        r = F.gelu(g, approximate="tanh")
        return tile(r if x is None else torch.cat([x, r], 1))

    return [TimedOp("unfused", [lambda s=s: unfused(s[0], s[1]) for s in sets]),
            TimedOp("fused", [lambda s=s: fused(s[0], s[1]) for s in sets]),
            TimedOp("tile", [lambda s=s: tile(s[2]) for s in sets]),
            TimedOp("plain", [lambda s=s: plain(s[0], s[1]) for s in sets])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=32, help="low-rank rank (default 32)")
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=["int8", "fp8-cat"],
                    help="int8 (W4A8, W8A8 INT8), fp8 (FP8 epilogue branch), fp8-cat (FP8 branch in K)")
    ap.add_argument("--reps", type=int, default=15, help="interleaved rounds; medians are reported")
    ap.add_argument("--timing", choices=("graph", "eager"), default="graph")
    ap.add_argument("--out-dir", type=Path, default=None, help="write bench_gelu_cat.{json,md} here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gelu_cat: needs a CUDA GPU", file=sys.stderr)
        return 2
    import qengine  # noqa: F401  (registers the ops; qengine._C adds the CUDA kernels)
    from qengine.ops import MISSING_CUDA_KERNELS

    missing = [op for op in ("quantize_act_int8_gelu_cat_lowrank", "quantize_act_fp8_gelu_cat_lowrank_cat")
               if op in MISSING_CUDA_KERNELS]
    if missing:
        print(f"bench_gelu_cat: qengine._C has no CUDA kernel for {', '.join(missing)}", file=sys.stderr)
        return 2
    info = gpu_info()
    rows = []
    for fmt in args.formats:
        for m, kx, kg in SHAPES:
            ops = make_ops(fmt, m, kx, kg, args.rank, info["l2_bytes"])
            t = time_ops(ops, args.reps, args.timing)
            us = {k: v * 1e6 for k, v in t.items()}
            rows.append({"format": fmt, "m": m, "kx": kx, "kg": kg, "rank": args.rank, **{f"{k}_us": v for k, v in us.items()},
                         "unfused_over_fused": us["unfused"] / us["fused"],
                         "fused_over_plain": us["fused"] / us["plain"], "fused_over_tile": us["fused"] / us["tile"]})
            torch.cuda.empty_cache()
    head = ("| format | M x (Kx + Kg) | unfused us | fused us | tile us | plain us | unfused / fused | "
            "fused / plain | fused / tile |\n|---|---|---|---|---|---|---|---|---|")
    lines = [f"{info['gpu']}, torch {info['torch']}, CUDA {info['cuda']}, rank {args.rank}, medians of "
             f"{args.reps} interleaved rounds ({args.timing})", "", head]
    for r in rows:
        lines.append(f"| {r['format']} | {r['m']} x ({r['kx']} + {r['kg']}) | {r['unfused_us']:.1f} | {r['fused_us']:.1f} | "
                     f"{r['tile_us']:.1f} | {r['plain_us']:.1f} | {r['unfused_over_fused']:.2f} | "
                     f"{r['fused_over_plain']:.2f} | {r['fused_over_tile']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "bench_gelu_cat.md").write_text(text + "\n")
        (args.out_dir / "bench_gelu_cat.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
