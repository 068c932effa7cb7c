"""GPTQ (qengine.calib.gptq) and its use in the calibration search: CPU, small, fast."""
import pytest
import torch
from torch import nn

import qengine
from qengine.calib import CalibrationResult, SearchOptions
import qengine.calib.gptq as gptq_mod
from qengine.calib.gptq import gptq_quantize, gptq_quantize_clips
from qengine.calib.observers import HessianAccumulator
from qengine.calib.search import search_conv, search_linear
from qengine.config import LayerQuantConfig
from qengine.formats import dequantize_groups, dequantize_rows, get_scheme, unpack_int4
from qengine.formats.w4a8_layout import unprepack
from qengine.nn.quantize_weight import quantize_weight

CASES = [("w4a8", 64), ("w4a8", 0), ("w8a8-int8", 0), ("w8a8-fp8", 0)]


def _deq(scheme, weight, scale):
    if scheme.weight_grouped:
        if scheme.name == "w4a8":  # stored in the kernel's prepacked layout
            weight = unprepack(weight)
        return dequantize_groups(unpack_int4(weight), scale)
    return dequantize_rows(weight, scale)


def _bits(t):
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _correlated(n_rows, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(k) + 2 * torch.randn(k, k, generator=g) / k ** 0.5
    x = torch.randn(n_rows, k, generator=g) @ mix
    x[:, :4] *= 8  # a few outlier channels, as in diffusion activations
    return x


@pytest.mark.parametrize("name,group", CASES)
@pytest.mark.parametrize("clip", [1.0, 0.85])
def test_identity_hessian_is_round_to_nearest(name, group, clip):
    # H = c*I: every error update is zero, so GPTQ must reproduce the module's RTN bit for bit.
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(1))
    scheme = get_scheme(name)
    r = gptq_quantize(w, torch.eye(128) * 5.0, scheme, group, clip=clip, block=32)
    qw, qs = quantize_weight(scheme, w, group, clip)
    assert torch.equal(_bits(r.weight), _bits(qw))
    assert torch.equal(r.weight_scale, qs)


@pytest.mark.parametrize("name,group", CASES)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_lowers_output_error_on_correlated_inputs(name, group, act_order):
    k = 128
    x = _correlated(2048, k)
    w = torch.randn(64, k, generator=torch.Generator().manual_seed(3))
    scheme = get_scheme(name)
    ref = x @ w.t()
    rtn = _deq(scheme, *quantize_weight(scheme, w, group))
    r = gptq_quantize(w, x.t() @ x / len(x), scheme, group, block=32, act_order=act_order)
    # the stored layout decodes to exactly the weight GPTQ optimised
    torch.testing.assert_close(_deq(scheme, r.weight, r.weight_scale), r.dequant, rtol=0, atol=0)
    e_rtn = float((x @ rtn.t() - ref).pow(2).sum() / ref.pow(2).sum())
    e_gptq = float((x @ r.dequant.t() - ref).pow(2).sum() / ref.pow(2).sum())
    assert e_gptq < 0.6 * e_rtn, (e_gptq, e_rtn)
    if scheme.weight_grouped:  # the scale rule's range: INT4 codes stay in [-7, 7] like RTN's
        assert int(unpack_int4(r.weight).abs().max()) <= 7


@pytest.mark.parametrize("name,group", CASES)
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("sweep_elements", [1 << 26, 48 * 128 * 2])  # all clips in one sweep / two per sweep
def test_stacked_clip_sweep_equals_one_run_per_clip(name, group, act_order, sweep_elements, monkeypatch):
    # The search runs GPTQ for every clip candidate in one stacked sweep: it must give exactly
    # what separate runs give (rows are independent in GPTQ), also when split into several sweeps.
    monkeypatch.setattr(gptq_mod, "_SWEEP_ELEMENTS", sweep_elements)
    x = _correlated(512, 128, seed=5)
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(6))
    h = x.t() @ x / len(x)
    scheme = get_scheme(name)
    clips = (1.0, 0.95, 0.9, 0.8, 0.85)
    stacked = gptq_quantize_clips(w, h, scheme, group, clips=clips, block=32, act_order=act_order)
    assert len(stacked) == len(clips)
    for clip, r in zip(clips, stacked):
        one = gptq_quantize(w, h, scheme, group, clip=clip, block=32, act_order=act_order)
        assert torch.equal(_bits(r.weight), _bits(one.weight)), clip
        assert torch.equal(r.weight_scale, one.weight_scale), clip
        assert torch.equal(r.dequant, one.dequant), clip
    assert not torch.equal(stacked[0].weight_scale, stacked[-1].weight_scale)  # the clips did differ


def test_gptq_rejects_mismatched_hessian():
    with pytest.raises(ValueError, match="Hessian shape"):
        gptq_quantize(torch.randn(8, 64), torch.eye(32), get_scheme("w8a8-int8"))


def test_conv_hessian_matches_the_stored_column_order():
    # For any weight perturbation D in the quantized conv's [O, (kh, kw, C)] layout, the output
    # energy sum ||conv(x, D)||^2 must equal rows * trace(D H D^T): checks unfold's order and padding.
    torch.manual_seed(4)
    conv = nn.Conv2d(16, 8, 3, padding=1, stride=2)
    x = torch.randn(3, 16, 9, 9)
    acc = HessianAccumulator(conv)
    acc.add(x[:2])
    acc.add(x[2:])
    d = torch.randn(8, 3, 3, 16)  # [O, kh, kw, C]
    y = torch.nn.functional.conv2d(x, d.permute(0, 3, 1, 2), None, 2, 1)
    d2 = d.reshape(8, -1).double()
    torch.testing.assert_close(float(y.double().pow(2).sum()), float(torch.trace(d2 @ acc.get() @ d2.t()) * acc.rows),
                               rtol=1e-4, atol=0)


def _linear_case(seed=5):
    torch.manual_seed(seed)
    lin = nn.Linear(128, 64)
    x = _correlated(1024, 128, seed)
    return lin, x


def test_search_linear_with_gptq_beats_rtn_search_and_round_trips(tmp_path):
    lin, x = _linear_case()
    cfg = LayerQuantConfig("w4a8", 64, 16)
    h = x.t().double() @ x.double() / len(x)
    absmax = x.abs().amax(dim=0)
    plain = search_linear(lin, cfg, x, absmax, SearchOptions(gptq=False))
    with_gptq = search_linear(lin, cfg, x, absmax, SearchOptions(gptq=True), hessian=h)
    assert with_gptq.notes["gptq"] and "weight" in with_gptq.calib
    assert with_gptq.err < 0.8 * plain.err
    # the module built from the calibration is the one that was scored
    q = qengine.api.calibrated_layer(lin, cfg, with_gptq.calib, backend="reference")
    ref = x @ lin.weight.detach().t()
    err = float((q(x) - lin.bias.detach() - ref).pow(2).sum() / ref.pow(2).sum())
    assert err == pytest.approx(with_gptq.err, rel=1e-4)
    # and it survives the calibration file (incl. the packed weight and its scales)
    res = CalibrationResult(qengine.QuantConfig.preset("w4a8"), {"l": {**with_gptq.calib, "config": cfg.to_dict()}})
    back = CalibrationResult.load(res.save(tmp_path / "c.safetensors")).layers["l"]
    assert torch.equal(back["weight"], with_gptq.calib["weight"])
    assert torch.equal(back["weight_scale"], with_gptq.calib["weight_scale"])


def test_search_conv_with_gptq_fp8_round_trips(tmp_path):
    torch.manual_seed(6)
    conv = nn.Conv2d(32, 16, 3, padding=1)
    x = torch.randn(8, 32, 8, 8)
    x[:, :4] *= 6
    acc = HessianAccumulator(conv)
    acc.add(x)
    cfg = LayerQuantConfig("w8a8-fp8")
    ranges = x.abs().amax(dim=(0, 2, 3))[None]
    plain = search_conv(conv, cfg, x, ranges, SearchOptions(gptq=False))
    found = search_conv(conv, cfg, x, ranges, SearchOptions(), hessian=acc.get())
    assert found.err <= plain.err  # GPTQ is kept only where it lowers the layer error
    if found.notes["gptq"]:
        assert found.calib["weight"].dtype == torch.float8_e4m3fn
        res = CalibrationResult(qengine.QuantConfig.preset("w8a8-fp8"), {"c": {**found.calib, "config": cfg.to_dict()}})
        back = CalibrationResult.load(res.save(tmp_path / "c.safetensors")).layers["c"]
        assert torch.equal(_bits(back["weight"]), _bits(found.calib["weight"]))


def test_calibrated_layer_rejects_a_weight_of_another_layout():
    lin = nn.Linear(64, 32)
    bad = {"weight": torch.zeros(32, 64, dtype=torch.int8), "weight_scale": torch.ones(32)}
    with pytest.raises(ValueError, match="calibrate with the same config"):
        qengine.api.calibrated_layer(lin, LayerQuantConfig("w4a8", 64, 0), bad)


def test_alpha_chosen_by_model_score_among_the_best():
    # alpha_top > 1: among the alpha_top best smoothing candidates by layer error, the model score decides.
    lin, x = _linear_case(7)
    cfg = LayerQuantConfig("w8a8-int8")
    absmax = x.abs().amax(dim=0)
    base = search_linear(lin, cfg, x, absmax, SearchOptions(gptq=False))
    ranked = sorted(base.notes["alpha_errors"].items(), key=lambda kv: kv[1])
    second = ranked[1][0]
    second = None if second == "off" else second
    calls = []

    def score(calib):  # prefers the second-best candidate (no smoothing -> no "smooth" key)
        calls.append(calib)
        s = calib.get("smooth")
        from qengine.calib.search import smooth_vector
        want = None if second is None else smooth_vector(absmax, lin.weight.detach(), second)
        return 0.0 if (s is None and want is None) or (s is not None and want is not None and torch.allclose(s, want)) else 1.0

    picked = search_linear(lin, cfg, x, absmax, SearchOptions(gptq=False, alpha_top=3), score_fn=score)
    assert len(calls) == 3
    assert picked.notes["alpha"] == second
