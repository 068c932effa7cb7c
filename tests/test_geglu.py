"""GEGLU activation quantization on the CPU: the ops' reference and fakes, QLinear.forward_geglu,
and the GEGLU feed-forward forward that uses it (qengine.nn.fused_mlp), run through the reference.

The CUDA kernel is compared with the reference in tests/gpu/test_gelu_cat_kernels.py.
"""
from __future__ import annotations

import unittest.mock as mock

import pytest
import torch
import torch.nn.functional as F

import qengine
from qengine import ops
from qengine.config import LayerQuantConfig
from qengine.formats import get_scheme
from qengine.nn import QLinear, fused
from qengine.ops import OpInputError
from unet_helpers import tiny_unet, tiny_unet_inputs

Q = torch.ops.qengine


def _proj(m, k, dtype=torch.bfloat16, seed=0):
    """[h | gate]: gate over both tails of the GELU."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(m, k, generator=g) * 2, torch.randn(m, k, generator=g) * 3], 1).to(dtype)


def _geglu(proj):
    h, gate = proj.chunk(2, -1)
    return h * F.gelu(gate)


@pytest.mark.parametrize("name,fmt", [("quantize_act_fp8_geglu", "quantize_act_fp8"),
                                      ("quantize_act_int8_geglu", "quantize_act_int8")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_op_quantizes_the_geglu_output(name, fmt, dtype):
    proj = _proj(9, 48, dtype)
    smooth = torch.rand(48, generator=torch.Generator().manual_seed(1)).to(dtype) + 0.5
    for sm in (None, smooth):
        q, s = getattr(Q, name)(proj, sm)
        eq, es, _ = getattr(Q, fmt)(_geglu(proj), sm, None)
        assert q.shape == (9, 48) and s.shape == (9,)
        assert torch.equal(s, es) and torch.equal(q.view(torch.uint8), eq.view(torch.uint8))


def test_op_errors_name_the_problem():
    proj = _proj(4, 48)
    op = Q.quantize_act_fp8_geglu
    with pytest.raises(OpInputError, match="positive multiple of 32"):
        op(proj[:, :80].contiguous(), None)
    with pytest.raises(OpInputError, match="proj must have dtype"):
        op(proj.float(), None)
    with pytest.raises(OpInputError, match=r"smooth must have shape \[48\]"):
        op(proj, torch.ones(96))
    with pytest.raises(OpInputError, match="no GEGLU quantization"):
        ops.quantize_act_geglu(proj, get_scheme("w4a4"))


def test_fake_gives_the_shapes():
    proj = _proj(6, 48)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        q, s = Q.quantize_act_fp8_geglu(mode.from_tensor(proj), None)
    assert q.shape == (6, 48) and q.dtype == torch.float8_e4m3fn and s.shape == (6,) and s.dtype == torch.float32


def _qlinear(scheme, k, n, *, smooth=False, rank=0, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n).bfloat16()
    s = torch.rand(k).bfloat16() + 0.5 if smooth else None
    group = 64 if scheme == "w4a4" else 0
    return QLinear.from_float(lin, LayerQuantConfig(scheme=scheme, rank=rank, group_size=group), smooth=s)


@pytest.mark.parametrize("scheme,smooth,rank", [("w8a8-fp8", False, 0), ("w8a8-int8", True, 0), ("w4a8", False, 0),
                                                ("w8a8-fp8", False, 16), ("w4a4", False, 0)])
def test_qlinear_forward_geglu_equals_the_unfused_call(scheme, smooth, rank):
    q = _qlinear(scheme, 128, 64, smooth=smooth, rank=rank)
    proj = _proj(10, 128, seed=2).reshape(2, 5, 256)
    expect = q(_geglu(proj))
    fused_path = q.supports_producer_quant()
    assert fused_path == (rank == 0 and scheme != "w4a4")
    with mock.patch.object(ops, "quantize_act_geglu", wraps=ops.quantize_act_geglu) as spy:
        out = q.forward_geglu(proj)
    assert spy.called == fused_path  # the other layers take the unfused call
    assert out.shape == (2, 5, 64)
    assert torch.equal(out, expect)


def test_qlinear_forward_geglu_checks_its_input():
    q = _qlinear("w8a8-fp8", 128, 32)
    proj = _proj(4, 128)
    with pytest.raises(ValueError, match="2 \\* in_features = 256"):
        q.forward_geglu(proj[:, :128])
    # fp32 input: the unfused call (the kernel reads 16-bit input only), same result
    pf = proj.float()
    assert torch.equal(q.forward_geglu(pf), q(_geglu(pf)))


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
def test_unet_geglu_forwards_give_the_stock_output(monkeypatch, scheme):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(fused, "_kernel_device", lambda t, built: True)  # the fused path on CPU (reference ops)
    model = tiny_unet()
    qengine.quantize(model, scheme)
    assert not any(hasattr(m, "_qengine_gelu_cat") for m in model.modules())  # opt-in
    qengine.enable_fused_kernels(model, producer_fusions=True)
    swapped = [m for m in model.modules() if hasattr(m, "_qengine_gelu_cat")]
    n_ff = sum(type(m).__name__ == "FeedForward" for m in model.modules())
    assert n_ff > 0 and len(swapped) == n_ff
    assert all(type(m.net[0]).__name__ == "GEGLU" for m in swapped)
    assert qengine.enable_fused_kernels(model, producer_fusions=True)["gelu_cat"] == 0  # idempotent
    sample, t, text = tiny_unet_inputs(model, 3)
    op = "quantize_act_fp8_geglu" if scheme == "w8a8-fp8" else "quantize_act_int8_geglu"
    calls = []
    real = getattr(Q, op)
    with torch.no_grad():
        with mock.patch.object(Q, op, lambda *a: calls.append(a[0].shape) or real(*a)):
            out = model(sample, t, text).sample
        for m in swapped:
            del m.forward  # the class's own forward again
        expect = model(sample, t, text).sample
    assert len(calls) == n_ff
    assert torch.equal(out, expect)


def test_unet_geglu_forwards_fall_back_off_the_kernel_device():
    """On CPU tensors with no compiled kernel the swapped modules run their class's forward."""
    pytest.importorskip("diffusers")
    model = tiny_unet()
    qengine.quantize(model, "w8a8-fp8")
    qengine.enable_fused_kernels(model, producer_fusions=True)
    assert any(hasattr(m, "_qengine_gelu_cat") for m in model.modules())
    sample, t, text = tiny_unet_inputs(model, 4)
    with torch.no_grad(), mock.patch.object(Q, "quantize_act_fp8_geglu", side_effect=AssertionError("fused op called")):
        model(sample, t, text)


def test_a_geglu_subclass_keeps_its_forward():
    """Only diffusers' own GEGLU is recognised: a subclass may change the GELU or the halves' order."""
    from diffusers.models import activations
    from diffusers.models.attention import FeedForward

    class GEGLU(activations.GEGLU):  # same class name, another module
        def forward(self, hidden_states, *args, **kwargs):
            gate, h = self.proj(hidden_states).chunk(2, dim=-1)
            return h * self.gelu(gate)

    torch.manual_seed(0)
    ff = FeedForward(32, dim_out=32, activation_fn="geglu").bfloat16()
    proj = ff.net[0].proj
    ff.net[0] = GEGLU(32, 128)
    ff.net[0].proj = proj
    qengine.quantize(ff, "w8a8-fp8")
    qengine.enable_fused_kernels(ff, producer_fusions=True)
    assert not hasattr(ff, "_qengine_gelu_cat")
