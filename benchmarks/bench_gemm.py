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

Timing: operands are built outside the timed region and rotated over n_sets copies, enough that
the op touching the fewest bytes (usually our quantize kernel or an 8-bit GEMM) streams >= 3x L2
over all copies (rotation_sets), capped by --max-sets and by --mem-fraction of the free GPU
memory; each row records the count (``rotation_sets``), what bound it (``rotation_bound``: l2,
max_sets or memory) and ``l2_rotation_x`` = smallest op's bytes over all copies / L2: below 3 the
short ops' figures may be flattered by L2 hits. Each sample times 8 back-to-back replays of a
CUDA graph of one call per copy, queued behind one untimed replay so that no launch gap falls
inside the timed region, and divides; the median of ``--reps`` samples is reported.
``--timing eager`` times plain eager launches instead.

Order (``--order``): ``interleaved`` (default) first captures every op of the shape, then runs
``--reps`` rounds that each take one sample of every op, the order rotated by one op per round
(round_orders), so the GPU's slowing as it heats is spread over all ops instead of charging the
ops timed last (H100, 4096x3072x3072, sequential: cuBLAS bf16 101 us at 1980 MHz timed first, 117 us
at 1440 MHz timed last; interleaved, every op sampled at one clock, ~1560 MHz);
``sequential`` (the old behaviour) times each op completely before the next. The
``--sweep-configs`` / ``--sweep-schedules`` timings join the shape's interleaved group, so the
best-schedule vs heuristic ratio compares samples taken side by side. The order is in the meta.

TOPS = 2*M*N*K / time. "% of ceiling" is against ceilings measured in the same run (each timed
alone): cuBLAS bf16 at 8192^3 (16-bit ops), ``_scaled_mm`` per-tensor fast-accum FP8 at 8192^3
(8-bit ops) and a device-to-device copy (quantize kernel, bytes read + written).

Writes bench_gemm.{csv,json,md,png} to --out-dir (JSON/CSV headers: GPU, clocks, torch, CUDA,
qengine build, timing, order, reps, max_sets, mem_fraction). Examples:

    python benchmarks/bench_gemm.py                        # every model's shapes
    python benchmarks/bench_gemm.py --models flux1-dev --sweep-configs
    python benchmarks/bench_gemm.py --order sequential     # the old one-op-at-a-time timing
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import MODELS, load_shapes  # noqa: E402

DEV = torch.device("cuda")


# ---------------------------------------------------------------- timing


INNER = 8
ORDERS = ("interleaved", "sequential")


@dataclass
class TimedOp:
    """One op to time: ``calls[i]`` is a no-arg callable on operand set i. ``may_fail``: a
    RuntimeError while warming it up or capturing it (a torch baseline this GPU or torch lacks) is
    recorded in time_ops' ``errors`` and the op left out, instead of aborting the run."""
    name: str
    calls: Sequence[Callable[[], object]]
    may_fail: bool = False


def prepare(calls, timing: str) -> Callable[[], None]:
    """Warm ``calls`` up (lazy init, autotuning, allocator) and return ``run()``, which runs each
    once: a replay of a CUDA graph of them (``timing == "graph"``) or the eager calls."""
    for c in calls:
        c()
    torch.cuda.synchronize()
    if timing != "graph":
        def run():
            for c in calls:
                c()
        return run
    graph = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as graph capture requires
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    graph.replay()
    return graph.replay  # the bound method keeps the graph (and its memory pool) alive


def sample(run: Callable[[], None], n_calls: int) -> float:
    """Seconds per call of one sample: INNER back-to-back ``run()`` behind one already-queued,
    untimed one, so the GPU never waits for a launch inside the timed region (short ops were
    charged the graph-launch gap) and, with a rotation > L2, the previous op's data is out of L2."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    run()
    start.record()
    for _ in range(INNER):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / (n_calls * INNER)


def round_orders(names: Sequence[str], reps: int) -> list[list[str]]:
    """The op order of each of ``reps`` interleaved rounds.

    Round r runs ``names`` rotated left by r, so over every cycle of len(names) rounds each op takes
    each position once (none is always sampled first, or last, as the GPU heats within a round).
    With 3+ ops, odd cycles rotate the reversed list, starting two further on: an op is then
    preceded by another op than in even cycles (a heavy GEMM before a short op can leave the clock
    lower), two consecutive rounds never start with the same op and no op is sampled twice in a
    row across rounds. (With 2 ops, plain rotation: starts alternate.)"""
    names, n, out = list(names), len(names), []
    if not n:
        return [[] for _ in range(reps)]
    for r in range(reps):
        cycle, pos = divmod(r, n)
        base, off = (names, pos) if cycle % 2 == 0 or n < 3 else (names[::-1], (pos + 2) % n)
        out.append(base[off:] + base[:off])
    return out


def time_ops(ops: Sequence[TimedOp], reps: int, timing: str, order: str = "interleaved",
             errors: dict | None = None) -> dict[str, float]:
    """Median seconds per call of each op, by name (an op that failed with ``may_fail`` is left
    out and its error put in ``errors``). ``interleaved``: every op is prepared (warm-up + graph
    capture) first, then ``reps`` rounds of one sample per op in round_orders' order;
    ``sequential``: each op prepared and sampled ``reps`` times before the next (its graph freed)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    names = [op.name for op in ops]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate op names: {names}")
    if order == "sequential":  # each op a group of its own: the old time_fn, op after op
        return {k: v for op in ops for k, v in time_ops([op], reps, timing, "interleaved", errors).items()}
    runs = {}
    for op in ops:
        try:
            runs[op.name] = (prepare(op.calls, timing), len(op.calls))
        except RuntimeError as e:
            if not op.may_fail or errors is None:
                raise
            errors[op.name] = str(e).splitlines()[0][:120]
    samples = {name: [] for name in runs}
    for names in round_orders(list(runs), reps):
        for name in names:
            run, n_calls = runs[name]
            samples[name].append(sample(run, n_calls))
    return {name: statistics.median(v) for name, v in samples.items()}


def time_fn(make_call, n_sets: int, reps: int, timing: str) -> float:
    """Median seconds of one call. ``make_call(i)`` returns a no-arg callable using operand set i.
    (One op timed alone; used by the ceilings and by bench_w4a8.py.)"""
    return time_ops([TimedOp("op", [make_call(i) for i in range(n_sets)])], reps, timing)["op"]


# ---------------------------------------------------------------- operands


def op_bytes(m: int, k: int, n: int) -> dict[str, int]:
    """DRAM bytes one call of each basic timed op reads + writes (operands, scales, bias, output).

    Every other timed op touches a superset of one of these: QLinear = quantize + GEMM, the
    low-rank and LR-cat variants add operands or K, the config/schedule sweeps are our GEMMs,
    ``_scaled_mm`` moves what our FP8 GEMM does. ``int_mm`` is timed (and listed) only for M > 16."""
    d = {"bf16_linear": 2 * (m * k + n * k + m * n) + 2 * n,
         "ours_w8a8_gemm": m * k + n * k + 4 * (m + n) + 2 * n + 2 * m * n,  # 8-bit x, w; f32 scales; bf16 b, out
         "ours_quant_fp8": 2 * m * k + m * k + 4 * m}             # bf16 x read, fp8 q + f32 scale written
    if m > 16:
        d["int_mm"] = m * k + n * k + 4 * m * n                    # int32 out
    return d


def set_bytes(m: int, k: int, n: int, rank: int = 0, lrcat: bool = True) -> int:
    """Bytes one operand set of operand_sets holds (``lrcat``: the LR-cat operands are built)."""
    b = 2 * m * k + 2 * n * k + 2 * n                              # x, w, b (bf16)
    b += 2 * (m * k + n * k + 4 * m + 4 * n)                       # fp8 and int8 copies + f32 row scales
    if rank:
        b += 2 * rank * k + 2 * n * rank + 4 * m * rank + 2 * m * rank  # down, up, low (f32), low16
        if lrcat:
            width = (3 * rank + 127) // 128 * 128                  # qengine.formats.lowrank_cat_layout
            b += n * (k + width) + 4 * rank + m * (k + width) + 4 * m  # wcat, inv_c, xcat, xcs
    return b


class Rotation(NamedTuple):
    n_sets: int
    smallest_op: str
    smallest_op_bytes: int
    set_bytes: int
    l2_x: float         # smallest op's bytes over all n_sets / L2 (>= 3 unless capped)
    bound: str          # what set n_sets: "l2" (3x L2 reached), "max_sets" or "memory"


def rotation_count(smallest_op_bytes: int, l2_bytes: int, max_sets: int, set_bytes: int = 0,
                   mem_budget_bytes: float | None = None) -> tuple[int, str]:
    """(count, bound): the fewest operand sets over which an op of ``smallest_op_bytes`` streams
    >= 3x L2, capped by ``max_sets`` (graph length) and by ``mem_budget_bytes`` (all sets together,
    ``set_bytes`` each; None = no cap), never below 2 (back-to-back calls never share operands),
    even where 2 sets exceed the budget. ``bound`` says which limit set it: "l2", "max_sets" or
    "memory". Shared by bench_gemm, bench_w4a8 and bench_conv."""
    count, bound = math.ceil(3 * l2_bytes / smallest_op_bytes), "l2"
    if count > max_sets:
        count, bound = max_sets, "max_sets"
    if mem_budget_bytes is not None and count * set_bytes > mem_budget_bytes:
        count, bound = int(mem_budget_bytes // set_bytes), "memory"
    return max(2, count), bound


def rotation_sets(m: int, k: int, n: int, l2_bytes: int, rank: int = 0, max_sets: int = 64,
                  mem_budget_bytes: float | None = None, lrcat: bool = True) -> Rotation:
    """How many operand sets to rotate over for shape (M, K, N).

    The count is the fewest that make the op touching the fewest bytes (op_bytes) stream >= 3x L2
    over all sets: sizing it by a whole set (every operand copy) instead left each thin op's own
    bytes inside L2 and flattered the short ops. It is capped by ``max_sets`` (graph length) and
    by ``mem_budget_bytes`` (all sets together, set_bytes each; None = no cap; the caller leaves the
    rest of the memory to the graphs' outputs), and never below 2 (so back-to-back calls never hit
    the same operands), even where 2 sets exceed the budget. ``bound`` says which limit set it."""
    ops = op_bytes(m, k, n)
    smallest = min(ops, key=ops.get)
    per_set = set_bytes(m, k, n, rank, lrcat)
    count, bound = rotation_count(ops[smallest], l2_bytes, max_sets, per_set, mem_budget_bytes)
    return Rotation(count, smallest, ops[smallest], per_set, count * ops[smallest] / l2_bytes, bound)


def fp8_rows(t: torch.Tensor):
    amax = t.float().abs().amax(dim=1).clamp_min(1e-12)
    scale = amax / 448.0
    return (t.float() / scale[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn), scale


def int8_rows(t: torch.Tensor):
    amax = t.float().abs().amax(dim=1).clamp_min(1e-12)
    scale = amax / 127.0
    return (t.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def operand_sets(m, k, n, n_sets, rank=0):
    """``n_sets`` operand sets (dicts of tensors on DEV) for shape (M, K, N); see set_bytes."""
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
            if has_lrcat():
                # The branch folded into K (qengine.formats.lowrank_cat): weight and q get 3r (rounded up to 128) more K.
                from qengine.formats.lowrank_cat import lowrank_cat_weight
                d["wcat"], d["inv_c"] = lowrank_cat_weight(wf, ws, d["up"])
                d["xcat"], d["xcs"] = torch.ops.qengine.quantize_act_fp8_lowrank_cat(x, None, d["down"], d["inv_c"])
        sets.append(d)
    return sets


def has_lrcat() -> bool:
    return hasattr(torch.ops.qengine, "quantize_act_fp8_lowrank_cat")


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


def bench_shape(shape, ceil, reps, timing, l2, ext, sweep, rank=0, sweep_schedules=False, order="interleaved",
                max_sets=64, mem_budget=None):
    m, k, n = shape.M, shape.K, shape.N
    rot = rotation_sets(m, k, n, l2, rank, max_sets, mem_budget, lrcat=has_lrcat())
    sets = operand_sets(m, k, n, rot.n_sets, rank)
    qe = torch.ops.qengine
    bf = torch.bfloat16
    row = {"model": shape.model, "M": m, "K": k, "N": n, "count": shape.count, "example": shape.example,
           "rotation_sets": rot.n_sets, "rotation_bound": rot.bound, "l2_rotation_x": round(rot.l2_x, 2)}
    ops = []

    def add(name, fn, may_fail=False):
        # fn(s) runs the op on operand set s; one bound call per set, all timed together by time_ops.
        ops.append(TimedOp(name, [functools.partial(fn, s) for s in sets], may_fail))

    add("bf16_linear", lambda s: F.linear(s["x"], s["w"], s["b"]))
    for name, fast in (("scaled_mm_rowwise", False), ("scaled_mm_rowwise_fast", True)):
        add(name, lambda s, f=fast: torch._scaled_mm(s["xf"], s["wf"].t(), scale_a=s["xs"][:, None],
                                                     scale_b=s["ws"][None, :], bias=s["b"], out_dtype=bf,
                                                     use_fast_accum=f), may_fail=True)
    if m > 16:
        add("int_mm", lambda s: torch._int_mm(s["xi"], s["wi"].t()), may_fail=True)
    add("ours_fp8_gemm", lambda s: qe.w8a8_fp8_gemm(s["xf"], s["xs"], s["wf"], s["ws"], s["b"], None, None, bf))
    add("ours_int8_gemm", lambda s: qe.w8a8_int8_gemm(s["xi"], s["xis"], s["wi"], s["wis"], s["b"], None, None, bf))
    add("ours_quant_fp8", lambda s: qe.quantize_act_fp8(s["x"], None, None))

    def qlinear_fp8(s):
        q, sc, _ = qe.quantize_act_fp8(s["x"], None, None)
        return qe.w8a8_fp8_gemm(q, sc, s["wf"], s["ws"], s["b"], None, None, bf)

    def qlinear_int8(s):
        q, sc, _ = qe.quantize_act_int8(s["x"], None, None)
        return qe.w8a8_int8_gemm(q, sc, s["wi"], s["wis"], s["b"], None, None, bf)
    add("ours_qlinear_fp8", qlinear_fp8)
    add("ours_qlinear_int8", qlinear_int8)
    if rank:
        row["rank"] = rank
        add("ours_fp8_gemm_lr", lambda s: qe.w8a8_fp8_gemm(s["xf"], s["xs"], s["wf"], s["ws"], s["b"], s["low"], s["up"],
                                                           bf))
        add("ours_int8_gemm_lr", lambda s: qe.w8a8_int8_gemm(s["xi"], s["xis"], s["wi"], s["wis"], s["b"], s["low"],
                                                             s["up"], bf))
        add("ours_fp8_gemm_lr_unfused", lambda s: qe.w8a8_fp8_gemm(s["xf"], s["xs"], s["wf"], s["ws"], s["b"], None, None,
                                                                   bf).addmm_(s["low16"], s["up"].t()))
        add("ours_quant_fp8_lr", lambda s: qe.quantize_act_fp8(s["x"], None, s["down"]))

        def qlinear_lr(s):
            q, sc, low = qe.quantize_act_fp8(s["x"], None, s["down"])
            return qe.w8a8_fp8_gemm(q, sc, s["wf"], s["ws"], s["b"], low, s["up"], bf)
        add("ours_qlinear_fp8_lr", qlinear_lr)
        if "wcat" in sets[0]:
            add("ours_fp8_gemm_lrcat", lambda s: qe.w8a8_fp8_gemm(s["xcat"], s["xcs"], s["wcat"], s["ws"], s["b"], None,
                                                                  None, bf))
            add("ours_quant_fp8_lrcat", lambda s: qe.quantize_act_fp8_lowrank_cat(s["x"], None, s["down"], s["inv_c"]))

            def qlinear_lrcat(s):
                q, sc = qe.quantize_act_fp8_lowrank_cat(s["x"], None, s["down"], s["inv_c"])
                return qe.w8a8_fp8_gemm(q, sc, s["wcat"], s["ws"], s["b"], None, None, bf)
            add("ours_qlinear_fp8_lrcat", qlinear_lrcat)
            if hasattr(qe, "quantize_act_fp8_lowrank_cat_from"):
                # The down-projection by cuBLAS (fp32 out) + the one-pass row kernel (QLinear.lowrank_cat_down = "matmul").
                mm = torch.ops.aten.mm.dtype

                quant_lrcat_mm = lambda s: qe.quantize_act_fp8_lowrank_cat_from(  # noqa: E731
                    s["x"], None, mm(s["x"], s["down"].t(), torch.float32), s["inv_c"])
                add("ours_quant_fp8_lrcat_mm", quant_lrcat_mm)
                add("ours_qlinear_fp8_lrcat_mm", lambda s: qe.w8a8_fp8_gemm(*quant_lrcat_mm(s), s["wcat"], s["ws"], s["b"],
                                                                            None, None, bf))
    if ext is not None:
        row["config_fp8"] = ext.gemm_heuristic(m, n, k, "float8_e4m3fn", DEV.index or 0)
        row["config_int8"] = ext.gemm_heuristic(m, n, k, "int8", DEV.index or 0)
    # The sweeps join the same interleaved group: their figures and the heuristic's are side by side.
    kinds = (("fp8", "f", "float8_e4m3fn", "xs", "ws"), ("int8", "i", "int8", "xis", "wis"))
    if sweep and ext is not None:
        for kind, key, qn, sc, wsc in kinds:
            for cfg in ext.gemm_configs():
                if ext.gemm_config_available(cfg, qn, DEV.index or 0):
                    add(f"cfg_{kind}_{cfg}", lambda s, c=cfg, key=key, sc=sc, wsc=wsc: ext.w8a8_gemm_with_config(
                        s["x" + key], s[sc], s["w" + key], s[wsc], s["b"], "bfloat16", c))
    if sweep_schedules and ext is not None:
        for kind, key, qn, sc, wsc in kinds:
            for cfg in SCHEDULE_CONFIGS:
                if cfg not in ext.gemm_configs() or not ext.gemm_config_available(cfg, qn, DEV.index or 0):
                    continue
                for r, sw in SCHEDULES:
                    add(f"sched_{kind}_{cfg}_{r}{sw}", lambda s, c=cfg, r=r, sw=sw, key=key, sc=sc, wsc=wsc:
                        ext.w8a8_gemm_with_config(s["x" + key], s[sc], s["w" + key], s[wsc], s["b"], "bfloat16", c,
                                                  raster=r, swizzle=sw))

    errors = {}
    t = time_ops(ops, reps, timing, order, errors)
    for name, msg in errors.items():
        row[f"{name}_error"] = msg
    for kind in ("fp8", "int8") if sweep_schedules else ():
        cands = [(v, k_) for k_, v in t.items() if k_.startswith(f"sched_{kind}_")]
        if cands:
            best = min(cands)
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
    sets.clear()  # the bound calls hold the operands: free them before the next shape
    ops.clear()
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
           ("config_fp8", "fp8 config"), ("l2_rotation_x", "rot/L2")]
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


def write_outputs(rows, meta, out_dir: Path, plot: bool = True):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_gemm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "bench_gemm.csv", "w", newline="") as f:
        f.write("# " + json.dumps(meta) + "\n")
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [f"GPU {meta['gpu']} ({meta.get('clocks.sm', '?')} / max {meta.get('clocks.max.sm', '?')}), "
             f"torch {meta['torch']}, CUDA {meta['cuda']}, timing {meta['timing']} {meta.get('order', '?')}, "
             f"medians of {meta['reps']}; "
             f"ceilings: bf16 {meta['ceilings']['bf16_tops']:.0f} TOPS, fp8 {meta['ceilings']['fp8_tops']:.0f} TOPS, "
             f"copy {meta['ceilings']['copy_gbps']:.0f} GB/s", "",
             "rot/L2: bytes of the smallest timed op over all rotated operand sets / L2; below 3 (rotation capped by "
             "--max-sets or the memory budget: rotation_bound) short ops may be flattered by L2 hits.", "",
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
    if not plot:
        return
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



def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS), help="models whose shapes to run")
    ap.add_argument("--max-shapes", type=int, default=0, help="only the first N shapes (0 = all)")
    ap.add_argument("--reps", type=int, default=30, help="timed samples per op (median reported)")
    ap.add_argument("--timing", choices=["graph", "eager"], default="graph",
                    help="replay a CUDA graph of the calls (default) or launch eagerly")
    ap.add_argument("--order", choices=ORDERS, default="interleaved",
                    help="interleaved (default): capture every op of a shape, then take one sample of each per "
                         "round, the order rotated each round, so GPU heating does not bias the ratios; "
                         "sequential: time each op completely before the next (the old behaviour)")
    ap.add_argument("--max-sets", type=int, default=64,
                    help="most rotated operand sets (the smallest timed op's sets together >= 3x L2 where possible)")
    ap.add_argument("--mem-fraction", type=float, default=0.5,
                    help="all operand sets of a shape together use at most this fraction of the free GPU memory "
                         "(the rest is left to the CUDA graphs' outputs)")
    ap.add_argument("--sweep-configs", action="store_true", help="also time every tile config of our GEMMs")
    ap.add_argument("--sweep-schedules", action="store_true",
                    help="also time the 128x128 sm90 configs under every persistent tile order (raster m|n x "
                         "swizzle 1|2|4|8) and report the best against the heuristic's choice")
    ap.add_argument("--rank", type=int, default=32, help="low-rank branch rank to time (0 = skip those columns)")
    ap.add_argument("--min-m", type=int, default=0, help="only shapes with M >= this (e.g. 4096: FLUX image stream)")
    ap.add_argument("--out-dir", type=Path, default=Path("out/bench_gemm"), help="where CSV/JSON/MD/PNG go")
    return ap


def run_meta(args, info: dict) -> dict:
    """The JSON/CSV header: ``info`` (gpu_info) plus how this run timed."""
    return {**info, "timing": args.timing, "order": args.order, "reps": args.reps, "max_sets": args.max_sets,
            "mem_fraction": args.mem_fraction}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_gemm.py needs a CUDA GPU")
    from qengine import _extension  # importing qengine registers torch.ops.qengine
    ext = _extension.load_extension()
    if ext is None:
        sys.exit("qengine._C is not built: QENGINE_BUILD_CUDA=1 pip install --no-build-isolation .")
    meta = run_meta(args, gpu_info())
    l2 = meta["l2_bytes"]
    meta["ceilings"] = ceilings(args.reps, args.timing, l2)
    shapes = load_shapes(args.models)
    shapes = [s for s in shapes if s.M >= args.min_m]
    if args.max_shapes:
        shapes = shapes[: args.max_shapes]
    rows = []
    for s in shapes:
        # Free memory now (the previous shape's sets and graphs are released): the sets' budget.
        budget = args.mem_fraction * torch.cuda.mem_get_info(DEV)[0]
        r = bench_shape(s, meta["ceilings"], args.reps, args.timing, l2, ext, args.sweep_configs, args.rank,
                        args.sweep_schedules, args.order, args.max_sets, budget)
        rows.append(r)
        print(f"{s.model:10s} {s.M:5d}x{s.K:5d}x{s.N:5d} bf16 {r['bf16_linear_us']:8.1f}us  fp8 {r['ours_fp8_gemm_us']:8.1f}us"
              f" ({r.get('ours_fp8_gemm_vs_bf16_linear', 0):.2f}x bf16, {r.get('ours_fp8_gemm_vs_scaled_mm_rowwise', 0):.2f}x"
              f" smm)  int8 {r['ours_int8_gemm_us']:8.1f}us ({r.get('ours_int8_gemm_vs_int_mm', 0):.2f}x int_mm)"
              f"  quant {r['ours_quant_fp8_pct_copy']:5.1f}%copy  QLin fp8 {r.get('ours_qlinear_fp8_vs_bf16_linear', 0):.2f}x"
              f"  [{r.get('config_fp8', '')}]  rot {r['rotation_sets']} = {r['l2_rotation_x']:.1f}xL2"
              + (f" ({r['rotation_bound']})" if r["rotation_bound"] != "l2" else "")
              + (f"  LR: gemm fp8 +{r['ours_fp8_gemm_lr_overhead_pct']}% int8 +{r['ours_int8_gemm_lr_overhead_pct']}%"
                 f" quant +{r['ours_quant_fp8_lr_overhead_pct']}%" if args.rank else "")
              + "".join(f"  best {kind} {r[f'best_schedule_{kind}']} {r[f'best_schedule_{kind}_vs_heuristic']:.3f}x"
                        for kind in ("fp8", "int8") if f"best_schedule_{kind}" in r), flush=True)
        write_outputs(rows, meta, args.out_dir, plot=False)  # after every shape: a cut-off run keeps its table
    write_outputs(rows, meta, args.out_dir)
    print(f"wrote {args.out_dir}/bench_gemm.{{csv,json,md,png}}")


if __name__ == "__main__":
    main()
