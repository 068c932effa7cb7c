# Session 9: where the split-K conv's time goes. Per-kernel device times (torch.profiler, eager)
# for a few shapes x plans; with --ncu, only runs the calls (for ncu).
import sys
import torch
import qengine  # noqa: F401
from qengine import _extension
ext = _extension.load_extension()
dev = torch.device("cuda")
SHAPES = [("8x8x1280", 1, 8, 8, 1280, 1280, 1), ("32x32x1280", 1, 32, 32, 1280, 1280, 1), ("64x64x640s2", 1, 64, 64, 640, 640, 2)]
PLANS = ["sm90_128x128x128_s4", "sm90_128x128x128_s4_split2", "sm90_128x128x128_s4_split4", "sm90_128x128x128_s4_split8"]
ncu = "--ncu" in sys.argv
for name, b, h, w, c, o, st in SHAPES:
    x = torch.randn(b, h, w, c, device=dev).bfloat16()
    wq = torch.randint(-127, 128, (o, 3, 3, c), device=dev, dtype=torch.int8)
    ws = torch.rand(o, device=dev) / 1000
    bias = torch.randn(o, device=dev).bfloat16()
    xs = (x.float().abs().amax() / 100).reshape(1)
    for plan in PLANS:
        if ncu and not (name == "8x8x1280" and plan.endswith(("split8", "_s4"))):
            continue
        f = lambda: ext.qconv2d_with_config(x, wq, ws, bias, xs, [st, st], [1, 1], [1, 1], plan)
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        if ncu:
            continue
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                f()
            torch.cuda.synchronize()
        agg = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                key = e.name[:40]
                agg.setdefault(key, []).append(e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total)
        print(f"{name:12s} {plan:28s} " + "  ".join(f"{k}: {sum(v)/len(v):.2f}us x{len(v)//20}" for k, v in sorted(agg.items())), flush=True)
