"""QLinear / QConv2d: accuracy against the float module, repr, compile, and bad input."""
import pytest
import torch
from torch import nn

from qengine import LayerQuantConfig, QConv2d, QLinear
from qengine.ops import OpInputError

torch.manual_seed(0)

# SQNR floors (dB) vs the float layer, Gaussian weights and inputs, K = 256. Measured values
# sit 3-4 dB above these: int8 ~42, fp8 ~29, w4a8 ~23, w4a4 ~18.
LINEAR_SQNR_FLOOR = {
    ("w8a8-int8", 0): 38.0,
    ("w8a8-fp8", 0): 26.0,
    ("w4a8", 64): 20.0,
    ("w4a8", 128): 19.0,
    ("w4a4", 64): 15.0,
}
CONV_SQNR_FLOOR = {"w8a8-int8": 38.0, "w8a8-fp8": 26.0}


def sqnr(y, ref):
    y, ref = y.double(), ref.double()
    return (10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum())).item()


@pytest.mark.parametrize("scheme,group", list(LINEAR_SQNR_FLOOR))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qlinear_sqnr(scheme, group, dtype):
    lin = nn.Linear(256, 192).to(dtype)
    x = torch.randn(3, 11, 256, dtype=dtype)
    q = QLinear.from_float(lin, LayerQuantConfig(scheme, group))
    y = q(x)
    assert y.shape == (3, 11, 192) and y.dtype == dtype
    assert sqnr(y, lin(x)) >= LINEAR_SQNR_FLOOR[(scheme, group)]


@pytest.mark.parametrize("scheme,group", [("w4a8", 64), ("w4a4", 64), ("w8a8-fp8", 0)])
def test_lowrank_branch_absorbs_a_low_rank_weight(scheme, group):
    # a weight dominated by a rank-16 component: the 16-bit branch takes it, the residual is small
    n, k = 256, 256
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, 16) @ torch.randn(16, k) / 4 + 0.01 * torch.randn(n, k))
    x = torch.randn(64, k)
    plain = sqnr(QLinear.from_float(lin, LayerQuantConfig(scheme, group, 0))(x), lin(x))
    branch = QLinear.from_float(lin, LayerQuantConfig(scheme, group, 32))
    assert branch.lora_down.shape == (32, k) and branch.lora_up.shape == (n, 32)
    assert sqnr(branch(x), lin(x)) > plain + 3


def test_smoothing_is_exact_in_float_and_moves_outliers():
    # an input channel with 100x outliers: smoothing by its magnitude restores int8 accuracy
    k = 128
    lin = nn.Linear(k, 64)
    x = torch.randn(32, k)
    x[:, 5] *= 100
    s = x.abs().amax(dim=0).clamp(min=1e-5).sqrt()
    plain = sqnr(QLinear.from_float(lin, LayerQuantConfig("w8a8-int8"))(x), lin(x))
    smoothed = QLinear.from_float(lin, LayerQuantConfig("w8a8-int8"), smooth=s)
    assert smoothed.smooth is not None
    assert sqnr(smoothed(x), lin(x)) > plain + 3


@pytest.mark.parametrize("scheme", list(CONV_SQNR_FLOOR))
@pytest.mark.parametrize("stride,padding,ksize", [(1, 1, 3), (2, 1, 3), (1, 0, 1)])
def test_qconv2d_sqnr_and_channels_last(scheme, stride, padding, ksize):
    conv = nn.Conv2d(32, 48, ksize, stride=stride, padding=padding)
    x = torch.randn(2, 32, 13, 11)
    q = QConv2d.from_float(conv, LayerQuantConfig(scheme))
    y = q(x.to(memory_format=torch.channels_last))
    ref = conv(x)
    assert y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last)  # no layout round trip
    assert sqnr(y, ref) >= CONV_SQNR_FLOOR[scheme]
    assert torch.equal(q(x), y)  # NCHW input gives the same result


def test_static_input_scale_for_conv():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 8, 8)
    q = QConv2d.from_float(conv, LayerQuantConfig("w8a8-int8"), input_scale=x.abs().amax() / 127)
    assert "input_scale=static" in repr(q)
    assert sqnr(q(x), conv(x)) >= 38


@pytest.mark.parametrize("static", [False, True])
def test_qconv2d_split_shortcut_beats_one_scale(static):
    """A concat of a wide-range half and a small-range half (UNet up-block input): per-half scales
    keep the small half's contribution that one INT8 scale for both would round away."""
    torch.manual_seed(1)
    conv = nn.Conv2d(64, 32, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, :32] = 0  # the output then comes from the small half only: its error is visible
    x = torch.cat([torch.randn(2, 32, 9, 7) * 100, torch.randn(2, 32, 9, 7)], dim=1).to(memory_format=torch.channels_last)
    scales = torch.stack([x[:, :32].abs().amax(), x[:, 32:].abs().amax()]) / 127 if static else None
    split = QConv2d.from_float(conv, LayerQuantConfig("w8a8-int8"), split=32, input_scale=scales)
    one = QConv2d.from_float(conv, LayerQuantConfig("w8a8-int8"))
    ref = conv(x)
    y = split(x)
    assert "split=32" in repr(split)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert sqnr(y, ref) >= 38
    assert sqnr(y, ref) > sqnr(one(x), ref) + 10


def test_qconv2d_bad_split():
    with pytest.raises(ValueError, match="split must be a multiple of 16"):
        QConv2d.from_float(nn.Conv2d(64, 32, 1), LayerQuantConfig("w8a8-int8"), split=24)


def test_extra_repr_names_the_format():
    q = QLinear.from_float(nn.Linear(256, 128), LayerQuantConfig("w4a8", 128, 32))
    r = repr(q)
    for part in ("scheme=w4a8", "group_size=128", "rank=32", "backend=auto", "in_features=256"):
        assert part in r
    c = QConv2d.from_float(nn.Conv2d(16, 32, 3, stride=2, padding=1), LayerQuantConfig("w8a8-fp8"))
    assert "scheme=w8a8-fp8" in repr(c) and "stride=(2, 2)" in repr(c)


@pytest.mark.parametrize("scheme,group", [("w8a8-fp8", 0), ("w4a4", 64)])
def test_reference_backend_matches_registered_op_on_cpu(scheme, group):
    lin = nn.Linear(128, 64)
    x = torch.randn(5, 128)
    auto = QLinear.from_float(lin, LayerQuantConfig(scheme, group))
    ref = QLinear.from_float(lin, LayerQuantConfig(scheme, group), backend="reference")
    assert torch.equal(auto(x), ref(x))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
    model[0] = QLinear.from_float(model[0], LayerQuantConfig("w8a8-int8"))
    model[2] = QLinear.from_float(model[2], LayerQuantConfig("w4a8", 64, 0))
    x = torch.randn(4, 128)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
    conv = QConv2d.from_float(nn.Conv2d(16, 32, 3, padding=1), LayerQuantConfig("w8a8-fp8"))
    xc = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(torch.compile(conv, fullgraph=True, backend="aot_eager")(xc), conv(xc), rtol=0, atol=0)


def test_bad_module_input():
    with pytest.raises(ValueError, match=r"multiple of 16, got K=40"):
        QLinear.from_float(nn.Linear(40, 64), LayerQuantConfig("w8a8-fp8"))
    with pytest.raises(ValueError, match=r"multiple of 128, got K=192"):
        QLinear.from_float(nn.Linear(192, 64), LayerQuantConfig("w4a8", 128))
    with pytest.raises(ValueError, match="rank 32 is too large"):
        QLinear.from_float(nn.Linear(64, 64), LayerQuantConfig("w4a8", 64, 32))
    with pytest.raises(TypeError, match="expects nn.Linear"):
        QLinear.from_float(nn.Conv2d(16, 16, 1), LayerQuantConfig("w8a8-fp8"))
    with pytest.raises(ValueError, match="unknown backend"):
        QLinear.from_float(nn.Linear(64, 64), LayerQuantConfig("w8a8-fp8"), backend="triton")
    with pytest.raises(ValueError, match="groups=1 only"):
        QConv2d.from_float(nn.Conv2d(32, 32, 3, groups=2), LayerQuantConfig("w8a8-int8"))
    with pytest.raises(ValueError, match="no conv2d kernel"):
        QConv2d.from_float(nn.Conv2d(32, 32, 3), LayerQuantConfig("w4a8", 64))
    with pytest.raises(ValueError, match="in_channels to be a multiple of 16"):
        QConv2d.from_float(nn.Conv2d(4, 32, 3), LayerQuantConfig("w8a8-int8"))
    q = QLinear.from_float(nn.Linear(64, 32), LayerQuantConfig("w8a8-int8"))
    with pytest.raises(ValueError, match=r"last dimension 64, got shape \(2, 32\)"):
        q(torch.randn(2, 32))
    with pytest.raises(OpInputError, match="x must have dtype"):
        q(torch.randn(2, 64).to(torch.float64))
    with pytest.raises(OpInputError, match="w is on cpu but the other operands are on meta"):
        q(torch.randn(2, 64, device="meta"))
