"""LayerNorm + quantization on the CPU: the ops' reference and fakes, and the LayerNorms folded
into the QLinears they feed (qengine.nn.fused_norm_quant), run through the reference.

The CUDA kernel is compared with the reference in tests/gpu/test_layer_norm_quant.py.
"""
from __future__ import annotations

import copy
import io
import unittest.mock as mock

import pytest
import torch
import torch.nn.functional as F

import qengine
from qengine import ops
from qengine.config import QuantConfig
from qengine.formats import get_scheme
from qengine.nn import fused
from qengine.nn.fused_norm_quant import foldable_pairs, unfold_layer_norms
from qengine.ops import OpInputError
from unet_helpers import tiny_unet, tiny_unet_inputs

Q = torch.ops.qengine


def _x(m, c, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, c, generator=g) * 3 + 1).to(dtype)


@pytest.mark.parametrize("name,fmt", [("layer_norm_quant_fp8", "quantize_act_fp8"),
                                      ("layer_norm_quant_int8", "quantize_act_int8")])
def test_op_quantizes_the_normalized_rows(name, fmt):
    x = _x(9, 64)
    w, b = _x(1, 64, seed=1)[0], _x(1, 64, seed=2)[0]
    smooth = torch.rand(64, generator=torch.Generator().manual_seed(3)).bfloat16() + 0.5
    for args in ((w, b, smooth), (None, None, None), (w, None, None)):
        q, s = getattr(Q, name)(x, args[0], args[1], 1e-5, args[2])
        eq, es, _ = getattr(Q, fmt)(F.layer_norm(x, (64,), args[0], args[1], 1e-5), args[2], None)
        assert q.shape == (9, 64) and s.shape == (9,)
        assert torch.equal(s, es) and torch.equal(q.view(torch.uint8), eq.view(torch.uint8))


def test_op_errors_name_the_problem():
    x = _x(4, 64)
    op = Q.layer_norm_quant_fp8
    with pytest.raises(OpInputError, match="C=40 is not supported"):
        op(x[:, :40].contiguous(), None, None, 1e-5, None)
    with pytest.raises(OpInputError, match="at most 4096"):
        op(_x(2, 4112), None, None, 1e-5, None)
    with pytest.raises(OpInputError, match="x must have dtype"):
        op(x.float(), None, None, 1e-5, None)
    with pytest.raises(OpInputError, match=r"weight must have shape \[64\]"):
        op(x, torch.ones(32).bfloat16(), None, 1e-5, None)
    with pytest.raises(OpInputError, match="bias must have dtype"):
        op(x, None, torch.ones(64), 1e-5, None)
    with pytest.raises(OpInputError, match="eps must be >= 0"):
        op(x, None, None, -1.0, None)
    with pytest.raises(OpInputError, match="no LayerNorm quantization"):
        ops.layer_norm_quant(x, get_scheme("w4a4"), None, None, 1e-5)


def test_fake_gives_the_shapes():
    x = _x(6, 64)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        q, s = Q.layer_norm_quant_int8(mode.from_tensor(x), None, None, 1e-6, None)
    assert q.shape == (6, 64) and q.dtype == torch.int8 and s.shape == (6,) and s.dtype == torch.float32


def _blocks(model):
    return [m for m in model.modules() if type(m).__name__ == "BasicTransformerBlock"]


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
@pytest.mark.parametrize("fuse_qkv", [True, False])
def test_unet_folded_norms_give_the_stock_output(monkeypatch, scheme, fuse_qkv):
    monkeypatch.setattr(fused, "_kernel_device", lambda t, built: True)  # the fused path on CPU (reference ops)
    model = tiny_unet()
    keys = list(qengine.quantize(copy.deepcopy(model), QuantConfig.preset(scheme, fuse_qkv=fuse_qkv),
                                 fused_kernels=False).state_dict())
    qengine.quantize(model, QuantConfig.preset(scheme, fuse_qkv=fuse_qkv))
    assert not any(getattr(m, "_pre_norm", None) is not None for m in model.modules())  # opt-in
    qengine.enable_fused_kernels(model, producer_fusions=True)
    blocks = _blocks(model)
    per_block = 3 if fuse_qkv else 2  # norm1 feeds to_q, to_k and to_v unless they are fused
    folded = [lin for lin in model.modules() if getattr(lin, "_pre_norm", None) is not None]
    assert len(blocks) > 0 and len(folded) == per_block * len(blocks)
    assert all(hasattr(b.norm2, "_qengine_norm_folded") and hasattr(b.norm3, "_qengine_norm_folded") for b in blocks)
    assert all(hasattr(b.norm1, "_qengine_norm_folded") == fuse_qkv for b in blocks)
    assert list(model.state_dict()) == keys  # the norms stay where they were, nothing is held twice
    assert qengine.enable_fused_kernels(model, producer_fusions=True)["layer_norm_quant"] == 0  # idempotent
    sample, t, text = tiny_unet_inputs(model, 3)
    op = f"layer_norm_quant_{'fp8' if scheme == 'w8a8-fp8' else 'int8'}"
    calls = []
    real = getattr(Q, op)
    with torch.no_grad():
        with mock.patch.object(Q, op, lambda *a: calls.append(a[0].shape) or real(*a)):
            out = model(sample, t, text).sample
        assert unfold_layer_norms(model) == len(folded)
        assert not any(hasattr(m, "_qengine_norm_folded") for m in model.modules())
        expect = model(sample, t, text).sample
    assert len(calls) == len(folded)
    assert torch.equal(out, expect)


def test_folded_norms_fall_back_off_the_kernel_device():
    """CPU tensors, no compiled kernel: each QLinear applies its norm's own forward first."""
    model = tiny_unet()
    qengine.quantize(model, QuantConfig.preset("w8a8-fp8", fuse_qkv=True))
    qengine.enable_fused_kernels(model, producer_fusions=True)
    sample, t, text = tiny_unet_inputs(model, 4)
    with torch.no_grad():
        with mock.patch.object(Q, "layer_norm_quant_fp8", side_effect=AssertionError("fused op called")):
            out = model(sample, t, text).sample
        assert unfold_layer_norms(model) > 0
        expect = model(sample, t, text).sample
    assert torch.equal(out, expect)


def test_what_is_not_folded():
    """Low-rank layers, non-layer_norm blocks, residual-connection attention: the norm keeps computing."""
    model = tiny_unet()
    qengine.quantize(model, QuantConfig.preset("w8a8-fp8", rank=16, fuse_qkv=True))
    qengine.enable_fused_kernels(model, producer_fusions=True)
    assert not any(getattr(m, "_pre_norm", None) is not None for m in model.modules())

    model = tiny_unet()
    qengine.quantize(model, QuantConfig.preset("w8a8-fp8", fuse_qkv=True), fused_kernels=False)
    block = _blocks(model)[0]
    assert len(foldable_pairs(block)) == 3
    block.attn2.residual_connection = True
    block.norm_type = "layer_norm"
    assert [lin for _, lin in foldable_pairs(block)] == [block.attn1.to_qkv, block.ff.net[0].proj]
    block.norm_type = "ada_norm"
    assert foldable_pairs(block) == []


def test_folded_model_deepcopies_and_saves_with_its_own_norms():
    model = tiny_unet()
    qengine.quantize(model, QuantConfig.preset("w8a8-fp8", fuse_qkv=True))
    qengine.enable_fused_kernels(model, producer_fusions=True)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buf, weights_only=False)):
        blocks = _blocks(clone)
        assert blocks[0].attn1.to_qkv._pre_norm is blocks[0].norm1
        assert blocks[0].ff.net[0].proj._pre_norm is blocks[0].norm3
        sample, t, text = tiny_unet_inputs(clone, 5)
        with torch.no_grad():
            assert torch.equal(clone(sample, t, text).sample, model(sample, t, text).sample)


def test_unfusing_qkv_unfolds_norm1():
    """A failed fused load undoes the q/k/v fusion; the norm folded into to_qkv computes again."""
    from qengine.integrations.fuse_projections import fuse_qkv_projections, unfuse_qkv_projections

    model = tiny_unet()
    records = fuse_qkv_projections(model)
    qengine.quantize(model, "w8a8-fp8")
    qengine.enable_fused_kernels(model, producer_fusions=True)
    block = _blocks(model)[0]
    to_qkv = block.attn1.to_qkv
    assert to_qkv._pre_norm is block.norm1
    unfuse_qkv_projections([r for r in records if r.module is block.attn1])
    assert to_qkv._pre_norm is None and not hasattr(block.norm1, "_qengine_norm_folded")
    x = _x(3, block.norm1.normalized_shape[0])[None]
    with torch.no_grad():
        assert torch.equal(block.norm1(x), F.layer_norm(x, block.norm1.normalized_shape, block.norm1.weight,
                                                        block.norm1.bias, block.norm1.eps))
