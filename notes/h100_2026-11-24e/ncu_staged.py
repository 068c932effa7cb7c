"""The staged low-rank branch for ncu: plain vs + r32 (16-bit lowrank_act, as QLinear feeds it) at
4608x3072->3072 on the 128x128 cooperative tile (the heuristic's pick since this session: +16%)
and 4096x3072->3072 on 128x256 (+12-14%). Two rounds; profile the second (--launch-skip =
launches per round, printed last)."""
import torch
import qengine  # noqa: F401
from qengine import _C as EXT
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

r, dev = 32, torch.device("cuda")
cases = [((4608, 3072, 3072), "sm90_128x128x128_coop"), ((4096, 3072, 3072), "sm90_128x256x128_coop")]
ops = []
for (m, k, n), cfg in cases:
    a = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
    w = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)))
    xs = torch.rand(m, device=dev) * 1e-2
    ws = torch.rand(n, 1, device=dev) * 1e-2
    b = torch.randn(n, device=dev).bfloat16()
    la = torch.randn(m, r, device=dev).bfloat16()
    up = torch.randn(n, r, device=dev).bfloat16()
    ops.append(lambda a=a, xs=xs, w=w, ws=ws, b=b, cfg=cfg: EXT.w4a8_gemm_with_config(a, xs, w, ws, b, None, None, "bfloat16", cfg))
    ops.append(lambda a=a, xs=xs, w=w, ws=ws, b=b, la=la, up=up, cfg=cfg: EXT.w4a8_gemm_with_config(a, xs, w, ws, b, la, up, "bfloat16", cfg))
for _ in range(2):
    for op in ops:
        op()
torch.cuda.synchronize()
print("launches per round:", len(ops), "(plain, staged) x", cases)
