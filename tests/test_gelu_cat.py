"""Gelu-cat activation quantization on the CPU: the ops' reference and fakes, QLinear.forward_gelu_cat,
and the FLUX / feed-forward forwards that use it (qengine.nn.fused_mlp), run through the reference.

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

Q = torch.ops.qengine


def _inputs(m, kx, kg, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, kx, generator=g) * 2).to(dtype) if kx else None
    return x, (torch.randn(m, kg, generator=g) * 3).to(dtype)


@pytest.mark.parametrize("name,fmt", [("quantize_act_fp8_gelu_cat", "quantize_act_fp8"),
                                      ("quantize_act_int8_gelu_cat", "quantize_act_int8")])
def test_op_quantizes_the_gelu_concatenation(name, fmt):
    x, g = _inputs(9, 32, 48)
    smooth = torch.rand(80, generator=torch.Generator().manual_seed(1)).bfloat16() + 0.5
    q, s = getattr(Q, name)(x, g, smooth)
    eq, es, _ = getattr(Q, fmt)(torch.cat([x, F.gelu(g, approximate="tanh")], 1), smooth, None)
    assert torch.equal(s, es) and torch.equal(q.view(torch.uint8), eq.view(torch.uint8))
    assert q.shape == (9, 80)
    # no x: the whole row is the GELU part
    q0, s0 = getattr(Q, name)(None, g, None)
    eq0, es0, _ = getattr(Q, fmt)(F.gelu(g, approximate="tanh"), None, None)
    assert torch.equal(s0, es0) and torch.equal(q0.view(torch.uint8), eq0.view(torch.uint8))


@pytest.mark.parametrize("name,fmt", [("quantize_act_fp8_gelu_cat_lowrank", "quantize_act_fp8"),
                                      ("quantize_act_int8_gelu_cat_lowrank", "quantize_act_int8")])
def test_lowrank_op_quantizes_and_projects_the_gelu_concatenation(name, fmt):
    x, g = _inputs(9, 32, 48)
    gen = torch.Generator().manual_seed(1)
    smooth = torch.rand(80, generator=gen).bfloat16() + 0.5
    down = torch.randn(16, 80, generator=gen).bfloat16()
    q, s, lr = getattr(Q, name)(x, g, smooth, down)
    eq, es, elr = getattr(Q, fmt)(torch.cat([x, F.gelu(g, approximate="tanh")], 1), smooth, down)
    assert torch.equal(s, es) and torch.equal(q.view(torch.uint8), eq.view(torch.uint8)) and torch.equal(lr, elr)
    assert q.shape == (9, 80) and lr.shape == (9, 16) and lr.dtype == torch.float32
    q0, s0, lr0 = getattr(Q, name)(None, g, None, down[:, :48].contiguous())
    eq0, es0, elr0 = getattr(Q, fmt)(F.gelu(g, approximate="tanh"), None, down[:, :48].contiguous())
    assert torch.equal(s0, es0) and torch.equal(q0.view(torch.uint8), eq0.view(torch.uint8)) and torch.equal(lr0, elr0)


def test_lowrank_cat_op_equals_the_lowrank_cat_quantization_of_the_concatenation():
    x, g = _inputs(7, 16, 64)
    gen = torch.Generator().manual_seed(2)
    down = torch.randn(32, 80, generator=gen).bfloat16()
    inv_c = torch.rand(32, generator=gen) + 0.5
    q, s = Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down, inv_c)
    eq, es = Q.quantize_act_fp8_lowrank_cat(torch.cat([x, F.gelu(g, approximate="tanh")], 1), None, down, inv_c)
    assert q.shape == eq.shape == (7, 80 + 128)
    assert torch.equal(s, es) and torch.equal(q.view(torch.uint8), eq.view(torch.uint8))


def test_lowrank_ops_errors_name_the_problem():
    x, g = _inputs(4, 32, 48)
    down = torch.randn(16, 80).bfloat16()
    with pytest.raises(OpInputError, match=r"lora_down must have shape \[\*, 80\]"):
        Q.quantize_act_int8_gelu_cat_lowrank(x, g, None, down[:, :48].contiguous())
    with pytest.raises(OpInputError, match="multiples of 16"):
        Q.quantize_act_int8_gelu_cat_lowrank(x, g[:, :40].contiguous(), None, down)
    with pytest.raises(OpInputError, match="multiple of 16 in 16..256"):
        Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down[:8].contiguous(), torch.ones(8))
    with pytest.raises(OpInputError, match=r"inv_c must have shape \[16\]"):
        Q.quantize_act_fp8_gelu_cat_lowrank_cat(x, g, None, down, torch.ones(8))
    with pytest.raises(OpInputError, match="no gelu-cat quantization"):
        ops.quantize_act_gelu_cat_lowrank(x, g, get_scheme("w4a4"), None, down)


def test_op_errors_name_the_problem():
    x, g = _inputs(4, 32, 48)
    op = Q.quantize_act_fp8_gelu_cat
    with pytest.raises(OpInputError, match="multiples of 16"):
        op(x, g[:, :40].contiguous(), None)
    with pytest.raises(OpInputError, match="multiples of 16"):
        op(x[:, :8].contiguous(), g, None)
    with pytest.raises(OpInputError, match="gelu_x must have dtype"):
        op(None, g.float(), None)
    with pytest.raises(OpInputError, match="x must have dtype"):
        op(x.half(), g, None)
    with pytest.raises(OpInputError, match=r"x must have shape \[4, \*\]"):
        op(x[:2].contiguous(), g, None)
    with pytest.raises(OpInputError, match=r"smooth must have shape \[80\]"):
        op(x, g, torch.ones(48))
    with pytest.raises(OpInputError, match="no gelu-cat quantization"):
        ops.quantize_act_gelu_cat(x, g, get_scheme("w4a4"))


def test_fake_gives_the_shapes():
    x, g = _inputs(6, 32, 48)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fx, fg = mode.from_tensor(x), mode.from_tensor(g)
        q, s = Q.quantize_act_int8_gelu_cat(fx, fg, None)
    assert q.shape == (6, 80) and q.dtype == torch.int8 and s.shape == (6,) and s.dtype == torch.float32
    down, down_g, inv_c = torch.randn(32, 80).bfloat16(), torch.randn(32, 48).bfloat16(), torch.ones(32)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fx, fg, fd, fc = mode.from_tensor(x), mode.from_tensor(g), mode.from_tensor(down), mode.from_tensor(inv_c)
        q, s, lr = Q.quantize_act_fp8_gelu_cat_lowrank(fx, fg, None, fd)
        qc, sc = Q.quantize_act_fp8_gelu_cat_lowrank_cat(None, fg, None, mode.from_tensor(down_g), fc)
    assert q.shape == (6, 80) and q.dtype == torch.float8_e4m3fn and lr.shape == (6, 32) and lr.dtype == torch.float32
    assert qc.shape == (6, 48 + 128) and sc.shape == (6,)


def _qlinear(scheme, k, n, *, smooth=False, rank=0, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n).bfloat16()
    s = torch.rand(k).bfloat16() + 0.5 if smooth else None
    group = 64 if scheme == "w4a4" else 0
    return QLinear.from_float(lin, LayerQuantConfig(scheme=scheme, rank=rank, group_size=group), smooth=s)


@pytest.mark.parametrize("scheme,smooth,rank,cat", [
    ("w8a8-fp8", False, 0, False), ("w8a8-int8", True, 0, False), ("w4a8", False, 0, False),
    ("w8a8-fp8", False, 16, False), ("w8a8-fp8", True, 16, True), ("w8a8-int8", True, 16, False),
    ("w4a8", True, 16, False), ("w4a4", False, 0, False)])
def test_qlinear_forward_gelu_cat_equals_the_unfused_call(scheme, smooth, rank, cat):
    q = _qlinear(scheme, 64 + 128, 64, smooth=smooth, rank=rank)
    if cat:
        assert q.enable_lowrank_cat()
    x, g = _inputs(10, 64, 128, seed=2)
    x3, g3 = x.reshape(2, 5, 64), g.reshape(2, 5, 128)
    expect = q(torch.cat([x3, F.gelu(g3, approximate="tanh")], -1))
    fused_path = q.supports_gelu_cat()
    assert fused_path == (scheme != "w4a4")
    assert q.supports_producer_quant() == (fused_path and rank == 0)
    # the op the layer's kind takes: plain, with the down-projection, or the FP8 cat variant
    op = "quantize_act_gelu_cat_lowrank_cat" if cat else "quantize_act_gelu_cat_lowrank" if rank else "quantize_act_gelu_cat"
    with mock.patch.object(ops, op, wraps=getattr(ops, op)) as spy:
        out = q.forward_gelu_cat(x3, g3)
    assert spy.called == fused_path  # the other layers take the unfused call
    assert out.shape == (2, 5, 64)
    assert torch.equal(out, expect)


def test_qlinear_forward_gelu_cat_checks_its_inputs():
    q = _qlinear("w8a8-fp8", 192, 32)
    x, g = _inputs(4, 64, 128)
    with pytest.raises(ValueError, match="in_features=192"):
        q.forward_gelu_cat(x, g[:, :64])
    with pytest.raises(ValueError, match="leading dims and dtype"):
        q.forward_gelu_cat(x.half(), g)
    # fp32 input: the unfused call (the kernel reads 16-bit input only), same result
    xf, gf = x.float(), g.float()
    assert torch.equal(q.forward_gelu_cat(xf, gf), q(torch.cat([xf, F.gelu(gf, approximate="tanh")], -1)))


def _flux(num_layers=1, num_single_layers=1):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=num_layers,
                                  num_single_layers=num_single_layers, attention_head_dim=64, num_attention_heads=2,
                                  joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
                                  axes_dims_rope=(16, 24, 24)).to(torch.bfloat16).eval()


def _flux_inputs(gen, n_img=16, n_txt=8):
    return dict(hidden_states=torch.randn(1, n_img, 16, generator=gen).bfloat16(),
                encoder_hidden_states=torch.randn(1, n_txt, 32, generator=gen).bfloat16(),
                pooled_projections=torch.randn(1, 16, generator=gen).bfloat16(),
                timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]),
                img_ids=torch.zeros(n_img, 3), txt_ids=torch.zeros(n_txt, 3))


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
def test_flux_gelu_cat_forwards_give_the_stock_output(monkeypatch, scheme):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(fused, "_kernel_device", lambda t, built: True)  # the fused path on CPU (reference ops)
    model = _flux()
    qengine.quantize(model, scheme)
    swapped = [m for m in model.modules() if hasattr(m, "_qengine_gelu_cat")]
    assert sorted(type(m).__name__ for m in swapped) == ["FeedForward", "FeedForward", "FluxSingleTransformerBlock"]
    assert qengine.enable_fused_kernels(model)["gelu_cat"] == 0  # idempotent
    assert list(model.state_dict()) == list(_state_keys_after_plain_quantize(scheme))
    op = "quantize_act_fp8_gelu_cat" if scheme == "w8a8-fp8" else "quantize_act_int8_gelu_cat"
    _assert_swapped_forwards_call_and_match_stock(model, swapped, op, seed=3)


def _assert_swapped_forwards_call_and_match_stock(model, swapped, op, seed):
    """The model's forward calls `op` once per swapped module and equals the stock forward."""
    inputs = _flux_inputs(torch.Generator().manual_seed(seed))
    calls = []
    real = getattr(Q, op)
    with torch.no_grad():
        with mock.patch.object(Q, op, lambda *a: calls.append(a[1].shape) or real(*a)):
            out = model(**inputs)[0]
        for m in swapped:
            del m.forward  # the class's own forward again
        expect = model(**inputs)[0]
    assert len(calls) == len(swapped)
    assert torch.equal(out, expect)


def _state_keys_after_plain_quantize(scheme):
    model = _flux()
    qengine.quantize(model, scheme, fused_kernels=False)
    return model.state_dict().keys()


def test_gelu_cat_forwards_fall_back_off_the_kernel_device():
    """On CPU tensors with no compiled kernel the swapped modules run their class's forward."""
    pytest.importorskip("diffusers")
    model = _flux()
    qengine.quantize(model, "w8a8-fp8")
    assert sum(hasattr(m, "_qengine_gelu_cat") for m in model.modules()) == 3
    inputs = _flux_inputs(torch.Generator().manual_seed(4))
    with torch.no_grad(), mock.patch.object(Q, "quantize_act_fp8_gelu_cat",
                                            side_effect=AssertionError("fused op called")):
        model(**inputs)


@pytest.mark.parametrize("scheme,op", [("w4a8", "quantize_act_int8_gelu_cat_lowrank"),
                                       ("w8a8-fp8", "quantize_act_fp8_gelu_cat_lowrank"),
                                       ("w8a8-fp8", "quantize_act_fp8_gelu_cat_lowrank_cat")])
def test_low_rank_layers_take_the_gelu_cat_forward_with_the_down_projection(monkeypatch, scheme, op):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(fused, "_kernel_device", lambda t, built: True)  # the fused path on CPU (reference ops)
    model = _flux()
    qengine.quantize(model, qengine.QuantConfig.preset(scheme, rank=16))
    if op.endswith("_cat"):  # what enable_fused_kernels does on CUDA
        assert all(m.enable_lowrank_cat() for m in model.modules() if isinstance(m, QLinear) and m.lora_up is not None)
    swapped = [m for m in model.modules() if hasattr(m, "_qengine_gelu_cat")]
    assert len(swapped) == 3
    _assert_swapped_forwards_call_and_match_stock(model, swapped, op, seed=5)


def test_gelu_cat_forward_in_training_mode_with_dropout_uses_the_stock_path(monkeypatch):
    from diffusers.models.attention import FeedForward

    monkeypatch.setattr(fused, "_kernel_device", lambda t, built: True)
    torch.manual_seed(0)
    ff = FeedForward(32, dim_out=32, activation_fn="gelu-approximate", dropout=0.5).bfloat16()
    qengine.quantize(ff, "w8a8-fp8")
    assert hasattr(ff, "_qengine_gelu_cat")
    x = torch.randn(4, 32).bfloat16()
    ff.train()
    with mock.patch.object(Q, "quantize_act_fp8_gelu_cat", side_effect=AssertionError("fused op called")):
        ff(x)
    ff.eval()
    with mock.patch.object(Q, "quantize_act_fp8_gelu_cat", wraps=Q.quantize_act_fp8_gelu_cat) as spy:
        ff(x)
    assert spy.called


def test_swapped_modules_pickle_and_deepcopy():
    import copy
    import io

    from diffusers.models.attention import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(32, dim_out=32, activation_fn="gelu-approximate").bfloat16()
    qengine.quantize(ff, "w8a8-fp8")
    assert hasattr(ff, "_qengine_gelu_cat")
    x = torch.randn(4, 32).bfloat16()
    buf = io.BytesIO()
    torch.save(ff, buf)
    buf.seek(0)
    for other in (torch.load(buf, weights_only=False), copy.deepcopy(ff)):
        assert other.forward.args[0] is other  # the forward serves the copy, not the original
        assert torch.equal(other(x), ff(x))
