"""Under torch.compile, QLinear's activation quantization is traced as torch ops (so inductor can
fuse it into the producer of x; qengine/ops/__init__.py, COMPILE_FUSED_QUANT). These tests check
that the traced quantization gives the CUDA kernel's bits, so compiled and eager models agree.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from qengine import ops  # noqa: E402
from qengine.formats import get_scheme  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402

DEV = torch.device("cuda")
KERNEL = {"w8a8-int8": "quantize_act_int8", "w8a8-fp8": "quantize_act_fp8"}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("mk", [(333, 3072), (4608, 3072), (77, 640)])
def test_traced_quantization_matches_the_kernel_bit_for_bit(scheme, smooth, mk):
    if KERNEL[scheme] in MISSING_CUDA_KERNELS:
        pytest.skip(f"{KERNEL[scheme]} has no CUDA kernel in this build")
    assert ops.COMPILE_FUSED_QUANT, "run without QENGINE_COMPILE_FUSED_QUANT=0"
    m, k = mk
    g = torch.Generator(device=DEV).manual_seed(m + k)
    # Heavy-tailed activations with outlier channels, as in diffusion transformers.
    x = (torch.randn(m, k, device=DEV, generator=g) * torch.rand(k, device=DEV, generator=g).pow(4) * 30).bfloat16()
    s = (torch.rand(k, device=DEV, generator=g) * 4 + 0.25).bfloat16() if smooth else None
    sch = get_scheme(scheme)
    torch._dynamo.reset()
    traced = torch.compile(lambda x, s: ops.quantize_act(x, sch, s), fullgraph=True)
    q_t, s_t, _ = traced(x, s)
    q_k, s_k, _ = getattr(torch.ops.qengine, KERNEL[scheme])(x, s, None)
    assert torch.equal(s_t, s_k)
    mismatch = (_bits(q_t) != _bits(q_k)).sum().item()
    assert mismatch == 0, f"{mismatch} of {q_t.numel()} quantized values differ from the kernel's"
