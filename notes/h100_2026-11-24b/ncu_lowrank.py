"""One W4A8 GEMM at FLUX 4608x3072->12288 per variant, for ncu: plain, low-rank r32 through the
staged epilogue, and low-rank r32 through the [M, N] product (lora_up 2-byte aligned only)."""
import torch
import qengine  # noqa: F401
from qengine import _C as EXT
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack

m, k, n, r = 4608, 3072, 12288, 32
cfg = "sm90_128x256x128_coop"
dev = torch.device("cuda")
a = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
w = prepack(pack_int4(torch.randint(-8, 8, (n, k), device=dev, dtype=torch.int8)))
xs = torch.rand(m, device=dev) * 1e-2
ws = torch.rand(n, 1, device=dev) * 1e-2
b = torch.randn(n, device=dev).bfloat16()
la = torch.randn(m, r, device=dev)
up = torch.randn(n, r, device=dev).bfloat16()
buf = torch.randn(n * r + 1, device=dev).bfloat16()
up_mis = buf[1:].view(n, r)
for _ in range(2):
    EXT.w4a8_gemm_with_config(a, xs, w, ws, b, None, None, "bfloat16", cfg)
    EXT.w4a8_gemm_with_config(a, xs, w, ws, b, la, up, "bfloat16", cfg)
    EXT.w4a8_gemm_with_config(a, xs, w, ws, b, la, up_mis, "bfloat16", cfg)
torch.cuda.synchronize()
