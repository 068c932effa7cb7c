"""On a GPU: the reference backend is an explicit choice, works in CUDA graphs and under
torch.compile, and an op with no compiled kernel fails loudly instead of falling back."""
import pytest
import torch
from torch import nn

import qengine
from qengine import LayerQuantConfig, QConv2d, QLinear
from qengine.ops import MISSING_CUDA_KERNELS

from gpu_helpers import capture_graph  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SCHEMES = [("w8a8-int8", 0), ("w8a8-fp8", 0), ("w4a8", 64), ("w4a4", 64)]


@pytest.mark.parametrize("scheme,group", SCHEMES)
def test_reference_backend_on_gpu_matches_cpu(scheme, group):
    lin = nn.Linear(256, 128)
    x = torch.randn(7, 256)
    cpu = QLinear.from_float(lin, LayerQuantConfig(scheme, group, 32))
    gpu = QLinear.from_float(lin.cuda(), LayerQuantConfig(scheme, group, 32), backend="reference")
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheme,group", SCHEMES)
def test_reference_backend_in_cuda_graph_and_compile(scheme, group):
    q = QLinear.from_float(nn.Linear(256, 128).cuda(), LayerQuantConfig(scheme, group), backend="reference")
    x = torch.randn(16, 256, device="cuda")
    eager = q(x)
    static_x = x.clone()
    graph, static_y = capture_graph(q, static_x, warmup=1)  # warmed up outside the capture
    static_x.copy_(x)
    graph.replay()
    assert torch.equal(static_y, eager)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(q, fullgraph=True)(x), eager, rtol=1e-5, atol=1e-5)


def test_conv_reference_backend_on_gpu():
    conv = nn.Conv2d(32, 64, 3, padding=1).cuda()
    q = QConv2d.from_float(conv, LayerQuantConfig("w8a8-int8"), backend="reference")
    x = torch.randn(2, 32, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    y = q(x)
    assert y.is_cuda and y.is_contiguous(memory_format=torch.channels_last)
    ref = conv(x)
    assert (10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum())).item() > 35


GEMM_SCHEME = {"w8a8_int8_gemm": ("w8a8-int8", 0), "w8a8_fp8_gemm": ("w8a8-fp8", 0), "w4a8_gemm": ("w4a8", 64),
               "w4a4_gemm": ("w4a4", 64)}
MISSING_GEMMS = [n for n in GEMM_SCHEME if n in MISSING_CUDA_KERNELS]


@pytest.mark.skipif(not MISSING_GEMMS, reason="every GEMM has a compiled CUDA kernel in this build")
@pytest.mark.parametrize("name", MISSING_GEMMS)
def test_missing_kernel_fails_loudly_on_gpu(name):
    major, minor = torch.cuda.get_device_capability()
    scheme, group = GEMM_SCHEME[name]
    q = QLinear.from_float(nn.Linear(128, 64).cuda(), LayerQuantConfig(scheme, group))
    with pytest.raises(NotImplementedError, match=rf"no CUDA kernel for sm_{major}{minor}.*backend='reference'"):
        q(torch.randn(4, 128, device="cuda"))


def test_info_names_the_gpu_backend():
    desc = qengine.backend_description()
    major, minor = torch.cuda.get_device_capability()
    assert f"sm_{major}{minor}" in desc
