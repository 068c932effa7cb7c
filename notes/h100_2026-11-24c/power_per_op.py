"""Sustained clock and power per GEMM op (call 11): each op at FLUX 4608x3072->12288 replayed
back to back for ~4 s (a CUDA graph of 20 calls), nvidia-smi sampling every 100 ms meanwhile;
prints each op's median SM clock, power and time per call over its last 3 s."""
import subprocess
import statistics
import time
import torch
import torch.nn.functional as F
import qengine  # noqa: F401
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

dev, bf = torch.device("cuda"), torch.bfloat16
q = torch.ops.qengine
m, k, n = 4608, 3072, 12288
x = torch.randn(m, k, device=dev).bfloat16()
w = (torch.randn(n, k, device=dev) / k ** 0.5).bfloat16()
b = torch.randn(n, device=dev).bfloat16()
xi = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
wi = torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8)
xs = torch.rand(m, device=dev) * 1e-2
ws = torch.rand(n, device=dev) * 1e-2
w4 = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)))
la = torch.randn(m, 32, device=dev)
up = torch.randn(n, 32, device=dev).bfloat16()
ops = {
    "bf16": lambda: F.linear(x, w, b),
    "w8a8_int8": lambda: q.w8a8_int8_gemm(xi, xs, wi, ws, b, None, None, bf),
    "w4a8": lambda: q.w4a8_gemm(xi, xs, w4, ws[:, None].contiguous(), b, None, None, bf),
    "w4a8_r32": lambda: q.w4a8_gemm(xi, xs, w4, ws[:, None].contiguous(), b, la, up, bf),
}
smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader,nounits",
                        "-lms", "100"], stdout=subprocess.PIPE, text=True)
spans = {}
for name, fn in ops.items():
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(20):
            fn()
    time.sleep(2.0)  # back to idle between ops
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.time()
    while time.time() - t0 < 1.0:  # 1 s to reach the sustained state, not measured
        g.replay(); g.replay(); torch.cuda.synchronize()
    t1, calls = time.time(), 0
    e0.record()
    while time.time() - t1 < 3.0:
        g.replay(); g.replay(); torch.cuda.synchronize()  # the host follows the GPU
        calls += 40
    e1.record(); torch.cuda.synchronize(); t2 = time.time()
    spans[name] = (t1, t2, e0.elapsed_time(e1) * 1e3 / max(calls, 1))
smi.terminate()
out = smi.communicate()[0].splitlines()
samples = []
for line in out:
    parts = [p.strip() for p in line.split(",")]
    try:
        ts = time.mktime(time.strptime(parts[0].split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + parts[0].split(".")[1])
        samples.append((ts, float(parts[1]), float(parts[2])))
    except (ValueError, IndexError):
        continue
for name, (t1, t2, us) in spans.items():
    s = [(c, p) for ts, c, p in samples if t1 <= ts <= t2]
    if s:
        print(f"{name:10s} {us:7.1f} us/call  SM clock median {statistics.median(c for c, _ in s):6.0f} MHz  "
              f"power median {statistics.median(p for _, p in s):5.0f} W  ({len(s)} samples)")
    else:
        print(name, us, "no samples")
