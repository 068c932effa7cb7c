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
    q.add_argument("--dtype", default="bf16", choices=DTYPES, help="dtype of the 16-bit parts (default: %(default)s)")
    q.add_argument("--device", default="cpu", help="device to quantize on (default: %(default)s)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_quantize)
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
