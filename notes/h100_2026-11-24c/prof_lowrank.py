"""Where the W4A8 benchmark's low-rank overhead goes under sustained load (bench_w4a8.py reads
~2x ncu's kernel-time overhead at 4608x3072->12288). For each shape and variant (plain, r32 with
fp32 lowrank_act as the benchmark passes it): a CUDA graph of 15 calls rotating 4 operand sets,
replayed under torch.profiler; prints the wall time per call (events) and the median duration of
each kernel (CUPTI)."""
import statistics
import torch
import qengine  # noqa: F401
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

dev, r, bf = torch.device("cuda"), 32, torch.bfloat16
q = torch.ops.qengine
for m, k, n in [(4608, 3072, 12288), (4096, 3072, 3072)]:
    sets = []
    for i in range(4):
        sets.append(dict(a=torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8),
                         xs=torch.rand(m, device=dev) * 1e-2,
                         w=prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8))),
                         ws=torch.rand(n, 1, device=dev) * 1e-2, b=torch.randn(n, device=dev).bfloat16(),
                         la=torch.randn(m, r, device=dev), up=torch.randn(n, r, device=dev).bfloat16()))
    for variant in ("plain", "r32"):
        def call(s):
            lr = (s["la"], s["up"]) if variant == "r32" else (None, None)
            return q.w4a8_gemm(s["a"], s["xs"], s["w"], s["ws"], s["b"], *lr, bf)
        for s in sets:
            call(s)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(15):
                call(sets[i % 4])
        g.replay(); torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        walls = []
        for _ in range(5):
            e0.record(); g.replay(); e1.record(); torch.cuda.synchronize()
            walls.append(e0.elapsed_time(e1) * 1e3 / 15)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                g.replay()
            torch.cuda.synchronize()
        durs = {}
        for ev in prof.events():
            if ev.device_type == torch.autograd.DeviceType.CUDA and ev.device_time > 0:
                name = "gemm" if "device_kernel" in ev.name else ev.name[:50]
                durs.setdefault(name, []).append(ev.device_time)
        kern = "  ".join(f"{nm}: {statistics.median(v):.1f} us x{len(v) // 3}" for nm, v in durs.items())
        print(f"{m}x{k}->{n} {variant:5s} wall/call {statistics.median(walls):7.1f} us | {kern}", flush=True)
