"""SQNR of every preset on every supported architecture's tiny model (CPU, reference backend).

Samples 4 steps with the float model and with a quantized copy from the same noise and
conditioning, and reports the SQNR of the final latents in dB (higher is better), with the
4-bit presets at rank 0 and rank 16. Random weights: this checks the machinery end to end; it
says nothing about image quality (see the trained-model evaluation for that).

    python benchmarks/tiny_sqnr.py [--out results/tiny_sqnr.md]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import qengine
from qengine.integrations.tiny_models import ARCHS, build_tiny

COLUMNS = [(p, 0) for p in qengine.PRESETS] + [("w4a8", 16), ("w4a4", 16)]


def sqnr(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.double(), ref.double()
    return (10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum())).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args()
    header = "| architecture | " + " | ".join(p + (f" r{r}" if p.startswith("w4") else "") for p, r in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    t0 = time.perf_counter()
    for arch in ARCHS:
        cells = []
        for preset, rank in COLUMNS:
            model, sample = build_tiny(arch)
            ref = sample(model)
            qengine.quantize(model, qengine.QuantConfig.preset(preset, rank=rank))
            cells.append(f"{sqnr(sample(model), ref):.1f}")
        lines.append(f"| {type(model).__name__} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(f"\nSQNR (dB) of sampled latents vs float, tiny models, 4 steps "
          f"(torch {torch.__version__}, {time.perf_counter() - t0:.0f} s)\n\n{table}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
