"""Quantize a shipped, trained diffusion model and see what it costs in quality, on a CPU.

    python examples/fashion_mnist.py                       # UNet, w8a8-int8, calibrated
    python examples/fashion_mnist.py --model dit --scheme w4a8 --out dit-w4a8.png

Loads models/fashion-<model> (a class-conditional denoiser trained on Fashion-MNIST, see
models/MODEL_CARD.md), calibrates the scheme along the model's own sampling trajectories
(qengine.calib), quantizes a copy with the result, samples a grid of every class with both
models from the same noise, and saves them side by side (full precision | quantized). Prints
PSNR/SSIM of quantized vs full precision, the class accuracy of both by the shipped classifier,
the times and the weight memory. Runs in under 3 minutes on 2 CPU cores (the ops' float32
reference backend); on a GPU pass --device cuda.
"""
from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import qengine  # noqa: E402
from qengine.calib import summary_table  # noqa: E402
from qengine.eval.metrics import class_accuracy, psnr, ssim  # noqa: E402
from qengine.eval.run import calibrate_reference, save_grid  # noqa: E402
from qengine.models import reference as ref  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unet", choices=("unet", "dit"))
    p.add_argument("--scheme", default="w8a8-int8", choices=qengine.config.PRESETS)
    p.add_argument("--per-class", type=int, default=4, help="grid samples per class (default: %(default)s)")
    p.add_argument("--steps", type=int, default=ref.DEFAULT_STEPS, help="DDIM steps (default: %(default)s)")
    p.add_argument("--calib-per-class", type=int, default=1, help="calibration trajectories per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--table", action="store_true", help="print the per-layer calibration table")
    p.add_argument("--no-gptq", action="store_true",
                   help="round-to-nearest weights instead of GPTQ (about 4x faster calibration on a CPU, lower quality)")
    p.add_argument("--out", default="fashion-mnist-quantized.png",
                   help="side-by-side PNG to write (a folder: the default file name inside it)")
    args = p.parse_args(argv)
    # Checked before minutes of work, not when the image is saved at the end.
    out = Path(args.out)
    if out.is_dir() or args.out.endswith("/"):
        out = out / "fashion-mnist-quantized.png"
    elif out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        p.error(f"--out {args.out!r}: give a .png (or .jpg) file name, or an existing folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    torch.manual_seed(args.seed)
    backend = "auto" if args.device == "cpu" else "reference"

    model = ref.load_denoiser(args.model, device=args.device)
    clf = ref.load_classifier(device=args.device)
    labels = ref.class_grid_labels(args.per_class)

    t = time.perf_counter()
    res = calibrate_reference(model, args.scheme, "no-gptq" if args.no_gptq else "calibrated", steps=args.steps,
                              per_class=args.calib_per_class,
                              progress=True, batch_size=len(labels), rows=512, maps=16, probes=2,
                              log=lambda s: None)
    calib_s = time.perf_counter() - t
    if args.table:
        print(summary_table(res.report))
    qmodel = qengine.quantize(copy.deepcopy(model), calibration=res, backend=backend)

    t = time.perf_counter()
    fp = ref.to_uint8(ref.sample(model, labels, seed=args.seed, steps=args.steps))
    fp_s = time.perf_counter() - t
    t = time.perf_counter()
    q = ref.to_uint8(ref.sample(qmodel, labels, seed=args.seed, steps=args.steps))
    q_s = time.perf_counter() - t
    save_grid(fp, q, labels, Path(args.out), per_class=args.per_class, scale=3)

    mib = 2 ** 20
    print(qengine.summary(qmodel))
    print(f"\n{args.model} {args.scheme} (calibrated, {len(res.meta['promoted'])} layers promoted by the "
          f"mixed-precision plan)")
    print(f"  PSNR {psnr(q, fp):.2f} dB   SSIM {ssim(q, fp):.4f}   (quantized vs full precision, same noise)")
    print(f"  class accuracy: full precision {class_accuracy(clf, fp, labels):.2f}, "
          f"quantized {class_accuracy(clf, q, labels):.2f}   ({len(labels)} samples)")
    print(f"  time: calibration {calib_s:.1f} s, sampling {len(labels)} images x {args.steps} steps: "
          f"full precision {fp_s:.1f} s, quantized {q_s:.1f} s (reference ops on {args.device})")
    print(f"  weights: {qengine.model_bytes(model) / mib:.2f} MiB fp32 -> {qengine.model_bytes(qmodel) / mib:.2f} MiB; "
          f"peak process memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"  side-by-side grid (full precision | quantized, one row per class): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
