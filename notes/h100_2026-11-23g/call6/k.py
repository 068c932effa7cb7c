import torch, qengine
from qengine import _extension
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack
ext = _extension.load_extension()
q = torch.ops.qengine
d = "cuda"
w4 = prepack(pack_int4(torch.randint(-8, 8, (3072, 3072), device=d, dtype=torch.int8)))
w8 = torch.randint(-127, 128, (3072, 3072), device=d, dtype=torch.int8)
s_w = torch.rand(3072, 1, device=d)  # W4A8 takes [N, 1], W8A8 [N]
for m, cfg in ((64, "sm90_64x64x128_pingpong"), (64, None), (1, "sm90_mma_128x64x128_splitk"), (32, "sm90_mma_128x64x128_splitk")):
    a = torch.randint(-127, 128, (m, 3072), device=d, dtype=torch.int8)
    s_a = torch.rand(m, device=d)
    for _ in range(2):
        if cfg is None:
            q.w8a8_int8_gemm(a, s_a, w8, s_w.view(-1), None, None, None, torch.bfloat16)
        else:
            ext.w4a8_gemm_with_config(a, s_a, w4, s_w, None, None, None, "bfloat16", cfg)
torch.cuda.synchronize()
