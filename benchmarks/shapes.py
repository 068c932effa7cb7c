"""Every distinct Linear GEMM shape of FLUX.1-dev, SD3-medium, SDXL and SD1.5 at their default
resolution, batch 1 (one denoiser forward, no CFG batch doubling).

    python benchmarks/shapes.py            # print the table
    python benchmarks/shapes.py --write    # re-derive with diffusers and rewrite linear_shapes.json

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="re-derive with diffusers and rewrite linear_shapes.json")
    ap.add_argument("--all", action="store_true", help="also list the layers kept 16-bit by default")
    args = ap.parse_args()
    if args.write:
        shapes = derive_shapes()
        SHAPES_FILE.write_text(json.dumps({"doc": "generated by benchmarks/shapes.py --write; one forward, batch 1",
                                           "shapes": [asdict(s) for s in shapes]}, indent=1) + "\n")
    for s in load_shapes(include_kept_16bit=args.all):
        print(f"{s.model:11s} M={s.M:6d} K={s.K:6d} N={s.N:6d}  x{s.count:<3d} {'16-bit ' if s.kept_16bit else ''}{s.example}")


if __name__ == "__main__":
    main()
