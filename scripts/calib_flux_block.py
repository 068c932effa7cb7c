"""Wall time of ``qengine.calib.calibrate`` on real-size FLUX.1-dev blocks (random weights).

    python scripts/calib_flux_block.py --device cuda --scheme w4a4

Builds FluxTransformer2DModel from the shipped FLUX.1-dev config with one double-stream and one
single-stream block (the real widths: 3072 hidden, 12288 MLP), random weights, and runs a
"trajectory" of ``--steps`` denoiser calls on random 1024x1024 latents (4096 image tokens) and
512 text tokens. Random weights say nothing about quality; this measures what calibration of
one block costs (statistics, searches with SVD per candidate, sensitivity probes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qengine.calib import SearchOptions, calibrate, summary_table  # noqa: E402
from qengine.integrations.diffusers import load_model_config  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheme", default="w4a4")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--image-tokens", type=int, default=4096)
    p.add_argument("--text-tokens", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-gptq", action="store_true",
                   help="round-to-nearest weights (GPTQ's Hessians of 3072-15360 wide layers dominate on a CPU)")
    p.add_argument("--json", help="write the timings here")
    args = p.parse_args(argv)
    from diffusers import FluxTransformer2DModel

    cfg = {**load_model_config("flux1_dev_transformer"), "num_layers": 1, "num_single_layers": 1}
    torch.manual_seed(0)
    model = FluxTransformer2DModel.from_config(cfg).to(args.device).eval()
    dev = args.device
    n, t = args.image_tokens, args.text_tokens
    side = int(n ** 0.5)
    grid = torch.arange(side, dtype=torch.float32)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), grid, grid, indexing="ij"), dim=-1).reshape(-1, 3).to(dev)
    inputs = dict(hidden_states=torch.randn(1, n, cfg["in_channels"], device=dev),
                  encoder_hidden_states=torch.randn(1, t, cfg["joint_attention_dim"], device=dev),
                  pooled_projections=torch.randn(1, cfg["pooled_projection_dim"], device=dev),
                  guidance=torch.full((1,), 3.5, device=dev), img_ids=img_ids, txt_ids=torch.zeros(t, 3, device=dev))

    def trajectory():
        for i in range(args.steps):
            ts = torch.full((1,), 1.0 - i / args.steps, device=dev)
            model(**inputs, timestep=ts)

    t0 = time.perf_counter()
    res = calibrate(model, args.scheme, trajectory, steps_per_trajectory=args.steps, probes=2, budget=0.1,
                    options=SearchOptions(gptq=not args.no_gptq), progress=False)
    wall = time.perf_counter() - t0
    print(summary_table(res.report))
    out = {"scheme": args.scheme, "device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
           "layers": len(res.report), "steps": args.steps, "image_tokens": n, "text_tokens": t,
           "gptq": not args.no_gptq, "wall_s": round(wall, 1), "collect_s": res.meta["collect_s"]}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
