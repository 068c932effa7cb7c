"""Accuracy of INT4 weight granularities for W4A8: per output channel vs groups of 64/128 along K.

For every nn.Linear weight of the shipped trained models (models/fashion-*), with and without
the SVD low-rank branch (rank 16/32, at most min(N, K)/4), quantizes the residual W - L_up L_down
to INT4 with round-to-nearest and reports the SQNR (dB) of the reconstructed weight and of the
layer output on Gaussian inputs X (which, for i.i.d. inputs, weighs every weight element alike).
Also a synthetic "outlier" weight (Gaussian with 1% of input channels x 8, like the activation
outliers smoothing moves into weights). CPU only, seconds.

    PYTHONPATH=. python benchmarks/w4a8_group_sqnr.py [--out results/w4a8_group_sqnr.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from qengine.formats import Format, dequantize_groups, quantize_groups
from qengine.nn.quantize_weight import lowrank_split


def sqnr(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.double(), ref.double()
    return (10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum().clamp_min(1e-30))).item()


def quant_residual(w: torch.Tensor, group: int, rank: int) -> torch.Tensor:
    """W reconstructed from the low-rank branch (16-bit) plus the INT4-quantized residual."""
    branch = torch.zeros_like(w)
    if rank:
        down, up = lowrank_split(w, rank)
        branch = up.bfloat16().float() @ down.bfloat16().float()
    res = w - branch
    q, s = quantize_groups(res, Format.INT4, group or w.shape[1])
    return branch + dequantize_groups(q, s)


def weights() -> dict[str, torch.Tensor]:
    out = {}
    for model in ("fashion-dit", "fashion-unet"):
        sd = load_file(f"models/{model}/diffusion_pytorch_model.safetensors")
        for k, v in sd.items():
            if k.endswith(".weight") and v.dim() == 2 and v.shape[1] % 128 == 0 and min(v.shape) >= 64:
                out[f"{model}:{k}"] = v.float()
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1024, 1024, generator=g) * 0.02
    w[:, torch.randperm(1024, generator=g)[:10]] *= 8.0
    out["synthetic-outlier-cols:1024x1024"] = w
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    ws = weights()
    cols = [(g, r) for r in (0, 16, 32) for g in (0, 128, 64)]
    rows, sums = [], {c: [] for c in cols}
    for name, w in ws.items():
        x = torch.randn(256, w.shape[1])
        ref = x @ w.t()
        cells = []
        for g, r in cols:
            if r > min(w.shape) // 4:
                cells.append("-")
                continue
            wq = quant_residual(w, g, r)
            s_w, s_y = sqnr(wq, w), sqnr(x @ wq.t(), ref)
            sums[(g, r)].append(s_y)
            cells.append(f"{s_w:.1f} / {s_y:.1f}")
        rows.append(f"| {name} {tuple(w.shape)} | " + " | ".join(cells) + " |")
    head = "| layer (N, K) | " + " | ".join(f"{'per-ch' if g == 0 else f'g{g}'} r{r}" for g, r in cols) + " |"
    mean = "| **mean output SQNR** | " + " | ".join(
        f"**{sum(v) / len(v):.2f}**" if v else "-" for v in sums.values()) + " |"
    md = "\n".join(["Weight SQNR / output SQNR (dB), INT4 round-to-nearest, per-ch = one scale per output channel", "",
                    head, "|" + "---|" * (len(cols) + 1), *rows, mean])
    print(md)
    if args.out:
        args.out.write_text(md + "\n")


if __name__ == "__main__":
    main()
