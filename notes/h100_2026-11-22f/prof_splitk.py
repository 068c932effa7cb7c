# Runs the W4A8 split-K kernel at a few small-M shapes, for ncu (session 7 profiling aid).
import sys
import torch
import qengine  # noqa: F401
from qengine import _extension
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack
ext = _extension.load_extension()
dev = torch.device("cuda")
for m, k, n, cfg in [(64, 3072, 12288, "sm90_mma_128x64x256_splitk"), (64, 3072, 3072, "sm90_mma_128x64x128_splitk"),
                     (1, 3072, 3072, "sm90_mma_128x64x128_splitk")]:
    a = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
    w = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)))
    xs = torch.rand(m, device=dev); ws = torch.rand(n, 1, device=dev); b = torch.randn(n, device=dev).bfloat16()
    for _ in range(3):
        ext.w4a8_gemm_with_config(a, xs, w, ws, b, None, None, "bfloat16", cfg)
torch.cuda.synchronize()
