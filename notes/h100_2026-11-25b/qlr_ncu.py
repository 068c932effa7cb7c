"""Session 27: one launch each of the plain row quantize kernel and the tile kernel (variants 0 and 1)
at FLUX shapes, for ncu (each config runs twice; the second launch is the one to read).
Order per shape: plain, plain, tile v0, tile v0, tile v1, tile v1."""
import os

import torch

import qengine  # noqa: F401

Q = torch.ops.qengine
dev = torch.device("cuda")
for m, k in [(4608, 3072), (4608, 15360)]:
    x = torch.randn(m, k, device=dev).bfloat16()
    down = (torch.randn(32, k, device=dev) / k**0.5).bfloat16()
    for v in ("plain", 0, 1):
        os.environ["QENGINE_QLR_HINT"] = "0" if v == "plain" else str(v)
        for _ in range(2):
            Q.quantize_act_int8(x, None, None if v == "plain" else down, None)
    torch.cuda.synchronize()
