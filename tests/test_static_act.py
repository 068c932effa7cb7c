"""Static (calibrated, per-tensor) activation scales on CPU: the reference quantization, QLinear's
static path against its definition, calibration (linears and convs), checkpoints, torch.compile,
clear errors, and the benchmark's -static modes. The CUDA side: tests/gpu/test_static_act.py."""
import math
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

import qengine
from qengine import ops
from qengine.calib import calibrate_static_scales, static_scale
from qengine.config import LayerQuantConfig
from qengine.formats import Format, get_scheme
from qengine.formats.quantizers import round_to_format
from qengine.nn import QConv2d, QLinear


def layer(scheme="w8a8-fp8", k=64, n=48, smooth=False, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n).requires_grad_(False)
    s = torch.rand(k) + 0.5 if smooth else None
    return lin, QLinear.from_float(lin, LayerQuantConfig(scheme), smooth=s)


@pytest.mark.parametrize("absmax,fmt,pow2,expect", [
    (448.0, Format.FP8_E4M3, True, 1.0), (449.0, Format.FP8_E4M3, True, 2.0), (3.0, Format.FP8_E4M3, True, 2.0 ** -7),
    (127.0, Format.INT8, False, 1.0), (3.0, Format.INT8, False, 3.0 / 127), (0.0, Format.INT8, False, 1.0)])
def test_static_scale_maps_absmax_to_the_format_max(absmax, fmt, pow2, expect):
    s = static_scale(absmax, fmt, pow2)
    assert s == expect
    if absmax:
        assert absmax / s <= fmt.scale_divisor  # nothing calibrated saturates
        if pow2:
            assert absmax / s > fmt.scale_divisor / 2  # and at most one binade is left unused
    with pytest.raises(ValueError, match="absmax"):
        static_scale(math.nan, fmt, pow2)


@pytest.mark.parametrize("scheme", ["w8a8-fp8", "w8a8-int8"])
@pytest.mark.parametrize("smooth", [False, True])
def test_static_layer_is_its_definition(scheme, smooth):
    lin, q = layer(scheme, smooth=smooth)
    x = torch.randn(5, 64) * 3
    q.set_input_scale(0.05)
    fmt = get_scheme(scheme).act
    xs = x if not smooth else x / q.smooth
    xq = round_to_format(xs / 0.05, fmt).float() * 0.05
    w = q.weight.float() * q.weight_scale[:, None]
    expect = xq @ w.t() + q.bias
    assert torch.allclose(q(x), expect, rtol=1e-5, atol=1e-5)
    # a value beyond the calibrated range saturates instead of overflowing
    big = torch.full((1, 64), 1e4)
    assert torch.isfinite(q(big)).all()


def test_static_and_dynamic_agree_where_the_range_fits():
    lin, q = layer("w8a8-fp8")
    x = torch.randn(8, 64)
    dyn = q(x)
    q.set_input_scale(static_scale(float(x.abs().amax()), Format.FP8_E4M3, True))
    stat = q(x)
    ref = lin(x)
    err = lambda y: float((y - ref).pow(2).mean() / ref.pow(2).mean())  # noqa: E731
    assert err(stat) < 2 * err(dyn) + 1e-6
    assert not torch.equal(stat, dyn)  # a different quantization, not the dynamic path again
    q.set_input_scale(None)
    assert q.input_scale is None and torch.equal(q(x), dyn)


def test_static_scale_errors_name_the_problem():
    _, q = layer("w8a8-fp8")
    for bad in (0.0, -1.0, math.inf, [1.0, 2.0]):
        with pytest.raises(ValueError, match="positive finite"):
            q.set_input_scale(bad)
    assert q.input_scale is None
    _, q4 = layer("w4a8")
    with pytest.raises(ValueError, match="8-bit scheme"):
        q4.set_input_scale(0.1)
    with pytest.raises(ValueError, match="low-rank"):
        QLinear(64, 64, LayerQuantConfig("w8a8-fp8", rank=16), static_input_scale=True)
    x = torch.randn(4, 64)
    with pytest.raises(ops.OpInputError, match="scale must have dtype"):
        ops.quantize_act_static(x, get_scheme("w8a8-fp8"), None, torch.ones(1, dtype=torch.float64))
    with pytest.raises(ops.OpInputError, match="no static activation scales"):
        ops.quantize_act_static(x, get_scheme("w4a4"), None, torch.ones(1))


def test_gelu_cat_and_geglu_forwards_fall_back_to_the_static_path():
    _, q = layer("w8a8-int8", k=32)
    assert q.supports_gelu_cat()
    q.set_input_scale(0.02)
    assert not q.supports_gelu_cat()
    proj = torch.randn(6, 64)
    h, gate = proj.chunk(2, -1)
    assert torch.equal(q.forward_geglu(proj), q(h * nn.functional.gelu(gate)))


def test_ones_scales_are_a_cached_view():
    cpu = torch.device("cpu")
    a = ops.ones_scales(10, cpu)
    b = ops.ones_scales(20, cpu)
    assert a.shape == (10,) and torch.equal(a, torch.ones(10)) and a.data_ptr() == b.data_ptr()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = {"kind": "net"}
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 64)
        self.lr = nn.Linear(64, 64)

    def forward(self, img):
        h = self.conv(img).permute(0, 2, 3, 1).flatten(1, 2)
        return self.lr(torch.relu(self.fc(self.norm(h))))


def calibrated_net(tmp_path=None):
    torch.manual_seed(0)
    net = Net()
    cfg = qengine.QuantConfig.preset("w8a8-fp8", conv_scheme="w8a8-int8", overrides={"lr": {"rank": 16}})
    qengine.quantize(net, cfg)
    calib = [torch.randn(1, 16, 6, 6) for _ in range(3)]
    report = calibrate_static_scales(net, lambda: [net(c) for c in calib])
    return net, calib, report


def test_calibration_sets_scales_from_the_observed_absmax():
    net, calib, report = calibrated_net()
    assert set(report) == {"conv", "fc", "lr"}
    assert "low-rank" in report["lr"]["skipped"] and net.lr.input_scale is None
    conv_absmax = max(float(c.abs().amax()) for c in calib)
    assert report["conv"]["absmax"] == [pytest.approx(conv_absmax)]
    assert float(net.conv.input_scale) == pytest.approx(conv_absmax / 127)  # INT8: exact absmax / QMAX
    fc_scale = float(net.fc.input_scale)
    assert math.log2(fc_scale).is_integer()  # FP8: a power of two
    assert report["fc"]["absmax"][0] / fc_scale <= 448
    assert net.qengine_state.layers["fc"]["static_input_scale"]
    assert net.qengine_state.layers["conv"]["static_input_scale"]
    # fc's recorded input is the LayerNorm's output (32 channels of unit variance: |x| < sqrt(32))
    assert report["fc"]["absmax"][0] <= math.sqrt(32)


def test_int8_linears_stay_dynamic_unless_asked():
    torch.manual_seed(0)
    net = qengine.quantize(Net(), qengine.QuantConfig.preset("w8a8-int8", conv_scheme="w8a8-int8"))
    calib = [torch.randn(1, 16, 6, 6)]
    report = calibrate_static_scales(net, lambda: net(calib[0]))
    assert "per-token" in report["fc"]["skipped"] and net.fc.input_scale is None
    assert net.conv.input_scale is not None  # convs are per tensor either way
    report = calibrate_static_scales(net, lambda: net(calib[0]), int8_linears=True)
    assert "scale" in report["fc"] and float(net.fc.input_scale) == pytest.approx(report["fc"]["absmax"][0] / 127)


def test_existing_static_scales_are_kept_unless_recalibrate():
    torch.manual_seed(0)
    net = qengine.quantize(Net(), qengine.QuantConfig.preset("w8a8-fp8", conv_scheme="w8a8-fp8"))
    net.conv.input_scale = torch.tensor([0.125])  # e.g. chosen by `qengine calibrate`'s search
    calls = []
    orig = QConv2d.forward

    def spy(mod, x, *a, **k):
        calls.append(None if mod.input_scale is None else float(mod.input_scale))
        return orig(mod, x, *a, **k)
    calib = torch.randn(1, 16, 6, 6) * 40  # the conv input's absmax is far from 0.125 x 448
    with mock.patch.object(QConv2d, "forward", spy):
        report = calibrate_static_scales(net, lambda: net(calib))
    assert report["conv"] == {"kept": [0.125]} and float(net.conv.input_scale) == 0.125
    assert calls == [0.125]  # the kept layer ran with its static scale during calibration
    assert "scale" in report["fc"] and net.fc.input_scale is not None
    fc_scale = float(net.fc.input_scale)
    # nothing left to measure: no run at all
    assert calibrate_static_scales(net, lambda: pytest.fail("ran")) == {
        "conv": {"kept": [0.125]}, "fc": {"kept": [fc_scale]}, "lr": {"kept": [float(net.lr.input_scale)]}}
    report = calibrate_static_scales(net, lambda: net(calib), recalibrate=True)
    assert float(net.conv.input_scale) == pytest.approx(float(calib.abs().amax()) / 448)
    assert report["conv"]["absmax"] == [pytest.approx(float(calib.abs().amax()))]


def test_calibration_that_fails_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    net = qengine.quantize(Net(), qengine.QuantConfig.preset("w8a8-fp8", conv_scheme="w8a8-fp8"))
    net.fc.set_input_scale(0.25)

    def boom():
        net(torch.randn(1, 16, 6, 6))
        raise RuntimeError("calibration data went missing")
    with pytest.raises(RuntimeError, match="went missing"):
        calibrate_static_scales(net, boom)
    assert float(net.fc.input_scale) == 0.25 and net.conv.input_scale is None
    assert "supports_gelu_cat" not in net.fc.__dict__ and not net.fc._forward_pre_hooks
    with pytest.raises(ValueError, match="no quantized layer"):
        calibrate_static_scales(nn.Linear(4, 4), lambda: None)


def test_checkpoint_round_trip_keeps_static_scales(tmp_path):
    net, calib, _ = calibrated_net()
    x = torch.randn(1, 16, 6, 6)
    expect = net(x)
    path = qengine.save(net, tmp_path / "ckpt")
    torch.manual_seed(7)
    fresh = Net()
    qengine.load(fresh, path)
    assert fresh.fc.input_scale is not None and float(fresh.fc.input_scale) == float(net.fc.input_scale)
    assert torch.equal(fresh.fc._w_scale_static, net.fc._w_scale_static)
    assert torch.equal(fresh(x), expect)


def test_compiled_static_layer_equals_eager():
    torch.manual_seed(0)
    norm = nn.LayerNorm(64)
    _, q = layer("w8a8-fp8", smooth=True)
    q.set_input_scale(2.0 ** -5)
    net = nn.Sequential(norm, q)
    x = torch.randn(7, 64) * 4
    with torch.no_grad():
        eager = net(x)
        torch._dynamo.reset()
        assert torch.equal(torch.compile(net, fullgraph=True)(x), eager)


def test_bench_static_modes(tmp_path):
    pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_pipeline

    m = bench_pipeline.Mode.parse("fp8-static-qkv+compile+graph")
    assert (m.base, m.static, m.fuse_qkv, m.compile, m.graph) == ("fp8", True, True, True, True)
    for bad, why in (("bf16-static", "8-bit qengine"), ("fp8-lr32-static", "8-bit qengine"),
                     ("fp8-fold-static", "exclude")):
        with pytest.raises(SystemExit, match=why):
            bench_pipeline.Mode.parse(bad)
    args = ["--tiny", "--device", "cpu", "--reps", "1", "--warmup", "1", "--models", "sdxl",
            "--modes", "int8", "int8-static", "--out-dir", str(tmp_path)]
    assert bench_pipeline.main(args) == 0
    import json
    rows = {r["mode"]: r for r in json.loads((tmp_path / "bench_pipeline.json").read_text())["rows"]}
    assert rows["int8-static"]["sqnr_db_vs_bf16"] > 15  # calibrated on other inputs, still close to bf16
    assert rows["int8-static"]["sqnr_db_vs_bf16"] != rows["int8"]["sqnr_db_vs_bf16"]
