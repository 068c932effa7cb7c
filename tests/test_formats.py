"""Formats: packing and quantizers, bit-exact against hand-computed cases."""
import pytest
import torch

from qengine.formats import (
    Format,
    dequantize_groups,
    get_scheme,
    pack_int4,
    quantize_groups,
    quantize_rows,
    unpack_int4,
)


def test_pack_int4_byte_order_hand_computed():
    q = torch.tensor([[1, -1, 7, -8, 0, 3]], dtype=torch.int8)
    # element 2i -> low nibble, 2i+1 -> high nibble; -1 = 0xF, -8 = 0x8
    assert pack_int4(q).tolist() == [[0xF1, 0x87, 0x30]]


def test_unpack_inverts_pack_on_every_byte():
    every_byte = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(2, 128)
    values = unpack_int4(every_byte)
    assert values.dtype == torch.int8 and values.min() == -8 and values.max() == 7
    assert torch.equal(pack_int4(values), every_byte)


def test_pack_then_unpack_is_identity():
    q = torch.randint(-8, 8, (5, 3, 64), dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(q)), q)


def test_pack_rejects_odd_length_and_wrong_dtype():
    with pytest.raises(ValueError, match="even last dimension"):
        pack_int4(torch.zeros(3, 5, dtype=torch.int8))
    with pytest.raises(TypeError, match="int8"):
        pack_int4(torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="uint8"):
        unpack_int4(torch.zeros(3, 4, dtype=torch.int8))


def test_int8_rows_hand_computed():
    x = torch.tensor([[254.0, -127.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    q, scale = quantize_rows(x, Format.INT8)
    # row 0: scale = 254 / 127 = 2; 1/2 = 0.5 -> 0 and 3/2 = 1.5 -> 2 (round half to even)
    assert scale.tolist() == [2.0, 1.0]  # an all-zero row gets scale 1
    assert q.tolist() == [[127, -64, 0, 2], [0, 0, 0, 0]]
    assert q.dtype == torch.int8


def test_fp8_rows_saturate_and_never_nan():
    x = torch.tensor([[448.0, -448.0, 1e-9, 3.0], [float(2**100), -1.0, 0.0, 1.0]])
    q, scale = quantize_rows(x, Format.FP8_E4M3)
    assert q.dtype == torch.float8_e4m3fn
    assert scale[0].item() == 1.0
    assert q.float()[0].tolist() == [448.0, -448.0, 0.0, 3.0]
    assert not torch.isnan(q.float()).any()
    # a huge absmax: every element is within +-448 after scaling, the max lands on 448 exactly
    assert q.float()[1, 0].item() == 448.0


def test_fp8_static_scale_overflow_saturates():
    from qengine.formats import round_to_format
    q = round_to_format(torch.tensor([1e6, -1e6, 500.0]), Format.FP8_E4M3)
    assert q.float().tolist() == [448.0, -448.0, 448.0]


def test_int4_groups_hand_computed():
    # two groups of 4: absmax 14 -> scale 2, absmax 7 -> scale 1
    x = torch.tensor([[14.0, -3.0, 5.0, 1.0, 7.0, -7.0, 0.5, 2.5]])
    q, scale = quantize_groups(x, Format.INT4, 4)
    assert scale.tolist() == [[2.0, 1.0]]
    # -3/2 = -1.5 -> -2, 5/2 = 2.5 -> 2, 1/2 = 0.5 -> 0, 0.5 -> 0, 2.5 -> 2 (half to even)
    assert q.tolist() == [[7, -2, 2, 0, 7, -7, 0, 2]]
    assert dequantize_groups(q, scale).tolist() == [[14.0, -4.0, 4.0, 0.0, 7.0, -7.0, 0.0, 2.0]]


def test_quantizers_reject_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        quantize_rows(torch.zeros(2, 3, 4), Format.INT8)
    with pytest.raises(ValueError, match="multiple of the group size"):
        quantize_groups(torch.zeros(2, 96), Format.INT4, 64)


@pytest.mark.parametrize("fmt", [Format.INT8, Format.FP8_E4M3])
def test_row_quantization_error_is_bounded(fmt):
    x = torch.randn(64, 256)
    q, scale = quantize_rows(x, fmt)
    err = (q.float() * scale[:, None] - x).abs()
    if fmt is Format.INT8:  # uniform grid: half a step
        assert (err <= scale[:, None] / 2 + 1e-6).all()
    else:  # E4M3 has 3 mantissa bits: relative error <= 2**-4 above the subnormal range
        big = (x.abs() / scale[:, None]) >= 2**-6
        assert (err[big] <= x.abs()[big] * 2**-4 + 1e-6).all()


def test_scheme_table():
    assert get_scheme("w4a4").k_multiple(64) == 64
    assert get_scheme("w4a8").k_multiple(128) == 128
    assert get_scheme("w8a8-fp8").k_multiple() == 16
    with pytest.raises(ValueError, match="unknown scheme"):
        get_scheme("w3a3")
    with pytest.raises(ValueError, match="group sizes"):
        get_scheme("w4a8").check_group_size(32)
