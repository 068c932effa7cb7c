"""Image metrics that need no weights: PSNR and SSIM of quantized vs full-precision samples.

Both work on uint8 images [N, C, H, W] (what a user would save), so rounding to 8 bits is part
of what is compared, as it is in every published PSNR of quantized diffusion models. Each
returns the mean over images of the per-image value (a per-image PSNR of an identical pair is
capped at 100 dB so one exact match cannot make the mean infinite).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image PSNR in dB of uint8 images ``a`` vs ``b`` (peak 255)."""
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    db = 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-12))
    return float(db.clamp(max=PSNR_CAP_DB).mean())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, no padding) of uint8 images."""
    _check(a, b)
    x, y = a.double() / 255, b.double() / 255
    c = x.shape[1]
    win = _gaussian_window().to(x.device).expand(c, 1, -1, -1)

    def filt(t):
        return F.conv2d(t, win, groups=c)

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(m.flatten(1).mean(1).mean())


@torch.no_grad()
def class_accuracy(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 1000) -> float:
    """Fraction of uint8 samples [N, 1, 32, 32] that ``classifier`` labels as the class they were sampled for."""
    dev = next(classifier.parameters()).device
    hits = 0
    for lo in range(0, len(images), batch_size):
        x = images[lo:lo + batch_size].to(dev).float().div(127.5).sub(1)
        hits += int((classifier(x).argmax(1).cpu() == labels[lo:lo + batch_size]).sum())
    return hits / len(images)


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two image batches [N, C, H, W] of one shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {a.dtype} and {b.dtype}")
