"""Every distinct Linear GEMM shape of FLUX.1-dev, SD3-medium, SDXL and SD1.5 at their default
resolution, batch 1 (one denoiser forward, no CFG batch doubling).

    python benchmarks/shapes.py            # print the table
    python benchmarks/shapes.py --write    # re-derive with diffusers and rewrite linear_shapes.json
    python benchmarks/shapes.py --conv [--write]   # the SD1.5 / SDXL UNet Conv2d shapes (conv_shapes.json)

The shapes are derived, not typed in: each denoiser is built from the config qengine ships
(``qengine/integrations/model_configs/``) on the meta device, every ``nn.Linear`` gets a forward
hook, and one forward on meta inputs of the default resolution records (M, K, N) with M the
number of rows the layer sees. The result is stored in ``linear_shapes.json`` beside this file so
that machines without diffusers (the GPU machines) read the same table.

Token counts: FLUX.1-dev 1024x1024 -> 4096 image + 512 text tokens (single blocks: 4608);
SD3-medium 1024x1024 -> 4096 image + 333 text (77 CLIP + 256 T5); SDXL 1024x1024 -> 128x128
latent, 77 text tokens; SD1.5 512x512 -> 64x64 latent, 77 text tokens.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
from dataclasses import asdict, dataclass
from pathlib import Path

SHAPES_FILE = Path(__file__).with_name("linear_shapes.json")
CONV_SHAPES_FILE = Path(__file__).with_name("conv_shapes.json")
CONV_MODELS = ("sd1.5", "sdxl")  # the UNets (FLUX/SD3 have one patchify conv, kept 16-bit)


@dataclass(frozen=True)
class LinearShape:
    model: str
    M: int
    K: int
    N: int
    count: int          # how many Linear layers of the model have this (M, K, N)
    example: str        # one such layer's qualified name
    kept_16bit: bool    # qengine keeps these layers 16-bit by default (embeddings, modulation, in/out)

    @property
    def name(self) -> str:
        return f"{self.model}:{self.M}x{self.K}x{self.N}"

    @property
    def flops(self) -> int:
        return 2 * self.M * self.K * self.N


def load_shapes(models: list[str] | None = None, include_kept_16bit: bool = False) -> list[LinearShape]:
    rows = [LinearShape(**r) for r in json.loads(SHAPES_FILE.read_text())["shapes"]]
    return [r for r in rows if (models is None or r.model in models) and (include_kept_16bit or not r.kept_16bit)]


@dataclass(frozen=True)
class ConvShape:
    """One distinct Conv2d problem of a UNet forward (batch 1, NHWC): input [1, H, W, C] ->
    output [1, Ho, Wo, O] with a kh x kw kernel. ``split`` is the channel where the skip half of
    an up-block concat starts (split shortcut), or 0."""
    model: str
    H: int
    W: int
    C: int
    O: int
    k: int
    stride: int
    padding: int
    count: int
    example: str
    kept_16bit: bool
    split: int = 0

    @property
    def name(self) -> str:
        return f"{self.model}:{self.H}x{self.W}x{self.C}->{self.O} k{self.k}s{self.stride}"

    def out_hw(self) -> tuple[int, int]:
        f = lambda n: (n + 2 * self.padding - self.k) // self.stride + 1  # noqa: E731
        return f(self.H), f(self.W)

    def flops(self, batch: int = 1) -> int:
        ho, wo = self.out_hw()
        return 2 * batch * ho * wo * self.O * self.k * self.k * self.C


def load_conv_shapes(models: list[str] | None = None, include_kept_16bit: bool = False) -> list[ConvShape]:
    rows = [ConvShape(**r) for r in json.loads(CONV_SHAPES_FILE.read_text())["shapes"]]
    return [r for r in rows if (models is None or r.model in models) and (include_kept_16bit or not r.kept_16bit)]


# ---------------------------------------------------------------- derivation (needs diffusers)


def _inputs(model_name, model, torch):
    meta = dict(device="meta", dtype=torch.bfloat16)
    if model_name == "flux1-dev":
        img, txt = 4096, 512
        return dict(hidden_states=torch.empty(1, img, 64, **meta), encoder_hidden_states=torch.empty(1, txt, 4096, **meta),
                    pooled_projections=torch.empty(1, 768, **meta), timestep=torch.empty(1, **meta),
                    img_ids=torch.empty(img, 3, **meta), txt_ids=torch.empty(txt, 3, **meta),
                    guidance=torch.empty(1, **meta), return_dict=False)
    if model_name == "sd3-medium":
        return dict(hidden_states=torch.empty(1, 16, 128, 128, **meta),
                    encoder_hidden_states=torch.empty(1, 333, 4096, **meta),
                    pooled_projections=torch.empty(1, 2048, **meta), timestep=torch.empty(1, **meta), return_dict=False)
    if model_name == "sdxl":
        return dict(sample=torch.empty(1, 4, 128, 128, **meta), timestep=torch.empty(1, **meta),
                    encoder_hidden_states=torch.empty(1, 77, 2048, **meta),
                    added_cond_kwargs={"text_embeds": torch.empty(1, 1280, **meta),
                                       "time_ids": torch.empty(1, 6, **meta)}, return_dict=False)
    if model_name == "sd1.5":
        return dict(sample=torch.empty(1, 4, 64, 64, **meta), timestep=torch.empty(1, **meta),
                    encoder_hidden_states=torch.empty(1, 77, 768, **meta), return_dict=False)
    raise KeyError(model_name)


MODELS = {  # name -> (diffusers class, shipped config)
    "flux1-dev": ("FluxTransformer2DModel", "flux1_dev_transformer.json"),
    "sd3-medium": ("SD3Transformer2DModel", "sd3_medium_transformer.json"),
    "sdxl": ("UNet2DConditionModel", "sdxl_unet.json"),
    "sd1.5": ("UNet2DConditionModel", "sd15_unet.json"),
}


def derive_shapes() -> list[LinearShape]:
    import diffusers
    import torch
    from torch import nn

    from qengine.integrations.diffusers import KEEP_16BIT

    config_dir = Path(__file__).resolve().parents[1] / "qengine" / "integrations" / "model_configs"
    out: list[LinearShape] = []
    for model_name, (cls_name, cfg_file) in MODELS.items():
        cls = getattr(diffusers, cls_name)
        cfg = json.loads((config_dir / cfg_file).read_text())
        with torch.device("meta"):
            model = cls.from_config(cfg).to(torch.bfloat16)
        keep = KEEP_16BIT.get(cls_name, ())
        seen: dict[tuple[int, int, int], list] = {}

        def hook(name):
            def fn(mod, args, _out):
                x = args[0]
                m = x.numel() // x.shape[-1]
                key = (m, mod.in_features, mod.out_features)
                kept = any(fnmatch.fnmatchcase(name, p) for p in keep)
                entry = seen.setdefault(key, [0, name, True])
                entry[0] += 1
                entry[2] = entry[2] and kept
            return fn

        handles = [mod.register_forward_hook(hook(n)) for n, mod in model.named_modules() if isinstance(mod, nn.Linear)]
        with torch.no_grad():
            model(**_inputs(model_name, model, torch))
        for h in handles:
            h.remove()
        for (m, k, n), (count, example, kept) in sorted(seen.items()):
            out.append(LinearShape(model_name, m, k, n, count, example, kept))
    return out


def derive_conv_shapes() -> list[ConvShape]:
    import diffusers
    import torch
    from torch import nn

    from qengine.calib.observers import skip_concat_splits

    config_dir = Path(__file__).resolve().parents[1] / "qengine" / "integrations" / "model_configs"
    out: list[ConvShape] = []
    for model_name in CONV_MODELS:
        cls_name, cfg_file = MODELS[model_name]
        cfg = json.loads((config_dir / cfg_file).read_text())
        with torch.device("meta"):
            model = getattr(diffusers, cls_name).from_config(cfg).to(torch.bfloat16)
        splits = skip_concat_splits(model)
        seen: dict[tuple, list] = {}

        def hook(name):
            def fn(mod, args, _out):
                _, c, h, w = args[0].shape
                key = (h, w, c, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.padding[0], splits.get(name, 0))
                # qengine's kernels need C % 16 == 0 and O % 8 == 0: conv_in (4 ch) and conv_out stay 16-bit
                kept = c % 16 != 0 or mod.out_channels % 8 != 0
                entry = seen.setdefault(key, [0, name, kept])
                entry[0] += 1
            return fn

        handles = [mod.register_forward_hook(hook(n)) for n, mod in model.named_modules() if isinstance(mod, nn.Conv2d)]
        with torch.no_grad():
            model(**_inputs(model_name, model, torch))
        for h in handles:
            h.remove()
        for (h, w, c, o, k, st, pad, split), (count, example, kept) in sorted(seen.items()):
            out.append(ConvShape(model_name, h, w, c, o, k, st, pad, count, example, kept, split))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="re-derive with diffusers and rewrite linear_shapes.json")
    ap.add_argument("--all", action="store_true", help="also list the layers kept 16-bit by default")
    ap.add_argument("--conv", action="store_true", help="the UNet Conv2d shapes (conv_shapes.json) instead")
    args = ap.parse_args()
    if args.conv:
        if args.write:
            shapes = derive_conv_shapes()
            CONV_SHAPES_FILE.write_text(json.dumps({"doc": "generated by benchmarks/shapes.py --conv --write; one "
                                                           "UNet forward, batch 1, NHWC",
                                                    "shapes": [asdict(s) for s in shapes]}, indent=1) + "\n")
        for s in load_conv_shapes(include_kept_16bit=args.all):
            print(f"{s.name:40s} pad={s.padding} x{s.count:<3d} {'split@' + str(s.split) + ' ' if s.split else ''}"
                  f"{'16-bit ' if s.kept_16bit else ''}{s.example}")
        return
    if args.write:
        shapes = derive_shapes()
        SHAPES_FILE.write_text(json.dumps({"doc": "generated by benchmarks/shapes.py --write; one forward, batch 1",
                                           "shapes": [asdict(s) for s in shapes]}, indent=1) + "\n")
    for s in load_shapes(include_kept_16bit=args.all):
        print(f"{s.model:11s} M={s.M:6d} K={s.K:6d} N={s.N:6d}  x{s.count:<3d} {'16-bit ' if s.kept_16bit else ''}{s.example}")


if __name__ == "__main__":
    main()
