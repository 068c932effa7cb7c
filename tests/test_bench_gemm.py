"""benchmarks/bench_gemm.py's fairness machinery, on CPU: the operand rotation is sized by the
smallest timed op (>= 3x L2 where max_sets and the memory budget allow), the interleaved order
is balanced, time_ops samples in that order (its CUDA parts, prepare and sample, are replaced by
fakes here) and the run's meta records the order."""
import collections
import importlib
import inspect
import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_gemm  # noqa: E402
from shapes import LinearShape, load_shapes  # noqa: E402

L2 = 50 * 2**20  # H100


@pytest.fixture
def cpu_ops(monkeypatch):
    """operand_sets and the ops on CPU: qengine registers torch.ops.qengine with its reference kernels."""
    importlib.import_module("qengine")
    monkeypatch.setattr(bench_gemm, "DEV", torch.device("cpu"))


# ---------------------------------------------------------------- rotation


def test_rotation_streams_smallest_op_3x_l2_when_memory_allows():
    for s in load_shapes(None):
        for rank in (0, 32):
            rot = bench_gemm.rotation_sets(s.M, s.K, s.N, L2, rank, max_sets=10**6, mem_budget_bytes=1e15)
            ops = bench_gemm.op_bytes(s.M, s.K, s.N)
            assert rot.smallest_op_bytes == min(ops.values()) and ops[rot.smallest_op] == rot.smallest_op_bytes
            assert rot.bound == "l2" and rot.n_sets >= 2
            assert rot.n_sets * rot.smallest_op_bytes >= 3 * L2, s
            assert rot.l2_x == pytest.approx(rot.n_sets * rot.smallest_op_bytes / L2) and rot.l2_x >= 3
            # the fewest such sets (or 2)
            assert rot.n_sets == 2 or (rot.n_sets - 1) * rot.smallest_op_bytes < 3 * L2


def test_rotation_fixes_the_old_whole_set_sizing():
    # FLUX image stream 4096x3072->3072: the old count (all operands of a set) was 2, so the quantize
    # kernel's own bytes over the sets were 1.4x L2; sized by the smallest op it gets >= 3x.
    m, k, n = 4096, 3072, 3072
    old_per_set = m * k * 2 + n * k * 2 + m * k * 2 + n * k * 2 + m * n * 2
    old = max(2, min(8, math.ceil(3 * L2 / old_per_set)))
    quant = bench_gemm.op_bytes(m, k, n)["ours_quant_fp8"]
    assert old * quant < 3 * L2
    rot = bench_gemm.rotation_sets(m, k, n, L2, 0, 64, 40e9)
    assert rot.smallest_op == "ours_quant_fp8" and rot.n_sets > old and rot.n_sets * quant >= 3 * L2


def test_smallest_op_is_the_gemm_or_quantize_and_int_mm_only_above_m16():
    assert "int_mm" not in bench_gemm.op_bytes(16, 3072, 3072)
    assert bench_gemm.op_bytes(64, 1280, 1280)["int_mm"] == 64 * 1280 + 1280 * 1280 + 4 * 64 * 1280
    assert bench_gemm.rotation_sets(4608, 15360, 3072, L2).smallest_op == "ours_w8a8_gemm"   # wide K, narrow N
    assert bench_gemm.rotation_sets(77, 768, 1280, L2).smallest_op == "ours_quant_fp8"     # few tokens


def test_rotation_respects_max_sets_and_records_it():
    rot = bench_gemm.rotation_sets(77, 768, 320, L2, 32, max_sets=64, mem_budget_bytes=1e12)
    assert rot.n_sets == 64 and rot.bound == "max_sets" and rot.l2_x < 3
    assert bench_gemm.rotation_sets(77, 768, 320, L2, 0, max_sets=5).n_sets == 5


def test_rotation_respects_memory_budget_and_records_it():
    m, k, n, rank = 77, 2048, 1280, 32
    per_set = bench_gemm.set_bytes(m, k, n, rank)
    for sets_fit in (2, 3, 7, 20):
        budget = sets_fit * per_set + per_set // 2
        rot = bench_gemm.rotation_sets(m, k, n, L2, rank, max_sets=64, mem_budget_bytes=budget)
        assert rot.n_sets == sets_fit and rot.bound == "memory" and rot.set_bytes == per_set
        assert rot.n_sets * rot.set_bytes <= budget
        assert rot.l2_x == pytest.approx(sets_fit * rot.smallest_op_bytes / L2) and rot.l2_x < 3
    # a budget that does not bind leaves the L2 count
    assert bench_gemm.rotation_sets(m, k, n, L2, rank, 64, 1e12).bound in ("l2", "max_sets")


def test_rotation_never_below_two_sets():
    assert bench_gemm.rotation_sets(4608, 15360, 3072, L2, 32, max_sets=64, mem_budget_bytes=0).n_sets == 2
    assert bench_gemm.rotation_sets(64, 1280, 1280, L2, 0, max_sets=1).n_sets == 2
    big = bench_gemm.rotation_sets(16384, 16384, 16384, L2)  # one op alone is >> 3x L2
    assert big.n_sets == 2 and big.bound == "l2"


@pytest.mark.parametrize("rank", [0, 32])
def test_set_bytes_is_what_operand_sets_allocates(cpu_ops, rank):
    m, k, n = 48, 256, 96
    sets = bench_gemm.operand_sets(m, k, n, 3, rank)
    assert len(sets) == 3
    held = sum(t.numel() * t.element_size() for t in sets[0].values())
    assert held == bench_gemm.set_bytes(m, k, n, rank, lrcat=bench_gemm.has_lrcat())
    if rank:
        assert "wcat" in sets[0]


# ---------------------------------------------------------------- interleaved order


@pytest.mark.parametrize("n", range(1, 9))
def test_round_orders_are_balanced_rotations(n):
    names = [f"op{i}" for i in range(n)]
    orders = bench_gemm.round_orders(names, 4 * n + 3)
    assert len(orders) == 4 * n + 3
    assert all(sorted(o) == sorted(names) for o in orders)
    for c in range(4):  # every whole cycle of n rounds: each op in each position exactly once
        pos = collections.Counter((name, i) for o in orders[c * n:(c + 1) * n] for i, name in enumerate(o))
        assert set(pos.values()) == {1} and len(pos) == n * n
    if n >= 2:
        assert all(a[0] != b[0] for a, b in zip(orders, orders[1:])), "two consecutive rounds start with one op"
        assert orders[1] == names[1:] + names[:1]  # rotated by one position
    if n >= 3:
        flat = [name for o in orders for name in o]
        assert all(a != b for a, b in zip(flat, flat[1:])), "an op sampled twice in a row across rounds"
        prev = collections.defaultdict(set)  # over two cycles an op is not always preceded by the same op
        for o in orders[:2 * n]:
            for a, b in zip(o, o[1:]):
                prev[b].add(a)
        assert all(len(prev[name]) >= 2 for name in names)


def test_round_orders_edge_cases():
    assert bench_gemm.round_orders([], 3) == [[], [], []]
    assert bench_gemm.round_orders(["a"], 2) == [["a"], ["a"]]
    assert bench_gemm.round_orders(["a", "b"], 0) == []


class FakeGPU:
    """prepare/sample without CUDA: records the order of events; every call costs 1 us, times a
    clock that slows by ``heat`` per sample taken (a GPU heating up)."""

    def __init__(self, heat=0.0, fail=()):
        self.events, self.n_samples, self.heat, self.fail = [], 0, heat, set(fail)

    def prepare(self, calls, timing):
        for c in calls:
            c()  # warm up: the real prepare runs every call once
        name = calls[0].__name__
        if name in self.fail:
            raise RuntimeError(f"{name} not supported\nmore")
        self.events.append(("prepare", name))
        return lambda: name

    def sample(self, run, n_calls):
        self.events.append(("sample", run()))
        self.n_samples += 1
        return 1e-6 * (1 + self.heat * self.n_samples)


def _ops(names, ran=None):
    def call(name):
        def f():
            if ran is not None:
                ran.append(name)
        f.__name__ = name
        return f
    return [bench_gemm.TimedOp(name, [call(name)] * 2, may_fail=name.startswith("maybe")) for name in names]


def test_time_ops_interleaved_prepares_all_then_samples_in_round_order(monkeypatch):
    gpu = FakeGPU()
    monkeypatch.setattr(bench_gemm, "prepare", gpu.prepare)
    monkeypatch.setattr(bench_gemm, "sample", gpu.sample)
    ran = []
    names = ["bf16", "smm", "ours"]
    t = bench_gemm.time_ops(_ops(names, ran), reps=5, timing="graph", order="interleaved")
    assert list(t) == names and all(v == pytest.approx(1e-6) for v in t.values())
    assert ran == ["bf16", "bf16", "smm", "smm", "ours", "ours"]  # every op warmed up, once per set
    assert gpu.events[:3] == [("prepare", n) for n in names]
    assert [e[1] for e in gpu.events[3:]] == [n for o in bench_gemm.round_orders(names, 5) for n in o]


def test_time_ops_sequential_is_one_op_at_a_time(monkeypatch):
    gpu = FakeGPU()
    monkeypatch.setattr(bench_gemm, "prepare", gpu.prepare)
    monkeypatch.setattr(bench_gemm, "sample", gpu.sample)
    bench_gemm.time_ops(_ops(["a", "b"]), reps=3, timing="eager", order="sequential")
    assert gpu.events == [("prepare", "a")] + [("sample", "a")] * 3 + [("prepare", "b")] + [("sample", "b")] * 3
    with pytest.raises(ValueError, match="order"):
        bench_gemm.time_ops(_ops(["a"]), 1, "graph", order="random")
    with pytest.raises(ValueError, match="duplicate"):
        bench_gemm.time_ops(_ops(["a", "a"]), 1, "graph")


def test_interleaving_removes_the_heating_bias(monkeypatch):
    # Three ops of equal cost on a GPU whose clock slows 0.1% per sample: timed one after the other,
    # the last looks ~6% slower than the first; interleaved, their medians agree within 0.2%.
    def medians(order):
        gpu = FakeGPU(heat=1e-3)
        monkeypatch.setattr(bench_gemm, "prepare", gpu.prepare)
        monkeypatch.setattr(bench_gemm, "sample", gpu.sample)
        t = bench_gemm.time_ops(_ops(["bf16", "smm", "ours"]), reps=30, timing="graph", order=order)
        return t["ours"] / t["bf16"], max(t.values()) / min(t.values())
    seq_ratio, _ = medians("sequential")
    _, spread = medians("interleaved")
    assert seq_ratio > 1.05
    assert spread < 1.002


def test_time_ops_records_errors_of_may_fail_ops_only(monkeypatch):
    gpu = FakeGPU(fail={"maybe_int_mm", "ours"})
    monkeypatch.setattr(bench_gemm, "prepare", gpu.prepare)
    monkeypatch.setattr(bench_gemm, "sample", gpu.sample)
    errors = {}
    t = bench_gemm.time_ops(_ops(["bf16", "maybe_int_mm"]), reps=2, timing="graph", errors=errors)
    assert list(t) == ["bf16"] and errors == {"maybe_int_mm": "maybe_int_mm not supported"}
    with pytest.raises(RuntimeError):  # our own op failing is not swallowed
        bench_gemm.time_ops(_ops(["bf16", "ours"]), reps=2, timing="graph", errors={})


def test_time_fn_keeps_its_signature_and_meaning(monkeypatch):
    assert list(inspect.signature(bench_gemm.time_fn).parameters) == ["make_call", "n_sets", "reps", "timing"]
    seen, times = [], iter([3e-6, 1e-6, 2e-6])
    monkeypatch.setattr(bench_gemm, "prepare", lambda calls, timing: (seen.extend(calls), lambda: None)[1])
    monkeypatch.setattr(bench_gemm, "sample", lambda run, n_calls: next(times))
    made = []
    assert bench_gemm.time_fn(lambda i: made.append(i) or (lambda: i), 3, 3, "graph") == 2e-6
    assert made == [0, 1, 2] and [c() for c in seen] == [0, 1, 2]


def test_bench_shape_on_cpu_times_every_op_in_one_group(cpu_ops, monkeypatch):
    # The op closures run for real (CPU reference kernels) in the fake warm-up; timing is faked.
    groups, no_cpu_kernel = [], []

    def fake_time_ops(ops, reps, timing, order="interleaved", errors=None):
        groups.append((order, [op.name for op in ops]))
        out = {}
        for op in ops:
            try:
                for c in op.calls:
                    c()
            except NotImplementedError:  # aten::mm.dtype (bf16 in, fp32 out) is CUDA-only
                no_cpu_kernel.append(op.name)
                continue
            except RuntimeError as e:  # e.g. torch._scaled_mm may have no CPU rowwise kernel
                assert op.may_fail, op.name
                errors[op.name] = str(e).splitlines()[0][:120]
                continue
            out[op.name] = 1e-5
        return out
    monkeypatch.setattr(bench_gemm, "time_ops", fake_time_ops)
    shape = LinearShape("test", 32, 256, 128, 1, "x", False)
    ceil = {"bf16_tops": 1.0, "fp8_tops": 1.0, "copy_gbps": 1.0}
    row = bench_gemm.bench_shape(shape, ceil, 3, "eager", L2, None, False, rank=32, order="sequential",
                                 max_sets=3, mem_budget=1e12)
    assert len(groups) == 1 and groups[0][0] == "sequential"
    assert set(no_cpu_kernel) <= {"ours_quant_fp8_lrcat_mm", "ours_qlinear_fp8_lrcat_mm"}
    names = groups[0][1]
    for name in ("bf16_linear", "int_mm", "ours_fp8_gemm", "ours_int8_gemm", "ours_quant_fp8", "ours_qlinear_fp8",
                 "ours_qlinear_int8", "ours_fp8_gemm_lr", "ours_qlinear_fp8_lr", "ours_qlinear_fp8_lrcat"):
        assert name in names
        assert f"{name}_us" in row or f"{name}_error" in row
    assert row["ours_fp8_gemm_us"] == 10.0 and row["ours_fp8_gemm_vs_bf16_linear"] == 1.0
    assert row["rotation_sets"] == 3 and row["rotation_bound"] == "max_sets"
    assert row["l2_rotation_x"] == round(3 * bench_gemm.op_bytes(32, 256, 128)["ours_quant_fp8"] / L2, 2)


class FakeExt:
    """The parts of qengine._C the sweeps use; records what each forced-config call was given."""

    def __init__(self):
        self.calls = []

    def gemm_heuristic(self, m, n, k, qdtype, device):
        return "cfg_a"

    def gemm_configs(self):
        return ["cfg_a", *bench_gemm.SCHEDULE_CONFIGS]

    def gemm_config_available(self, cfg, qdtype, device):
        return True

    def w8a8_gemm_with_config(self, x, xs, w, ws, b, out, cfg, raster=None, swizzle=None):
        assert x.dtype == w.dtype and xs.shape[0] == x.shape[0] and ws.shape[0] == w.shape[0]
        self.calls.append((x.dtype, cfg, raster, swizzle))


def test_sweeps_join_the_group_and_each_op_calls_its_own_config(cpu_ops, monkeypatch):
    ext, groups = FakeExt(), []
    fast = "sched_fp8_" + bench_gemm.SCHEDULE_CONFIGS[1] + "_n4"

    def fake_time_ops(ops, reps, timing, order="interleaved", errors=None):
        groups.append([op.name for op in ops])
        for op in ops:
            if op.name.startswith(("cfg_", "sched_")):
                ext.calls.clear()
                for c in op.calls:
                    c()
                kind = torch.float8_e4m3fn if "_fp8_" in op.name else torch.int8
                assert len(ext.calls) == len(op.calls) and len(set(ext.calls)) == 1
                dtype, cfg, raster, swizzle = ext.calls[0]
                assert dtype == kind and cfg in op.name, op.name
                if op.name.startswith("sched_"):
                    assert op.name.endswith(f"_{raster}{swizzle}")
        return {name: (0.5e-5 if name == fast else 1e-5) for name in groups[-1]}
    monkeypatch.setattr(bench_gemm, "time_ops", fake_time_ops)
    row = bench_gemm.bench_shape(LinearShape("t", 32, 256, 128, 1, "x", False),
                                 {"bf16_tops": 1.0, "fp8_tops": 1.0, "copy_gbps": 1.0}, 3, "graph", L2, ext,
                                 sweep=True, rank=0, sweep_schedules=True, max_sets=2)
    assert len(groups) == 1  # the sweeps are timed in the shape's one group
    names = groups[0]
    assert {"cfg_fp8_cfg_a", "cfg_int8_cfg_a", fast} <= set(names) and "ours_fp8_gemm" in names
    assert sum(n.startswith("sched_") for n in names) == 2 * len(bench_gemm.SCHEDULE_CONFIGS) * len(bench_gemm.SCHEDULES)
    assert row["best_schedule_fp8"] == fast[len("sched_fp8_"):] and row["best_schedule_fp8_vs_heuristic"] == 2.0
    assert row["config_fp8"] == "cfg_a" and row["best_schedule_int8_vs_heuristic"] == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and events need a CUDA GPU")
@pytest.mark.parametrize("timing", ["graph", "eager"])
def test_time_ops_on_gpu(timing):
    # torch ops only (no qengine._C): the real prepare/sample with several graphs alive at once.
    m, k, n = 256, 1024, 1024
    rot = bench_gemm.rotation_sets(m, k, n, 50 * 2**20, 0, 8, 0.5 * torch.cuda.mem_get_info()[0])
    xs = [torch.randn(m, k, device="cuda").bfloat16() for _ in range(rot.n_sets)]
    ws = [torch.randn(n, k, device="cuda").bfloat16() for _ in range(rot.n_sets)]
    xi, wi = [x.to(torch.int8) for x in xs], [w.to(torch.int8) for w in ws]
    ops = [bench_gemm.TimedOp("bf16", [lambda x=x, w=w: torch.nn.functional.linear(x, w) for x, w in zip(xs, ws)]),
           bench_gemm.TimedOp("int_mm", [lambda x=x, w=w: torch._int_mm(x, w.t()) for x, w in zip(xi, wi)], True),
           bench_gemm.TimedOp("cast", [lambda x=x: x.to(torch.float8_e4m3fn) for x in xs])]
    for order in bench_gemm.ORDERS:
        errors = {}
        t = bench_gemm.time_ops(ops, 5, timing, order, errors)
        assert set(t) | set(errors) == {"bf16", "int_mm", "cast"} and set(errors) <= {"int_mm"}
        assert all(0 < v < 1e-2 for v in t.values()), t
    assert 0 < bench_gemm.time_fn(lambda i: (lambda: xs[i] * 2), rot.n_sets, 3, timing) < 1e-2


# ---------------------------------------------------------------- command line and meta


def test_help_works_without_gpu(capsys):
    with pytest.raises(SystemExit) as e:
        bench_gemm.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--order {interleaved,sequential}" in out and "--max-sets" in out and "--mem-fraction" in out


def test_defaults():
    args = bench_gemm.build_parser().parse_args([])
    assert args.order == "interleaved" and args.max_sets == 64 and 0 < args.mem_fraction <= 1


@pytest.mark.parametrize("order", ["interleaved", "sequential"])
def test_meta_records_the_order(tmp_path, order):
    argv = [] if order == "interleaved" else ["--order", order]
    meta = bench_gemm.run_meta(bench_gemm.build_parser().parse_args(argv), {"gpu": "fake", "torch": "t", "cuda": "c"})
    assert meta["order"] == order and meta["max_sets"] == 64 and meta["timing"] == "graph"
    meta["ceilings"] = {"bf16_tops": 1.0, "fp8_tops": 2.0, "copy_gbps": 3.0}
    rows = [{"model": "m", "M": 1, "K": 2, "N": 3, "rotation_sets": 64, "rotation_bound": "max_sets", "l2_rotation_x": 0.2}]
    bench_gemm.write_outputs(rows, meta, tmp_path)
    assert json.loads((tmp_path / "bench_gemm.json").read_text())["meta"]["order"] == order
    first = (tmp_path / "bench_gemm.csv").read_text().splitlines()[0]
    assert json.loads(first[2:])["order"] == order
    md = (tmp_path / "bench_gemm.md").read_text()
    assert f"timing graph {order}" in md and "rot/L2" in md and "| 0.2 |" in md
