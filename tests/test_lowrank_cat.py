"""The FP8 low-rank branch folded into the GEMM's K (qengine.formats.lowrank_cat), on the CPU:
the e4m3 hi/lo split, the weight columns, the reference op's math against float64, the scale
growth rule, and QLinear's enable / state_dict / checkpoint / .to() handling of the shared weight."""
from __future__ import annotations

import math

import pytest
import torch

import qengine
from qengine.config import LayerQuantConfig
from qengine.formats.lowrank_cat import lowrank_cat_columns, lowrank_cat_layout, lowrank_cat_weight, split_e4m3
from qengine.nn import QLinear
from qengine.ops import reference as ref

FP8 = torch.float8_e4m3fn


def sqnr_db(out, expect):
    err = (out.double() - expect.double()).pow(2).sum().item()
    return math.inf if err == 0 else 10 * math.log10(expect.double().pow(2).sum().item() / err)


def test_split_e4m3_carries_about_eight_bits():
    g = torch.Generator().manual_seed(0)
    # |v| in [2^-2, 2^8]: hi and lo (~2^-4 of v) both in e4m3's normal range
    v = torch.exp2(torch.rand(100_000, generator=g) * 10 - 2) * (torch.randint(0, 2, (100_000,), generator=g) * 2 - 1)
    hi, lo = split_e4m3(v)
    assert hi.dtype == FP8 and lo.dtype == FP8
    rel = ((hi.float() + lo.float()) - v).abs() / v.abs()
    assert rel.max() <= 2.0 ** -8 and rel.median() <= 2.0 ** -9
    # hi alone is plain e4m3 rounding (3 mantissa bits): an order of magnitude worse.
    assert ((hi.float() - v).abs() / v.abs()).median() > 8 * rel.median()


@pytest.mark.parametrize("rank,terms,width", [(16, 4, 128), (32, 4, 128), (48, 4, 256), (64, 4, 256),
                                              (80, 3, 256), (96, 4, 384), (128, 3, 384), (256, 3, 768)])
def test_layout_fills_whole_k_blocks(rank, terms, width):
    assert lowrank_cat_layout(rank) == (terms, width)


def test_weight_columns_fill_e4m3_range():
    torch.manual_seed(0)
    ws = torch.rand(96) + 0.1
    up = torch.randn(96, 32)
    up[:, 5] = 0  # an empty branch column
    extra, inv_c = lowrank_cat_columns(ws, up)
    assert extra.shape == (96, 128) and extra.dtype == FP8 and inv_c.shape == (32,)
    u8 = extra.view(torch.uint8)
    # [hi | hi | lo | lo] (4 terms fill the 128 columns at r = 32)
    assert torch.equal(u8[:, :32], u8[:, 32:64]) and torch.equal(u8[:, 64:96], u8[:, 96:])
    b = extra[:, :32].float() + extra[:, 64:96].float()  # hi + lo
    assert b.abs().amax(dim=0)[torch.arange(32) != 5].min() >= 440  # each column's max sits at ~448
    assert inv_c[5] == 0 and not extra[:, [5, 37, 69, 101]].float().any()
    # r = 128: three terms [hi | hi | lo] fill 384 columns exactly
    extra, _ = lowrank_cat_columns(ws, torch.randn(96, 128))
    assert extra.shape == (96, 384)
    # B = up / (w_s / c): up to the hi/lo rounding
    expect = up / (ws[:, None] * torch.where(inv_c > 0, inv_c, torch.ones_like(inv_c))[None, :])
    assert sqnr_db(b, expect) > 50


def test_weight_needs_fp8():
    with pytest.raises(ValueError, match="FP8 weight"):
        lowrank_cat_weight(torch.zeros(4, 16, dtype=torch.int8), torch.ones(4), torch.zeros(4, 16))
    with pytest.raises(ValueError, match="lora_up"):
        lowrank_cat_columns(torch.ones(4), torch.zeros(5, 16))


def layer(m=200, k=256, n=192, r=32, branch_gain=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).bfloat16()
    s = (torch.rand(k, generator=g) + 0.5).bfloat16()
    down = (torch.randn(r, k, generator=g) / math.sqrt(k)).bfloat16()
    up = (torch.randn(n, r, generator=g) * branch_gain / math.sqrt(r)).bfloat16()
    wq, ws, _ = ref.quantize_act_fp8(torch.randn(n, k, generator=g) / math.sqrt(k))
    return x, s, down, up, wq, ws


@pytest.mark.parametrize("gain", [1e-3, 1.0, 1e3])
def test_reference_layer_matches_float64(gain):
    """The cat path (quantize + FP8 GEMM with K + W) against the same layer in float64: the x
    part is FP8-quantized either way, so compare with the epilogue path's error, and the branch
    alone (residual weight zero) against its exact value."""
    x, s, down, up, wq, ws = layer(branch_gain=gain)
    w_cat, inv_c = lowrank_cat_weight(wq, ws, up)
    q, scale = ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    assert q.shape == (200, 256 + 128) and q.dtype == FP8
    y_cat = ref.w8a8_fp8_gemm(q, scale, w_cat, ws, None, None, None, torch.float32)
    xs = x.double() / s.double()
    exact = xs @ (wq.double() * ws.double()[:, None]).t() + xs @ down.double().t() @ up.double().t()
    qe, se, low = ref.quantize_act_fp8(x, s, down)
    y_epi = ref.w8a8_fp8_gemm(qe, se, wq, ws, None, low.bfloat16().float(), up, torch.float32)  # as the kernel rounds it
    assert sqnr_db(y_cat, exact) >= sqnr_db(y_epi, exact) - 1.0
    branch = ref.w8a8_fp8_gemm(q, scale, torch.cat([torch.zeros_like(wq), w_cat[:, 256:]], 1), ws, None, None, None,
                               torch.float32)
    assert sqnr_db(branch, xs @ down.double().t() @ up.double().t()) >= 45


def test_scale_grows_only_where_the_branch_needs_it():
    x, s, down, up, wq, ws = layer(branch_gain=1e-3)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    q, scale = ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    q0, scale0, _ = ref.quantize_act_fp8(x, s, None)
    assert torch.equal(scale, scale0) and torch.equal(q[:, :256].view(torch.uint8), q0.view(torch.uint8))
    x, s, down, up, wq, ws = layer(branch_gain=1e3)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    q, scale = ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    scale0 = ref.quantize_act_fp8(x, s, None)[1]
    assert (scale >= scale0).all() and (scale > scale0).float().mean() > 0.5
    assert q.float().abs().max() <= 448  # nothing saturates past e4m3: the scale made room


def test_reference_op_rejects_bad_ranks_and_inv_c():
    x, s, down, up, wq, ws = layer(r=32)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    with pytest.raises(ValueError, match="multiple of 16 in 16..256"):
        ref.quantize_act_fp8_lowrank_cat(x, s, down[:8], inv_c[:8])
    with pytest.raises(ValueError, match="inv_c must have shape"):
        ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c[:16])
    with pytest.raises(ValueError, match="inv_c must have dtype"):
        ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c.double())


# ---------------------------------------------------------------- QLinear


def qlinear(scheme="w8a8-fp8", rank=32, k=256, n=384):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n).bfloat16()
    return lin, QLinear.from_float(lin, LayerQuantConfig(scheme=scheme, rank=rank),
                                   smooth=(torch.rand(k) + 0.5).bfloat16())


def test_qlinear_enable_disable():
    lin, q = qlinear()
    x = torch.randn(2, 50, 256).bfloat16()
    exact = lin(x).float()
    y_epi = q(x).float()
    weight_before = q.weight.clone()
    assert q.enable_lowrank_cat() and q.lowrank_cat and "lowrank_cat=True" in repr(q)
    assert q.weight.data_ptr() == q._w_cat.data_ptr() and torch.equal(q.weight.view(torch.uint8),
                                                                      weight_before.view(torch.uint8))
    y_cat = q(x).float()
    assert y_cat.shape == exact.shape and sqnr_db(y_cat, exact) >= sqnr_db(y_epi, exact) - 1.0
    assert set(q.state_dict()) == {"weight", "weight_scale", "bias", "smooth", "lora_down", "lora_up"}
    q.disable_lowrank_cat()
    assert not q.lowrank_cat and q.weight.is_contiguous() and torch.equal(q(x), y_epi.bfloat16())


@pytest.mark.parametrize("scheme,rank", [("w8a8-int8", 32), ("w8a8-fp8", 0), ("w4a8", 32)])
def test_qlinear_cat_applies_to_fp8_lowrank_only(scheme, rank):
    _, q = qlinear(scheme, rank)
    assert not q.supports_lowrank_cat() and not q.enable_lowrank_cat() and not q.lowrank_cat


def test_qlinear_cat_state_dict_round_trip_and_to():
    _, q = qlinear()
    q.enable_lowrank_cat()
    x = torch.randn(30, 256).bfloat16()
    y = q(x)
    sd = {k: v.clone() for k, v in q.state_dict().items()}
    assert sd["weight"].shape == (384, 256)
    # Loading into another cat-enabled layer (copy, and assign=True) rebuilds its extra columns.
    for assign in (False, True):
        _, q2 = qlinear()
        with torch.no_grad():
            q2.lora_up.mul_(3)
        q2.enable_lowrank_cat()
        q2.load_state_dict(sd, assign=assign)
        assert q2.weight.data_ptr() == q2._w_cat.data_ptr() and torch.equal(q2(x), y)
    q.to("meta")
    assert q.weight.device.type == "meta" and q.weight.data_ptr() == q._w_cat.data_ptr()


def test_checkpoint_of_a_cat_model_is_the_plain_one(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 128)).bfloat16()
    qengine.quantize(model, qengine.QuantConfig.preset("w8a8-fp8", rank=32))
    x = torch.randn(40, 256).bfloat16()
    plain = model(x)
    n = sum(m.enable_lowrank_cat() for m in model.modules() if isinstance(m, QLinear))
    assert n == 2
    qengine.save(model, tmp_path / "ckpt")
    fresh = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 128)).bfloat16()
    loaded = qengine.load(fresh, tmp_path / "ckpt")
    assert not any(m.lowrank_cat for m in loaded.modules() if isinstance(m, QLinear))  # CPU: epilogue path
    assert torch.equal(loaded(x), plain)


def test_model_bytes_counts_shared_storage_once():
    _, q = qlinear()
    before = qengine.model_bytes(q)
    q.enable_lowrank_cat()
    # + 128 fp8 bytes per output row (3r = 96, rounded up), r fp32 inv_c values and lora_down / smooth
    # (bf16 [r, K]), not a second weight
    assert qengine.model_bytes(q) == before + 384 * 128 + 32 * 4 + 32 * 256 * 2


def test_given_product_variant_matches_the_fused_one():
    x, s, down, up, wq, ws = layer(branch_gain=30.0)
    _, inv_c = lowrank_cat_weight(wq, ws, up)
    lr = (x.float() / s.float()) @ down.float().t()
    q1, s1 = ref.quantize_act_fp8_lowrank_cat(x, s, down, inv_c)
    q2, s2 = ref.quantize_act_fp8_lowrank_cat_from(x, s, lr, inv_c)
    assert torch.equal(s1, s2) and torch.equal(q1.view(torch.uint8), q2.view(torch.uint8))
    with pytest.raises(ValueError, match="lowrank must have dtype"):
        ref.quantize_act_fp8_lowrank_cat_from(x, s, lr.bfloat16(), inv_c)
    with pytest.raises(ValueError, match="multiple of 16"):
        ref.quantize_act_fp8_lowrank_cat_from(x, s, lr[:, :8].contiguous(), inv_c[:8].contiguous())


def test_qlinear_matmul_down_projection(monkeypatch):
    lin, q = qlinear()
    x = torch.randn(60, 256).bfloat16()
    q.enable_lowrank_cat()
    fused = q(x).float()
    monkeypatch.setattr(QLinear, "lowrank_cat_down", "matmul")
    via_matmul = q(x).float()
    # x @ (L_down / s)^T: lora_down / smooth rounded to bf16, so not bit-identical; as close as FP8 allows
    assert sqnr_db(via_matmul, fused) >= 30 and sqnr_db(via_matmul, lin(x).float()) >= sqnr_db(fused, lin(x).float()) - 1


@pytest.mark.parametrize("cat", [False, True])
def test_compiled_quantize_inductor_traces_the_reference(monkeypatch, cat):
    """QLinear.compiled_quantize = "inductor": under torch.compile the quantization is the
    reference's torch ops (which inductor can fuse with the producer), the GEMM stays the op."""
    from qengine import ops

    lin, q = qlinear()
    if cat:
        q.enable_lowrank_cat()
    x = torch.randn(40, 256).bfloat16()
    eager = q(x).float()
    seen = []
    real_resolve = ops._resolve

    def spy(name, backend):
        seen.append((name, backend))
        return real_resolve(name, backend)
    monkeypatch.setattr(ops, "_resolve", spy)
    monkeypatch.setattr(QLinear, "compiled_quantize", "inductor")
    torch._dynamo.reset()
    compiled = torch.compile(q, fullgraph=True)(x).float()
    quant = "quantize_act_fp8_lowrank_cat" if cat else "quantize_act_fp8"
    assert (quant, "reference") in seen and ("w8a8_fp8_gemm", "auto") in seen
    assert sqnr_db(compiled, eager) >= 30  # the same math, compiled (inductor may round a quotient differently)
