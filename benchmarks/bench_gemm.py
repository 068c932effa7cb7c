"""Microbenchmark of the W8A8 kernels against cuBLAS and torch, over benchmarks/shapes.py.

Per shape (M, K, N), in one run: cuBLAS bf16 ``F.linear``, ``torch._scaled_mm`` FP8 rowwise
(default and fast accumulation), ``torch._int_mm`` (INT8, int32 out), our FP8 and INT8 GEMMs
alone (scales + bias epilogue), our activation quantize kernel alone, and our whole QLinear
(quantize + GEMM) for FP8 and INT8. Every op gets bias where it takes one. With ``--rank r`` (default
32, 0 = off) the same run also times the SVDQuant low-rank branch: the GEMMs with the fused
low-rank epilogue (``lowrank_act @ lora_up^T``), the best unfused alternative (our GEMM, then a
cuBLAS bf16 ``addmm_`` of the low-rank product into the output), the quantize kernel with the
fused ``lora_down`` and the whole low-rank QLinear, and the FP8 branch folded into the GEMM's K
(``LR-cat``: qengine.formats.lowrank_cat, K + 3r rounded up to 128); overheads are ratios of the same run.

Timing: operands are built outside the timed region and rotated over enough copies to exceed
L2; each measurement times 8 back-to-back replays of a CUDA graph of one call per copy, queued
behind one untimed replay so that no launch gap falls inside the timed region, and divides;
repeated ``--reps`` times; the median is reported. ``--timing eager`` times plain
eager launches instead. TOPS = 2*M*N*K / time. "% of ceiling" is against ceilings measured in
the same run: cuBLAS bf16 at 8192^3 (16-bit ops), ``_scaled_mm`` per-tensor fast-accum FP8 at
8192^3 (8-bit ops) and a device-to-device copy (quantize kernel, bytes read + written).

Writes bench_gemm.{csv,json,md,png} to --out-dir (JSON/CSV headers: GPU, clocks, torch, CUDA,
qengine build). Examples:

    python benchmarks/bench_gemm.py                        # every model's shapes
    python benchmarks/bench_gemm.py --models flux1-dev --sweep-configs
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import MODELS, load_shapes  # noqa: E402

DEV = torch.device("cuda")


# ---------------------------------------------------------------- timing


INNER = 8


def time_fn(make_call, n_sets: int, reps: int, timing: str) -> float:
    """Median seconds of one call. ``make_call(i)`` returns a no-arg callable using operand set i."""
    calls = [make_call(i) for i in range(n_sets)]
    for c in calls:  # warm up (lazy init, autotuning, allocator)
        c()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if timing == "graph":
        graph = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for c in calls:
                c()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(graph):
            for c in calls:
                c()
        graph.replay()
        run = graph.replay
    else:
        def run():
            for c in calls:
                c()
    # Each sample times INNER back-to-back runs behind one already-queued run, so the GPU never
    # waits for a launch inside the timed region (short ops were charged the graph-launch gap).
    times = []
    for _ in range(reps):
        run()
        start.record()
        for _ in range(INNER):
            run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / (n_sets * INNER))
    return statistics.median(times)


# ---------------------------------------------------------------- operands


def fp8_rows(t: torch.Tensor):
    amax = t.float().abs().amax(dim=1).clamp_min(1e-12)
    scale = amax / 448.0
    return (t.float() / scale[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn), scale


def int8_rows(t: torch.Tensor):
    amax = t.float().abs().amax(dim=1).clamp_min(1e-12)
    scale = amax / 127.0
    return (t.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def operand_sets(m, k, n, l2_bytes, rank=0, max_sets=8):
    per_set = m * k * 2 + n * k * 2 + m * k * 2 + n * k * 2 + m * n * 2 + (m + n + k) * rank * 4
    n_sets = max(2, min(max_sets, math.ceil(3 * l2_bytes / per_set)))
    sets = []
    for i in range(n_sets):
        g = torch.Generator(device=DEV).manual_seed(i)
        x = torch.randn(m, k, device=DEV, generator=g).bfloat16()
        w = (torch.randn(n, k, device=DEV, generator=g) / math.sqrt(k)).bfloat16()
        b = torch.randn(n, device=DEV, generator=g).bfloat16()
        xf, xs = fp8_rows(x)
        wf, ws = fp8_rows(w)
        xi, xis = int8_rows(x)
        wi, wis = int8_rows(w)
        d = dict(x=x, w=w, b=b, xf=xf, xs=xs, wf=wf, ws=ws, xi=xi, xis=xis, wi=wi, wis=wis)
        if rank:
            d["down"] = (torch.randn(rank, k, device=DEV, generator=g) / math.sqrt(k)).bfloat16()
            d["up"] = (torch.randn(n, rank, device=DEV, generator=g) / math.sqrt(rank)).bfloat16()
            d["low"] = torch.randn(m, rank, device=DEV, generator=g)
            d["low16"] = d["low"].bfloat16()
            if hasattr(torch.ops.qengine, "quantize_act_fp8_lowrank_cat"):
                # The branch folded into K (qengine.formats.lowrank_cat): weight and q get 3r (rounded up to 128) more K.
                from qengine.formats.lowrank_cat import lowrank_cat_weight
                d["wcat"], d["inv_c"] = lowrank_cat_weight(wf, ws, d["up"])
                d["xcat"], d["xcs"] = torch.ops.qengine.quantize_act_fp8_lowrank_cat(x, None, d["down"], d["inv_c"])
        sets.append(d)
    return sets


# ---------------------------------------------------------------- environment


def gpu_info() -> dict:
    props = torch.cuda.get_device_properties(DEV)
    info = {"gpu": props.name, "sm_count": props.multi_processor_count, "cc": f"{props.major}.{props.minor}",
            "l2_bytes": getattr(props, "L2_cache_size", 50 * 2**20), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version()}
    try:
        q = "clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version,power.limit"
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip().splitlines()[0]
        info.update(dict(zip(q.split(","), [v.strip() for v in out.split(",")])))
    except Exception as e:  # noqa: BLE001 - informational only
        info["nvidia_smi"] = f"unavailable: {e}"
    try:
        import qengine
        from qengine import _extension
        ext = _extension.load_extension()
        info["qengine"] = qengine.__version__
        info["qengine_build"] = ext.build_info() if ext else "not built"
    except Exception as e:  # noqa: BLE001
        info["qengine_build"] = f"import failed: {e}"
    return info


def ceilings(reps, timing, l2) -> dict:
    n = 8192
    a = torch.randn(n, n, device=DEV).bfloat16()
    b = torch.randn(n, n, device=DEV).bfloat16()
    flops = 2 * n ** 3
    t_bf16 = time_fn(lambda i: (lambda: torch.mm(a, b.t())), 1, reps, timing)
    af, bf = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    one = torch.ones((), device=DEV)
    t_fp8 = time_fn(lambda i: (lambda: torch._scaled_mm(af, bf.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                                        use_fast_accum=True)), 1, reps, timing)
    src = torch.empty(1 << 28, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    t_copy = time_fn(lambda i: (lambda: dst.copy_(src)), 1, reps, timing)
    return {"bf16_tops": flops / t_bf16 / 1e12, "fp8_tops": flops / t_fp8 / 1e12,
            "copy_gbps": 2 * src.numel() / t_copy / 1e9}


# ---------------------------------------------------------------- the benchmark


# The persistent tile orders --sweep-schedules tries on the 128x128 sm90 configs (raster, swizzle).
SCHEDULES = [(r, sw) for r in ("m", "n") for sw in (1, 2, 4, 8)]
SCHEDULE_CONFIGS = ("sm90_128x128x128_pingpong_c2x1", "sm90_128x128x128_pingpong_c1x2")


def bench_shape(shape, ceil, reps, timing, l2, ext, sweep, rank=0, sweep_schedules=False):
    m, k, n = shape.M, shape.K, shape.N
    sets = operand_sets(m, k, n, l2, rank)
    ns = len(sets)
    qe = torch.ops.qengine
    bf = torch.bfloat16
    row = {"model": shape.model, "M": m, "K": k, "N": n, "count": shape.count, "example": shape.example}
    t = {}
    t["bf16_linear"] = time_fn(lambda i: (lambda s=sets[i]: F.linear(s["x"], s["w"], s["b"])), ns, reps, timing)

    def scaled(i, fast):
        s = sets[i]
        return lambda: torch._scaled_mm(s["xf"], s["wf"].t(), scale_a=s["xs"][:, None], scale_b=s["ws"][None, :],
                                        bias=s["b"], out_dtype=bf, use_fast_accum=fast)
    for name, fast in (("scaled_mm_rowwise", False), ("scaled_mm_rowwise_fast", True)):
        try:
            t[name] = time_fn(lambda i, f=fast: scaled(i, f), ns, reps, timing)
        except RuntimeError as e:
            row[f"{name}_error"] = str(e).splitlines()[0][:120]
    if m > 16:
        try:
            t["int_mm"] = time_fn(lambda i, s=None: (lambda s=sets[i]: torch._int_mm(s["xi"], s["wi"].t())), ns, reps,
                                  timing)
        except RuntimeError as e:
            row["int_mm_error"] = str(e).splitlines()[0][:120]
    t["ours_fp8_gemm"] = time_fn(lambda i: (lambda s=sets[i]: qe.w8a8_fp8_gemm(s["xf"], s["xs"], s["wf"], s["ws"], s["b"],
                                                                                 None, None, bf)), ns, reps, timing)
    t["ours_int8_gemm"] = time_fn(lambda i: (lambda s=sets[i]: qe.w8a8_int8_gemm(s["xi"], s["xis"], s["wi"], s["wis"],
                                                                                   s["b"], None, None, bf)), ns, reps, timing)
    t["ours_quant_fp8"] = time_fn(lambda i: (lambda s=sets[i]: qe.quantize_act_fp8(s["x"], None, None)), ns, reps, timing)

    def qlinear(i, kind):
        s = sets[i]
        if kind == "fp8":
            def f():
                q, sc, _ = qe.quantize_act_fp8(s["x"], None, None)
                return qe.w8a8_fp8_gemm(q, sc, s["wf"], s["ws"], s["b"], None, None, bf)
        else:
            def f():
                q, sc, _ = qe.quantize_act_int8(s["x"], None, None)
                return qe.w8a8_int8_gemm(q, sc, s["wi"], s["wis"], s["b"], None, None, bf)
        return f
    t["ours_qlinear_fp8"] = time_fn(lambda i: qlinear(i, "fp8"), ns, reps, timing)
    t["ours_qlinear_int8"] = time_fn(lambda i: qlinear(i, "int8"), ns, reps, timing)
    if rank:
        row["rank"] = rank
        t["ours_fp8_gemm_lr"] = time_fn(lambda i: (lambda s=sets[i]: qe.w8a8_fp8_gemm(
            s["xf"], s["xs"], s["wf"], s["ws"], s["b"], s["low"], s["up"], bf)), ns, reps, timing)
        t["ours_int8_gemm_lr"] = time_fn(lambda i: (lambda s=sets[i]: qe.w8a8_int8_gemm(
            s["xi"], s["xis"], s["wi"], s["wis"], s["b"], s["low"], s["up"], bf)), ns, reps, timing)
        t["ours_fp8_gemm_lr_unfused"] = time_fn(lambda i: (lambda s=sets[i]: qe.w8a8_fp8_gemm(
            s["xf"], s["xs"], s["wf"], s["ws"], s["b"], None, None, bf).addmm_(s["low16"], s["up"].t())), ns, reps, timing)
        t["ours_quant_fp8_lr"] = time_fn(lambda i: (lambda s=sets[i]: qe.quantize_act_fp8(s["x"], None, s["down"])), ns,
                                         reps, timing)

        def qlinear_lr(i):
            s = sets[i]

            def f():
                q, sc, low = qe.quantize_act_fp8(s["x"], None, s["down"])
                return qe.w8a8_fp8_gemm(q, sc, s["wf"], s["ws"], s["b"], low, s["up"], bf)
            return f
        t["ours_qlinear_fp8_lr"] = time_fn(qlinear_lr, ns, reps, timing)
        if "wcat" in sets[0]:
            t["ours_fp8_gemm_lrcat"] = time_fn(lambda i: (lambda s=sets[i]: qe.w8a8_fp8_gemm(
                s["xcat"], s["xcs"], s["wcat"], s["ws"], s["b"], None, None, bf)), ns, reps, timing)
            t["ours_quant_fp8_lrcat"] = time_fn(lambda i: (lambda s=sets[i]: qe.quantize_act_fp8_lowrank_cat(
                s["x"], None, s["down"], s["inv_c"])), ns, reps, timing)

            def qlinear_lrcat(i):
                s = sets[i]

                def f():
                    q, sc = qe.quantize_act_fp8_lowrank_cat(s["x"], None, s["down"], s["inv_c"])
                    return qe.w8a8_fp8_gemm(q, sc, s["wcat"], s["ws"], s["b"], None, None, bf)
                return f
            t["ours_qlinear_fp8_lrcat"] = time_fn(qlinear_lrcat, ns, reps, timing)
            if hasattr(qe, "quantize_act_fp8_lowrank_cat_from"):
                # The down-projection by cuBLAS (fp32 out) + the one-pass row kernel (QLinear.lowrank_cat_down = "matmul").
                mm = torch.ops.aten.mm.dtype
                t["ours_quant_fp8_lrcat_mm"] = time_fn(lambda i: (lambda s=sets[i]: qe.quantize_act_fp8_lowrank_cat_from(
                    s["x"], None, mm(s["x"], s["down"].t(), torch.float32), s["inv_c"])), ns, reps, timing)

                def qlinear_lrcat_mm(i):
                    s = sets[i]

                    def f():
                        q, sc = qe.quantize_act_fp8_lowrank_cat_from(s["x"], None, mm(s["x"], s["down"].t(), torch.float32),
                                                                     s["inv_c"])
                        return qe.w8a8_fp8_gemm(q, sc, s["wcat"], s["ws"], s["b"], None, None, bf)
                    return f
                t["ours_qlinear_fp8_lrcat_mm"] = time_fn(qlinear_lrcat_mm, ns, reps, timing)
    if ext is not None:
        row["config_fp8"] = ext.gemm_heuristic(m, n, k, "float8_e4m3fn", DEV.index or 0)
        row["config_int8"] = ext.gemm_heuristic(m, n, k, "int8", DEV.index or 0)
    if sweep and ext is not None:
        for kind, key, qn in (("fp8", "f", "float8_e4m3fn"), ("int8", "i", "int8")):
            for cfg in ext.gemm_configs():
                if not ext.gemm_config_available(cfg, qn, DEV.index or 0):
                    continue
                sc = "xs" if kind == "fp8" else "xis"
                wsc = "ws" if kind == "fp8" else "wis"
                t[f"cfg_{kind}_{cfg}"] = time_fn(
                    lambda i, c=cfg: (lambda s=sets[i]: ext.w8a8_gemm_with_config(
                        s["x" + key], s[sc], s["w" + key], s[wsc], s["b"], "bfloat16", c)), ns, reps, timing)

    if sweep_schedules and ext is not None:
        for kind, key, qn in (("fp8", "f", "float8_e4m3fn"), ("int8", "i", "int8")):
            sc, wsc = ("xs", "ws") if kind == "fp8" else ("xis", "wis")
            for cfg in SCHEDULE_CONFIGS:
                if cfg not in ext.gemm_configs() or not ext.gemm_config_available(cfg, qn, DEV.index or 0):
                    continue
                for r, sw in SCHEDULES:
                    t[f"sched_{kind}_{cfg}_{r}{sw}"] = time_fn(
                        lambda i, c=cfg, r=r, sw=sw: (lambda s=sets[i]: ext.w8a8_gemm_with_config(
                            s["x" + key], s[sc], s["w" + key], s[wsc], s["b"], "bfloat16", c, raster=r, swizzle=sw)),
                        ns, reps, timing)
            best = min((v, k_) for k_, v in t.items() if k_.startswith(f"sched_{kind}_"))
            row[f"best_schedule_{kind}"] = best[1][len(f"sched_{kind}_"):]
            row[f"best_schedule_{kind}_vs_heuristic"] = round(t[f"ours_{kind}_gemm"] / best[0], 3)

    flops = 2 * m * n * k
    for name, sec in t.items():
        row[f"{name}_us"] = round(sec * 1e6, 2)
        if not name.startswith("ours_quant_fp8"):
            row[f"{name}_tops"] = round(flops / sec / 1e12, 1)
            c = ceil["bf16_tops"] if name == "bf16_linear" else ceil["fp8_tops"]
            row[f"{name}_pct_ceiling"] = round(100 * flops / sec / 1e12 / c, 1)
    qbytes = m * k * 2 + m * k + m * 4
    row["ours_quant_fp8_gbps"] = round(qbytes / t["ours_quant_fp8"] / 1e9, 1)
    row["ours_quant_fp8_pct_copy"] = round(100 * row["ours_quant_fp8_gbps"] / ceil["copy_gbps"], 1)

    def ratio(num, den):
        if num in t and den in t:
            row[f"{num}_vs_{den}"] = round(t[den] / t[num], 3)
    ratio("ours_fp8_gemm", "bf16_linear")
    ratio("ours_fp8_gemm", "scaled_mm_rowwise")
    ratio("ours_fp8_gemm", "scaled_mm_rowwise_fast")
    ratio("ours_int8_gemm", "int_mm")
    ratio("ours_int8_gemm", "bf16_linear")
    ratio("ours_qlinear_fp8", "bf16_linear")
    ratio("ours_qlinear_int8", "bf16_linear")
    ratio("ours_qlinear_fp8_lr", "bf16_linear")
    ratio("ours_qlinear_fp8_lrcat", "bf16_linear")
    ratio("ours_qlinear_fp8_lrcat_mm", "bf16_linear")
    # Low-rank overheads (%): time with the branch over time without it, same run.
    for with_lr, without in (("ours_fp8_gemm_lr", "ours_fp8_gemm"), ("ours_int8_gemm_lr", "ours_int8_gemm"),
                             ("ours_fp8_gemm_lr_unfused", "ours_fp8_gemm"), ("ours_quant_fp8_lr", "ours_quant_fp8"),
                             ("ours_qlinear_fp8_lr", "ours_qlinear_fp8"), ("ours_fp8_gemm_lrcat", "ours_fp8_gemm"),
                             ("ours_quant_fp8_lrcat", "ours_quant_fp8"), ("ours_qlinear_fp8_lrcat", "ours_qlinear_fp8"),
                             ("ours_quant_fp8_lrcat_mm", "ours_quant_fp8"),
                             ("ours_qlinear_fp8_lrcat_mm", "ours_qlinear_fp8")):
        if with_lr in t:
            row[f"{with_lr}_overhead_pct"] = round(100 * (t[with_lr] / t[without] - 1), 1)
    del sets
    torch.cuda.empty_cache()
    return row


MD_COLS = [("model", "model"), ("M", "M"), ("K", "K"), ("N", "N"), ("bf16_linear_us", "bf16 us"),
           ("scaled_mm_rowwise_us", "scaled_mm us"), ("int_mm_us", "int_mm us"), ("ours_fp8_gemm_us", "fp8 us"),
           ("ours_fp8_gemm_tops", "fp8 TOPS"), ("ours_int8_gemm_us", "int8 us"), ("ours_quant_fp8_us", "quant us"),
           ("ours_quant_fp8_pct_copy", "quant %copy"), ("ours_qlinear_fp8_us", "QLin fp8 us"),
           ("ours_fp8_gemm_vs_bf16_linear", "fp8/bf16"), ("ours_fp8_gemm_vs_scaled_mm_rowwise", "fp8/scaled_mm"),
           ("ours_fp8_gemm_vs_scaled_mm_rowwise_fast", "fp8/scaled_mm_fast"),
           ("ours_int8_gemm_vs_int_mm", "int8/int_mm"), ("ours_int8_gemm_vs_bf16_linear", "int8/bf16"),
           ("ours_qlinear_fp8_vs_bf16_linear", "QLin fp8/bf16"), ("ours_qlinear_int8_vs_bf16_linear", "QLin int8/bf16"),
           ("config_fp8", "fp8 config")]
LR_COLS = [("rank", "rank"), ("ours_fp8_gemm_lr_us", "fp8+LR us"), ("ours_fp8_gemm_lr_overhead_pct", "LR ovh fp8 %"),
           ("ours_int8_gemm_lr_us", "int8+LR us"), ("ours_int8_gemm_lr_overhead_pct", "LR ovh int8 %"),
           ("ours_fp8_gemm_lr_unfused_overhead_pct", "unfused addmm ovh %"), ("ours_quant_fp8_lr_us", "quant+down us"),
           ("ours_quant_fp8_lr_overhead_pct", "quant down ovh %"), ("ours_qlinear_fp8_lr_us", "QLin fp8+LR us"),
           ("ours_qlinear_fp8_lr_overhead_pct", "QLin LR ovh %"), ("ours_qlinear_fp8_lr_vs_bf16_linear", "QLin fp8+LR/bf16"),
           ("ours_fp8_gemm_lrcat_us", "fp8 LR-cat us"), ("ours_fp8_gemm_lrcat_overhead_pct", "LR-cat ovh %"),
           ("ours_quant_fp8_lrcat_overhead_pct", "quant LR-cat ovh %"), ("ours_qlinear_fp8_lrcat_us", "QLin LR-cat us"),
           ("ours_qlinear_fp8_lrcat_overhead_pct", "QLin LR-cat ovh %"),
           ("ours_qlinear_fp8_lrcat_vs_bf16_linear", "QLin LR-cat/bf16"),
           ("ours_quant_fp8_lrcat_mm_overhead_pct", "quant LR-cat mm ovh %"),
           ("ours_qlinear_fp8_lrcat_mm_overhead_pct", "QLin LR-cat mm ovh %"),
           ("ours_qlinear_fp8_lrcat_mm_vs_bf16_linear", "QLin LR-cat mm/bf16")]


def write_outputs(rows, meta, out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_gemm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "bench_gemm.csv", "w", newline="") as f:
        f.write("# " + json.dumps(meta) + "\n")
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [f"GPU {meta['gpu']} ({meta.get('clocks.sm', '?')} / max {meta.get('clocks.max.sm', '?')}), "
             f"torch {meta['torch']}, CUDA {meta['cuda']}, timing {meta['timing']}, medians of {meta['reps']}; "
             f"ceilings: bf16 {meta['ceilings']['bf16_tops']:.0f} TOPS, fp8 {meta['ceilings']['fp8_tops']:.0f} TOPS, "
             f"copy {meta['ceilings']['copy_gbps']:.0f} GB/s", "",
             "| " + " | ".join(h for _, h in MD_COLS) + " |", "|" + "---|" * len(MD_COLS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k, _ in MD_COLS) + " |")
    if any("rank" in r for r in rows):
        cols = MD_COLS[:4] + LR_COLS
        lines += ["", "Low-rank branch (overheads: same run, with over without, minus 1):", "",
                  "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |")
    (out_dir / "bench_gemm.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels = [f"{r['model']}\n{r['M']}x{r['K']}x{r['N']}" for r in rows]
        series = [("ours_fp8_gemm_vs_bf16_linear", "FP8 GEMM / bf16"), ("ours_int8_gemm_vs_bf16_linear", "INT8 GEMM / bf16"),
                  ("ours_qlinear_fp8_vs_bf16_linear", "FP8 QLinear / bf16"),
                  ("ours_fp8_gemm_vs_scaled_mm_rowwise", "FP8 GEMM / _scaled_mm")]
        fig, ax = plt.subplots(figsize=(max(10, 0.45 * len(rows)), 5))
        width = 0.8 / len(series)
        for j, (key, label) in enumerate(series):
            ax.bar([i + j * width for i in range(len(rows))], [r.get(key, 0) or 0 for r in rows], width, label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], labels, rotation=90, fontsize=6)
        ax.set_ylabel("speedup (x)")
        ax.set_title(f"qengine W8A8 vs baselines, {meta['gpu']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "bench_gemm.png", dpi=130)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS), help="models whose shapes to run")
    ap.add_argument("--max-shapes", type=int, default=0, help="only the first N shapes (0 = all)")
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions per measurement (median reported)")
    ap.add_argument("--timing", choices=["graph", "eager"], default="graph",
                    help="replay a CUDA graph of the calls (default) or launch eagerly")
    ap.add_argument("--sweep-configs", action="store_true", help="also time every tile config of our GEMMs")
    ap.add_argument("--sweep-schedules", action="store_true",
                    help="also time the 128x128 sm90 configs under every persistent tile order (raster m|n x "
                         "swizzle 1|2|4|8) and report the best against the heuristic's choice")
    ap.add_argument("--rank", type=int, default=32, help="low-rank branch rank to time (0 = skip those columns)")
    ap.add_argument("--min-m", type=int, default=0, help="only shapes with M >= this (e.g. 4096: FLUX image stream)")
    ap.add_argument("--out-dir", type=Path, default=Path("out/bench_gemm"), help="where CSV/JSON/MD/PNG go")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_gemm.py needs a CUDA GPU")
    import qengine  # noqa: F401 - registers torch.ops.qengine
    from qengine import _extension
    ext = _extension.load_extension()
    if ext is None:
        sys.exit("qengine._C is not built: QENGINE_BUILD_CUDA=1 pip install --no-build-isolation .")
    meta = gpu_info()
    meta.update(timing=args.timing, reps=args.reps)
    l2 = meta["l2_bytes"]
    meta["ceilings"] = ceilings(args.reps, args.timing, l2)
    shapes = load_shapes(args.models)
    shapes = [s for s in shapes if s.M >= args.min_m]
    if args.max_shapes:
        shapes = shapes[: args.max_shapes]
    rows = []
    for s in shapes:
        r = bench_shape(s, meta["ceilings"], args.reps, args.timing, l2, ext, args.sweep_configs, args.rank,
                        args.sweep_schedules)
        rows.append(r)
        print(f"{s.model:10s} {s.M:5d}x{s.K:5d}x{s.N:5d} bf16 {r['bf16_linear_us']:8.1f}us  fp8 {r['ours_fp8_gemm_us']:8.1f}us"
              f" ({r.get('ours_fp8_gemm_vs_bf16_linear', 0):.2f}x bf16, {r.get('ours_fp8_gemm_vs_scaled_mm_rowwise', 0):.2f}x"
              f" smm)  int8 {r['ours_int8_gemm_us']:8.1f}us ({r.get('ours_int8_gemm_vs_int_mm', 0):.2f}x int_mm)"
              f"  quant {r['ours_quant_fp8_pct_copy']:5.1f}%copy  QLin fp8 {r.get('ours_qlinear_fp8_vs_bf16_linear', 0):.2f}x"
              f"  [{r.get('config_fp8', '')}]"
              + (f"  LR: gemm fp8 +{r['ours_fp8_gemm_lr_overhead_pct']}% int8 +{r['ours_int8_gemm_lr_overhead_pct']}%"
                 f" quant +{r['ours_quant_fp8_lr_overhead_pct']}%" if args.rank else "")
              + "".join(f"  best {kind} {r[f'best_schedule_{kind}']} {r[f'best_schedule_{kind}_vs_heuristic']:.3f}x"
                        for kind in ("fp8", "int8") if f"best_schedule_{kind}" in r), flush=True)
    write_outputs(rows, meta, args.out_dir)
    print(f"wrote {args.out_dir}/bench_gemm.{{csv,json,md,png}}")


if __name__ == "__main__":
    main()
