"""Evaluation of quantized reference models: PSNR/SSIM, FID, class accuracy, reports (see run.py)."""
