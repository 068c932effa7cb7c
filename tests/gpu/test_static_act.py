"""GPU tests of static (calibrated, per-tensor) activation scales on QLinear.

- The static quantization on CUDA (torch ops) is bit-exact with the CPU reference, for FP8 with
  power-of-two scales and INT8 with arbitrary ones, with and without smoothing.
- The layer on CUDA matches the reference backend (>= 40 dB on the same quantized operands).
- torch.compile(fullgraph=True) of a static QLinear gives the eager output bit for bit, and stays
  close to it behind a LayerNorm (which inductor fuses with the quantization, its output kept in
  fp32); CUDA-graph replay equals eager.
- calibrate_static_scales on an SDXL-style UNet (linears and convs): static layers everywhere they
  apply, and an output about as close to bf16 as the dynamic one.

Skipped, with the reason, where there is no CUDA GPU or qengine._C lacks the GEMM kernels.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.gpu

from gpu_helpers import assert_replays_equal_eager, outlier_activations, require_extension, sdxl_style_unet, sqnr_db  # noqa: E402,E501

EXT = require_extension()

import qengine  # noqa: E402
from qengine.calib import calibrate_static_scales, static_scale  # noqa: E402
from qengine.config import LayerQuantConfig, QuantConfig  # noqa: E402
from qengine.formats import Format, get_scheme  # noqa: E402
from qengine.nn import QConv2d, QLinear  # noqa: E402
from qengine import ops  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402

DEV = torch.device("cuda")
if any(op in MISSING_CUDA_KERNELS for op in ("w8a8_fp8_gemm", "w8a8_int8_gemm")):
    pytest.skip("qengine._C has no CUDA kernel for the 8-bit GEMMs", allow_module_level=True)

SCHEMES = {"w8a8-fp8": Format.FP8_E4M3, "w8a8-int8": Format.INT8}


def make_layer(scheme, k, n, smooth, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n).to(DEV, torch.bfloat16)
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16() if smooth else None
    q = QLinear.from_float(lin, LayerQuantConfig(scheme), smooth=s)
    x = outlier_activations(64, k, torch.bfloat16, seed, decades=1)
    xs = x.float() if s is None else x.float() / s.float()
    fmt = SCHEMES[scheme]
    q.set_input_scale(static_scale(float(xs.abs().amax()), fmt, power_of_two=fmt is Format.FP8_E4M3))
    return q, x


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("m,k", [(1, 16), (77, 640), (300, 1280), (4096, 320)])
def test_quantize_static_matches_cpu_reference(scheme, smooth, m, k):
    x = outlier_activations(m, k, torch.bfloat16, seed=m)
    s = (torch.rand(k, device=DEV) + 0.5).bfloat16() if smooth else None
    fmt = SCHEMES[scheme]
    scale = torch.tensor([static_scale(float(x.float().abs().amax()) / 3, fmt, fmt is Format.FP8_E4M3)],
                         device=DEV)  # a third of the range: the clamp is exercised too
    q = ops.quantize_act_static(x, get_scheme(scheme), s, scale)
    q_ref = ops.quantize_act_static(x.cpu(), get_scheme(scheme), None if s is None else s.cpu(), scale.cpu())
    assert q.dtype == q_ref.dtype and torch.equal(q.cpu().view(torch.int8), q_ref.view(torch.int8))


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("smooth", [False, True])
def test_layer_matches_reference_backend(scheme, smooth):
    q, x = make_layer(scheme, 640, 1280, smooth)
    y = q(x)
    q.backend = "reference"
    expect = q(x)
    assert torch.isfinite(y).all()
    assert sqnr_db(y.float(), expect.float()) >= 40


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("smooth", [False, True])
def test_compiled_equals_eager(scheme, smooth):
    q, x = make_layer(scheme, 640, 640, smooth)
    with torch.no_grad():
        eager = q(x)
        torch._dynamo.reset()
        compiled = torch.compile(q, fullgraph=True)(x)
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_compiled_behind_a_layer_norm_stays_close(scheme):
    """Inductor fuses the LayerNorm and the quantization and keeps the normalized rows in fp32
    (eager rounds them to bf16 first), so a few elements round to the neighbouring step."""
    q, x = make_layer(scheme, 640, 640, smooth=False)
    norm = nn.LayerNorm(640).to(DEV, torch.bfloat16)
    fmt = SCHEMES[scheme]
    with torch.no_grad():
        absmax = float(norm(x).float().abs().amax())
        q.set_input_scale(static_scale(absmax, fmt, power_of_two=fmt is Format.FP8_E4M3))
        net = nn.Sequential(norm, q)
        eager = net(x)
        torch._dynamo.reset()
        compiled = torch.compile(net, fullgraph=True)(x)
    assert sqnr_db(compiled.float(), eager.float()) >= 30


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_cuda_graph_replay_equals_eager(scheme):
    q, x = make_layer(scheme, 1280, 640, smooth=True)
    with torch.no_grad():
        assert_replays_equal_eager(q, x.clone(), lambda seed: outlier_activations(64, 1280, torch.bfloat16, seed,
                                                                                   decades=1))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_unet_calibration(scheme):
    pytest.importorskip("diffusers", reason="the SDXL-style UNet needs diffusers")
    model, (sample, t, text) = sdxl_style_unet()
    with torch.no_grad():
        expect = model(sample, t, text).sample
    qengine.quantize(model, QuantConfig.preset(scheme, conv_scheme=scheme, fuse_qkv=True))
    with torch.no_grad():
        dynamic = model(sample, t, text).sample
    gen = torch.Generator(device=DEV).manual_seed(5)
    calib = [torch.randn(sample.shape, device=DEV, generator=gen).bfloat16() for _ in range(2)]
    report = calibrate_static_scales(model, lambda: [model(c, t, text) for c in calib], int8_linears=True)
    layers = [m for m in model.modules() if isinstance(m, (QLinear, QConv2d))]
    assert len(report) == len(layers) and all("scale" in r for r in report.values())
    assert all(m.input_scale is not None for m in layers)
    with torch.no_grad():
        static = model(sample, t, text).sample
    assert torch.isfinite(static).all()
    dyn_db, static_db = sqnr_db(dynamic.float(), expect.float()), sqnr_db(static.float(), expect.float())
    # Calibrated on other noise: per-tensor scales cost some range, not the output.
    assert static_db >= dyn_db - 3, (dyn_db, static_db)
