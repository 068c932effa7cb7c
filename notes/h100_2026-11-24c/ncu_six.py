"""The six FLUX.1-dev image-stream W4A8 shapes for ncu: per round and shape, the heuristic's
W4A8 GEMM plain, then with the rank-32 branch (lowrank_act already in bf16 is not accepted by
the op, so the binding's .to() runs too; ncu's --kernel-name regex:device_kernel skips it).
Three rounds; profile rounds 2 and 3 (--launch-skip 12 --launch-count 24)."""
import torch
import qengine  # noqa: F401
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

dev, r, bf = torch.device("cuda"), 32, torch.bfloat16
q = torch.ops.qengine
shapes = [(4608, 3072, 3072), (4608, 3072, 12288), (4608, 15360, 3072),
          (4096, 3072, 3072), (4096, 3072, 12288), (4096, 12288, 3072)]
ops = []
for m, k, n in shapes:
    ops.append((torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8), torch.rand(m, device=dev) * 1e-2,
                prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8))),
                torch.rand(n, 1, device=dev) * 1e-2, torch.randn(n, device=dev).bfloat16(),
                torch.randn(m, r, device=dev), torch.randn(n, r, device=dev).bfloat16()))
for _ in range(3):
    for a, xs, w, ws, b, la, up in ops:
        q.w4a8_gemm(a, xs, w, ws, b, None, None, bf)
        q.w4a8_gemm(a, xs, w, ws, b, la, up, bf)
torch.cuda.synchronize()
print("launches per round:", 2 * len(shapes))
