"""qengine quick start: quantize a small Stable-Diffusion-style pipeline and compare with 16-bit.

Builds a small UNet2DConditionModel pipeline from a config (random weights: no download),
samples with it in float, then quantizes it with each preset, samples again from the same noise
and prompt embeddings, and prints the similarity to the float output and the memory saved.

    python examples/quickstart.py [--arch unet2d_condition|flux|sd3]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

import qengine
from diffusers.utils import logging as diffusers_logging
from qengine.integrations.diffusers import find_denoiser
from qengine.integrations.tiny_models import PIPELINE_ARCHS, build_tiny, build_tiny_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="unet2d_condition", choices=PIPELINE_ARCHS, help="pipeline to build")
    args = ap.parse_args()
    diffusers_logging.set_verbosity_error()  # its fp32-cast notice is noise for a random-weight demo

    print(f"qengine {qengine.__version__}: backend {qengine.backend_description()}")
    float_pipe = build_tiny_pipeline(args.arch)
    _, sample = build_tiny(args.arch)  # the sampling call: fixed noise, prompt embeddings, 4 steps
    denoiser, _ = find_denoiser(float_pipe)
    ref = sample(float_pipe)
    # Memory is compared in bf16, as the model would be deployed (sampling here runs in fp32).
    bf16_denoiser = copy.deepcopy(denoiser).to(torch.bfloat16)
    base_bytes = qengine.model_bytes(bf16_denoiser)
    print(f"{type(float_pipe).__name__} with a {type(denoiser).__name__} of "
          f"{sum(p.numel() for p in denoiser.parameters()) / 1e6:.2f}M parameters ({base_bytes / 2**20:.2f} MiB in bf16)\n")
    print(f"{'preset':10} {'SQNR dB':>8} {'cosine':>8} {'bf16 memory':>18} {'quantize s':>10} {'sample s':>9}")
    summaries = {}
    for preset in qengine.PRESETS:
        pipe = copy.deepcopy(float_pipe)
        t0 = time.perf_counter()
        qengine.quantize(pipe, preset)
        t1 = time.perf_counter()
        out = sample(pipe)
        t2 = time.perf_counter()
        err = (out - ref).double()
        snr = 10 * torch.log10(ref.double().pow(2).sum() / err.pow(2).sum()).item()
        cos = torch.nn.functional.cosine_similarity(out.flatten().double(), ref.flatten().double(), dim=0).item()
        summaries[preset] = qengine.summary(find_denoiser(pipe)[0])
        q_bytes = qengine.model_bytes(qengine.quantize(copy.deepcopy(bf16_denoiser), preset))
        mem = f"{q_bytes / 2**20:.2f} MiB ({q_bytes / base_bytes:.2f}x)"
        print(f"{preset:10} {snr:8.1f} {cos:8.4f} {mem:>18} {t1 - t0:10.2f} {t2 - t1:9.2f}")
    print(f"\nWhat w8a8-fp8 did to the layers (count, what):\n{summaries['w8a8-fp8']}")


if __name__ == "__main__":
    main()
