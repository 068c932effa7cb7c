"""The w4a8 weight format (CPU): prepacked layout, per-channel INT4, QLinear and checkpoint use."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import qengine
from qengine.config import LayerQuantConfig
from qengine.formats import get_scheme, pack_int4, unpack_int4
from qengine.formats.w4a8_layout import prepack, unprepack
from qengine.nn import QLinear

GEN = torch.Generator().manual_seed(7)


def random_packed(n, k):
    return pack_int4(torch.randint(-8, 8, (n, k), generator=GEN, dtype=torch.int8))


@pytest.mark.parametrize("n,k", [(16, 32), (48, 96), (64, 256), (3072, 128)])
def test_prepack_round_trip_is_bit_exact(n, k):
    w = random_packed(n, k)
    p = torch.ops.qengine.w4a8_prepack(w)
    assert p.shape == w.shape and p.dtype == torch.uint8
    assert torch.equal(torch.ops.qengine.w4a8_unprepack(p), w)
    # a permutation of the values: same multiset, different order
    assert torch.equal(unpack_int4(p).flatten().sort().values, unpack_int4(w).flatten().sort().values)
    assert not torch.equal(p, w)


def test_prepack_places_values_by_the_documented_formula():
    # Offsets taken from CUTLASS's reordered layout for an int8 RS GMMA (dumped with cute::print
    # for N=32, K=64; see csrc/w4a8/sm90/weight_layout.cuh): ((8,2),(4,4,2)):((64,4),(1,16,8))
    # per 16x32 block, blocks of 512 down N first.
    n, k = 32, 64
    q = torch.arange(n * k, dtype=torch.int64).reshape(n, k)
    expected = {}
    for r in range(n):
        for c in range(k):
            cc = c % 32
            atom = 64 * (r % 8) + 4 * (r // 8 % 2) + cc % 4 + 16 * (cc // 4 % 4) + 8 * (cc // 16)
            expected[atom + 512 * (r // 16) + 1024 * (c // 32)] = int(q[r, c])
    assert sorted(expected) == list(range(n * k))
    # carry each (n, k) index through prepack as 3-bit digits (INT4 holds 0..7): 11 bits, 4 planes
    planes = [((q >> (3 * i)) & 7).to(torch.int8) for i in range(4)]
    flat = [unpack_int4(prepack(pack_int4(p))).flatten().long() for p in planes]
    got = sum(f << (3 * i) for i, f in enumerate(flat))
    want = torch.tensor([expected[i] for i in range(n * k)])
    assert torch.equal(got, want)


def test_prepack_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N % 16 == 0 and K % 32 == 0"):
        prepack(random_packed(24, 64))
    with pytest.raises(ValueError, match="N % 16 == 0 and K % 32 == 0"):
        unprepack(random_packed(16, 48))
    with pytest.raises(ValueError, match="2-D uint8"):
        prepack(torch.zeros(16, 16, dtype=torch.int8))


def test_scheme_allows_per_channel_and_groups():
    s = get_scheme("w4a8")
    assert s.default_group_size() == 0
    for g in (0, 64, 128):
        s.check_group_size(g)
    assert s.k_multiple(0) == 32 and s.k_multiple(128) == 128 and s.n_multiple == 16


@pytest.mark.parametrize("group", [0, 64, 128])
def test_qlinear_w4a8_stores_prepacked_weights(group):
    torch.manual_seed(0)
    lin = nn.Linear(256, 64)
    q = QLinear.from_float(lin, LayerQuantConfig("w4a8", group, 0))
    assert q.weight.shape == (64, 128) and q.weight_scale.shape == (64, 256 // group if group else 1)
    # un-prepacked values times scales reproduce the weight to INT4 accuracy
    v = unpack_int4(unprepack(q.weight)).float()
    g = group or 256
    wd = (v.reshape(64, -1, g) * q.weight_scale[:, :, None]).reshape(64, 256)
    err = (wd - lin.weight).pow(2).sum() / lin.weight.pow(2).sum()
    assert err < 10 ** (-1.6)  # better than 16 dB weight SQNR (INT4 RTN gives ~20)
    x = torch.randn(5, 256)
    y = q(x)
    assert y.shape == (5, 64) and torch.isfinite(y).all()


def test_qlinear_rejects_n_not_multiple_of_16():
    with pytest.raises(ValueError, match="out_features \\(N\\) to be a multiple of 16"):
        QLinear.from_float(nn.Linear(64, 24), LayerQuantConfig("w4a8", 0, 0))


def test_checkpoint_round_trip_keeps_prepacked_layout(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 32))
    x = torch.randn(3, 128)
    q = qengine.quantize(model, qengine.QuantConfig.preset("w4a8", rank=16))
    qengine.save(q, tmp_path / "ckpt")
    back = qengine.load(nn.Sequential(nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 32)), tmp_path / "ckpt")
    assert torch.equal(back[0].weight, q[0].weight) and back[0].weight_scale.shape == (64, 1)
    assert torch.equal(back(x), q(x))


def test_checkpoint_records_the_weight_layout(tmp_path):
    import json

    model = nn.Sequential(nn.Linear(128, 64))
    q = qengine.quantize(model, qengine.QuantConfig.preset("w4a8", rank=0))
    path = qengine.save(q, tmp_path / "ckpt")
    cfg = next(p for p in path.iterdir() if p.suffix == ".json")
    meta = json.loads(cfg.read_text())
    assert meta["format_version"] == 2 and meta["w4a8_weight_layout"] == "sm90-int8-rs-shuffle-16x32"
    meta["w4a8_weight_layout"] = "plain"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(qengine.CheckpointError, match="layout 'plain'"):
        qengine.load(nn.Sequential(nn.Linear(128, 64)), path, verify_hash=False)
