import torch, qengine
from qengine import _extension
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack
ext = _extension.load_extension()
d = "cuda"
a = torch.randint(-127, 128, (64, 3072), device=d, dtype=torch.int8)
w = prepack(pack_int4(torch.randint(-8, 8, (3072, 3072), device=d, dtype=torch.int8)))
s_a = torch.rand(64, device=d); s_w = torch.rand(3072, 1, device=d)
for cfg in ("sm90_128x64x128_coop_streamk", "sm90_128x128x128_coop", "sm90_64x64x128_pingpong"):
    for _ in range(3):
        ext.w4a8_gemm_with_config(a, s_a, w, s_w, None, None, None, "bfloat16", cfg)
torch.cuda.synchronize()
