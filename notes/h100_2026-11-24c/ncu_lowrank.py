"""W4A8 GEMMs for ncu, config sm90_128x256x128_coop, per FLUX shape: plain, then low-rank r32
through the staged epilogue. Two rounds; profile the second (--launch-skip = launches per round,
printed last). Shapes: 4608x3072->12288 (13 tiles per CTA) and 4096x3072->3072 (~3)."""
import torch
import qengine  # noqa: F401
from qengine import _C as EXT
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

cfg, r, dev = "sm90_128x256x128_coop", 32, torch.device("cuda")
shapes = [(4608, 3072, 12288), (4096, 3072, 3072)]
ops = []
for m, k, n in shapes:
    a = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
    w = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)))
    xs = torch.rand(m, device=dev) * 1e-2
    ws = torch.rand(n, 1, device=dev) * 1e-2
    b = torch.randn(n, device=dev).bfloat16()
    la = torch.randn(m, r, device=dev)
    up = torch.randn(n, r, device=dev).bfloat16()
    ops.append((a, xs, w, ws, b, la, up))
for _ in range(2):
    for a, xs, w, ws, b, la, up in ops:
        EXT.w4a8_gemm_with_config(a, xs, w, ws, b, None, None, "bfloat16", cfg)
        EXT.w4a8_gemm_with_config(a, xs, w, ws, b, la, up, "bfloat16", cfg)
torch.cuda.synchronize()
print("launches per round:", 2 * len(shapes))
