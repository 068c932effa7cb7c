"""W4A8 (heuristic config: 128x256 cooperative) vs our W8A8 INT8 GEMM at two FLUX image-stream
shapes, for ncu: where does W4A8 lose ~15% to INT8 at large M, where neither moves weights?
Two rounds; profile the second (--launch-skip = launches per round, printed last)."""
import torch
import qengine  # noqa: F401
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

dev, bf = torch.device("cuda"), torch.bfloat16
q = torch.ops.qengine
shapes = [(4608, 3072, 12288), (4608, 3072, 3072)]
ops = []
for m, k, n in shapes:
    a = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
    wi = torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8)
    w4 = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)))
    xs = torch.rand(m, device=dev) * 1e-2
    ws = torch.rand(n, device=dev) * 1e-2
    b = torch.randn(n, device=dev).bfloat16()
    ops.append(lambda a=a, xs=xs, wi=wi, ws=ws, b=b: q.w8a8_int8_gemm(a, xs, wi, ws, b, None, None, bf))
    ops.append(lambda a=a, xs=xs, w4=w4, ws=ws, b=b: q.w4a8_gemm(a, xs, w4, ws[:, None].contiguous(), b, None, None, bf))
for _ in range(2):
    for op in ops:
        op()
torch.cuda.synchronize()
print("launches per round:", len(ops), "(int8, w4a8) x", shapes)
