"""Benchmark of the W8A8 conv2d against cuDNN bf16 (channels_last), over every distinct SD1.5
(512x512) and SDXL (1024x1024) UNet conv shape of benchmarks/conv_shapes.json.

Per shape and batch, in one run: cuDNN bf16 ``F.conv2d`` on channels_last tensors with bias
(``cudnn.benchmark`` on, so cuDNN picks its fastest algorithm), and our whole op for INT8 and FP8:
dynamic per-tensor scale (absmax pass + quantize pass + implicit GEMM), static scale (quantize
pass + implicit GEMM), and the activation pre-pass alone, so the conv kernel's own time is
``static - pre-pass``. Split-shortcut shapes run as the op runs them in the UNet: the two halves
as channel slices of the concat, each with its own scale (two implicit GEMMs).
``--sweep-configs`` also times every sm90 tile config (static scale), each with K split over each of
``--sweep-splits`` CTAs (the heuristic's pick is in the ``config`` column, "_split<S>" when it splits).

Timing (shared with bench_gemm.py): operands built outside the timed region and rotated over
enough copies that the op touching the fewest bytes (the activation pre-pass) streams >= 3x L2
(capped by --max-sets and --mem-fraction; rows record rotation_sets / rotation_bound /
l2_rotation_x); CUDA-graph replays queued behind an untimed one; medians of --reps.
``--order interleaved`` (default) captures every op of a shape (cuDNN, ours, the sweep) first and
then takes one sample of each per round, so all are timed at the same GPU temperature and clock.
TOPS = 2 * B*Ho*Wo * O * kh*kw*C / time. Ratios are against cuDNN measured in the same run.

Writes bench_conv.{csv,json,md,png} to --out-dir. Example:

    python benchmarks/bench_conv.py --batch 1 2 --sweep-configs --out-dir out/bench_conv
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gemm import ORDERS, TimedOp, gpu_info, rotation_count, time_ops  # noqa: E402
from shapes import CONV_MODELS, load_conv_shapes  # noqa: E402

DEV = torch.device("cuda")
KINDS = {"int8": ("w8a8_int8_conv2d", torch.int8, "int8"), "fp8": ("w8a8_fp8_conv2d", torch.float8_e4m3fn, "float8_e4m3fn")}


def rotation(s, batch, l2_bytes, max_sets, mem_budget_bytes=None):
    """(n_sets, bound, smallest op's bytes over all sets / L2), as bench_gemm.rotation_sets: sized
    by the op touching the fewest bytes, the activation pre-pass (bf16 read + 8-bit write). (It was
    sized by a whole set, bf16 + 8-bit weights included: at 1280 channels, 32x32, that gave 3 sets,
    in which our conv's own operands (~19 MB a call) spanned ~1.1x L2.)"""
    ho, wo = s.out_hw()
    per_set = batch * s.H * s.W * s.C * 3 + s.O * s.k * s.k * s.C * 4 + batch * ho * wo * s.O * 2
    smallest_op = batch * s.H * s.W * s.C * 3
    n_sets, bound = rotation_count(smallest_op, l2_bytes, max_sets, per_set, mem_budget_bytes)
    return n_sets, bound, n_sets * smallest_op / l2_bytes


def operand_sets(s, batch, n_sets):
    sets = []
    for i in range(n_sets):
        g = torch.Generator(device=DEV).manual_seed(i)
        x = torch.randn(batch, s.H, s.W, s.C, device=DEV, generator=g).bfloat16()  # NHWC = channels_last NCHW
        w = (torch.randn(s.O, s.k, s.k, s.C, device=DEV, generator=g) / math.sqrt(s.k * s.k * s.C)).bfloat16()
        b = torch.randn(s.O, device=DEV, generator=g).bfloat16()
        qw = {}
        for kind, (_, qdt, _) in KINDS.items():
            qmax = 127.0 if kind == "int8" else 448.0
            ws = w.float().abs().amax(dim=(1, 2, 3)) / qmax
            q = (w.float() / ws[:, None, None, None])
            q = q.round().clamp(-127, 127).to(qdt) if kind == "int8" else q.clamp(-448, 448).to(qdt)
            qw[kind] = (q, ws)
        scales = [(x[..., lo:hi].float().abs().amax() / 100).reshape(1) for lo, hi in halves(s)]
        sets.append(dict(x=x, x_nchw=x.permute(0, 3, 1, 2), w_nchw=w.permute(0, 3, 1, 2), b=b, qw=qw, scales=scales))
    return sets


def halves(s):
    return [(0, s.split), (s.split, s.C)] if s.split else [(0, s.C)]


def sweep_plans(ext, qdtype: str, splits) -> list[str]:
    """Every sm90 config that runs here, as a plan name per split count ("<config>_split<S>", S > 1)."""
    configs = [c for c in ext.conv_configs() if c.startswith("sm90_") and ext.conv_config_available(c, qdtype)]
    return [c if n == 1 else f"{c}_split{n}" for n in splits for c in configs]


def bench_shape(s, batch, reps, timing, l2, ext, sweep, order="interleaved", max_sets=64, mem_budget=None,
                sweep_splits=(1,)):
    ho, wo = s.out_hw()
    flops = s.flops(batch)
    n, bound, l2_x = rotation(s, batch, l2, max_sets, mem_budget)
    sets = operand_sets(s, batch, n)
    row = {"model": s.model, "shape": s.name, "batch": batch, "H": s.H, "W": s.W, "C": s.C, "O": s.O, "k": s.k,
           "stride": s.stride, "split": s.split, "count": s.count, "M": batch * ho * wo, "N": s.O,
           "K": s.k * s.k * s.C, "gflop": round(flops / 1e9, 3), "rotation_sets": n, "rotation_bound": bound,
           "l2_rotation_x": round(l2_x, 2)}

    def cudnn(i):
        t = sets[i]
        return lambda: F.conv2d(t["x_nchw"], t["w_nchw"], t["b"], s.stride, s.padding)

    def ours(kind, static, config=None):
        name = KINDS[kind][0]
        op = getattr(torch.ops.qengine, name)

        def make(i):
            t = sets[i]
            q, ws = t["qw"][kind]
            xs = [t["x"][..., lo:hi] for lo, hi in halves(s)]
            sc = t["scales"] if static else [None, None]
            x2 = xs[1] if s.split else None
            x2s = sc[1] if s.split else None
            if config is None:
                return lambda: op(xs[0], q, ws, t["b"], sc[0], [s.stride] * 2, [s.padding] * 2, [1, 1], x2, x2s, None)
            return lambda: ext.qconv2d_with_config(xs[0], q, ws, t["b"], sc[0], [s.stride] * 2, [s.padding] * 2, [1, 1],
                                                   config, x2, x2s, None)
        return make

    def prepass(kind):
        def make(i):
            t = sets[i]
            calls = [(t["x"][..., lo:hi], sc) for (lo, hi), sc in zip(halves(s), t["scales"])]
            return lambda: [ext.conv_quantize_input(x, sc, KINDS[kind][2]) for x, sc in calls]
        return make

    # Every op of the shape in one interleaved group (bench_gemm.time_ops): cuDNN and ours are
    # sampled side by side, so the GPU's heating does not favour whichever is timed first.
    ops = [TimedOp("cudnn", [cudnn(i) for i in range(n)])]
    for kind in KINDS:
        ops += [TimedOp(f"{kind}_dyn", [ours(kind, False)(i) for i in range(n)]),
                TimedOp(f"{kind}_static", [ours(kind, True)(i) for i in range(n)]),
                TimedOp(f"{kind}_pre", [prepass(kind)(i) for i in range(n)])]
        if sweep:
            ops += [TimedOp(f"{kind}[{cfg}]", [ours(kind, True, cfg)(i) for i in range(n)])
                    for cfg in sweep_plans(ext, KINDS[kind][2], sweep_splits)]
    t = {name: sec * 1e6 for name, sec in time_ops(ops, reps, timing, order).items()}
    row["cudnn_bf16_us"] = t["cudnn"]
    row["cudnn_bf16_tops"] = round(flops / row["cudnn_bf16_us"] / 1e6, 1)
    for kind in KINDS:
        dyn, sta, pre = t[f"{kind}_dyn"], t[f"{kind}_static"], t[f"{kind}_pre"]
        row[f"{kind}_us"] = round(dyn, 2)
        row[f"{kind}_static_us"] = round(sta, 2)
        row[f"{kind}_prepass_static_us"] = round(pre, 2)
        # A difference of two medians: noisy where the pre-pass is most of the op (tiny convs).
        kernel = max(sta - pre, 0.01)
        row[f"{kind}_kernel_us"] = round(kernel, 2)
        row[f"{kind}_kernel_tops"] = round(flops / kernel / 1e6, 1)
        row[f"{kind}_vs_cudnn"] = round(row["cudnn_bf16_us"] / dyn, 3)
        row[f"{kind}_static_vs_cudnn"] = round(row["cudnn_bf16_us"] / sta, 3)
        row[f"{kind}_kernel_vs_cudnn"] = round(row["cudnn_bf16_us"] / kernel, 3)
        row[f"{kind}_config"] = ext.conv_heuristic(row["M"], row["N"], row["K"], KINDS[kind][2])
        for name, us in t.items():
            if name.startswith(f"{kind}["):
                row[f"{kind}_static_us[{name[len(kind) + 1:-1]}]"] = round(us, 2)
    row["cudnn_bf16_us"] = round(row["cudnn_bf16_us"], 2)
    return row


MD_COLS = [("shape", "shape"), ("batch", "B"), ("split", "split"), ("gflop", "GFLOP"), ("cudnn_bf16_us", "cuDNN bf16 us"),
           ("cudnn_bf16_tops", "cuDNN TOPS"), ("int8_us", "int8 us"), ("int8_vs_cudnn", "int8/cuDNN"),
           ("int8_static_vs_cudnn", "int8 static/cuDNN"), ("int8_kernel_tops", "int8 kernel TOPS"),
           ("int8_kernel_vs_cudnn", "int8 kernel/cuDNN"), ("fp8_us", "fp8 us"), ("fp8_vs_cudnn", "fp8/cuDNN"),
           ("fp8_static_vs_cudnn", "fp8 static/cuDNN"), ("fp8_kernel_tops", "fp8 kernel TOPS"),
           ("fp8_kernel_vs_cudnn", "fp8 kernel/cuDNN"), ("int8_config", "config"), ("l2_rotation_x", "rot/L2")]


def write_outputs(rows, meta, out_dir: Path, plot: bool = True):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_conv.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "bench_conv.csv", "w", newline="") as f:
        f.write("# " + json.dumps(meta) + "\n")
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [f"GPU {meta['gpu']} ({meta.get('clocks.sm', '?')} / max {meta.get('clocks.max.sm', '?')} MHz), torch "
             f"{meta['torch']}, CUDA {meta['cuda']}, timing {meta['timing']}, medians of {meta['reps']}. "
             "int8/fp8 = whole op with a dynamic per-tensor scale; static = calibrated scale; kernel = static minus the "
             "quantize pre-pass.", "",
             "| " + " | ".join(h for _, h in MD_COLS) + " |", "|" + "---|" * len(MD_COLS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k, _ in MD_COLS) + " |")
    (out_dir / "bench_conv.md").write_text("\n".join(lines) + "\n")
    if not plot:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels = [f"{r['shape']} b{r['batch']}" for r in rows]
        series = [("int8_vs_cudnn", "INT8 op / cuDNN bf16"), ("int8_kernel_vs_cudnn", "INT8 kernel / cuDNN bf16"),
                  ("fp8_vs_cudnn", "FP8 op / cuDNN bf16"), ("fp8_kernel_vs_cudnn", "FP8 kernel / cuDNN bf16")]
        fig, ax = plt.subplots(figsize=(max(10, 0.4 * len(rows)), 5))
        width = 0.8 / len(series)
        for j, (key, label) in enumerate(series):
            ax.bar([i + j * width for i in range(len(rows))], [r.get(key, 0) or 0 for r in rows], width, label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(1.6, color="r", lw=0.8, ls="--")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], labels, rotation=90, fontsize=6)
        ax.set_ylabel("speedup over cuDNN bf16 (x)")
        ax.set_title(f"qengine W8A8 conv2d vs cuDNN bf16 channels_last, {meta['gpu']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "bench_conv.png", dpi=130)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(CONV_MODELS), choices=list(CONV_MODELS))
    ap.add_argument("--batch", nargs="*", type=int, default=[1], help="batch sizes (2 = a CFG batch)")
    ap.add_argument("--only", nargs="*", default=[], help="substrings of shape names to run, e.g. 'sdxl:64x64x640->640 k3s1'")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement (median reported)")
    ap.add_argument("--timing", choices=["graph", "eager"], default="graph")
    ap.add_argument("--sweep-configs", action="store_true", help="also time every sm90 tile config")
    ap.add_argument("--sweep-splits", nargs="*", type=int, default=[1, 2, 3, 4],
                    help="with --sweep-configs: split-K counts to time each config at (1 = unsplit)")
    ap.add_argument("--order", choices=ORDERS, default="interleaved",
                    help="interleaved: one sample of every op of a shape per round (as bench_gemm.py); "
                         "sequential: each op timed completely before the next")
    ap.add_argument("--max-sets", type=int, default=64,
                    help="most rotated operand sets (the smallest op's sets together >= 3x L2 where possible)")
    ap.add_argument("--mem-fraction", type=float, default=0.5,
                    help="the rotated operand sets may take at most this fraction of free GPU memory")
    ap.add_argument("--out-dir", type=Path, default=Path("out/bench_conv"))
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = ap.parse_args(argv)
    if any(not 1 <= n <= 16 for n in args.sweep_splits):
        ap.error(f"--sweep-splits takes split counts 1..16, got {args.sweep_splits}")
    if not torch.cuda.is_available():
        sys.exit("bench_conv.py needs a CUDA GPU")
    import qengine  # noqa: F401 - registers torch.ops.qengine
    from qengine import _extension
    ext = _extension.load_extension()
    if ext is None or not hasattr(ext, "conv_configs"):
        sys.exit("qengine._C is not built with the conv kernels: QENGINE_BUILD_CUDA=1 pip install --no-build-isolation .")
    torch.backends.cudnn.benchmark = True
    meta = gpu_info()
    meta.update(timing=args.timing, order=args.order, reps=args.reps, batches=args.batch, max_sets=args.max_sets,
                mem_fraction=args.mem_fraction)
    shapes = [s for s in load_conv_shapes(args.models) if not args.only or any(o in s.name for o in args.only)]
    rows = []
    for batch in args.batch:
        for s in shapes:
            budget = args.mem_fraction * torch.cuda.mem_get_info(DEV)[0]
            r = bench_shape(s, batch, args.reps, args.timing, meta["l2_bytes"], ext, args.sweep_configs, args.order,
                            args.max_sets, budget, args.sweep_splits)
            rows.append(r)
            print(f"{s.name:36s} b{batch} {'split ' if s.split else '      '}cuDNN {r['cudnn_bf16_us']:8.1f}us "
                  f"({r['cudnn_bf16_tops']:5.0f} TOPS)  int8 {r['int8_us']:8.1f}us {r['int8_vs_cudnn']:.2f}x "
                  f"(static {r['int8_static_vs_cudnn']:.2f}x, kernel {r['int8_kernel_vs_cudnn']:.2f}x "
                  f"{r['int8_kernel_tops']:5.0f} TOPS)  fp8 {r['fp8_us']:8.1f}us {r['fp8_vs_cudnn']:.2f}x "
                  f"(static {r['fp8_static_vs_cudnn']:.2f}x, kernel {r['fp8_kernel_vs_cudnn']:.2f}x)  [{r['int8_config']}]"
                  + "".join(f" {k.split('[')[1][:-1]}={v}" for k, v in r.items() if k.startswith("int8_static_us[")),
                  flush=True)
            write_outputs(rows, meta, args.out_dir, plot=False)  # after every shape: a cut-off run still leaves its table
    write_outputs(rows, meta, args.out_dir, plot=not args.no_plot)
    print(f"wrote {args.out_dir}/bench_conv.{{csv,json,md{'' if args.no_plot else ',png'}}}")


if __name__ == "__main__":
    main()
