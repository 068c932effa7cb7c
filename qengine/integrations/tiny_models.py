"""Tiny, randomly initialised diffusers denoisers and short sampling loops (demo, tests, benchmarks).

``build_tiny(arch, seed)`` returns ``(model, sample)``: an fp32 CPU denoiser of a real diffusers
class (0.2M-1.0M parameters, a forward in 5-25 ms) and ``sample(model) -> Tensor``, which runs a
real 4-step sampling loop with a real diffusers scheduler from noise and conditioning fixed at
build time, and returns the final latents as ``(batch, channels, height, width)``. ``sample``
takes the model as an argument so that a test can pass a quantized copy (or the same model after
an in-place swap) and compare it with the 16-bit reference; it also accepts a pipeline (anything
with a ``transformer``/``unet`` module). Two calls on the same weights give bit-identical output.

Where a real pipeline class runs without tokenizer, text encoder and VAE (given ``prompt_embeds``
and ``output_type="latent"``), ``sample`` goes through it; ``build_tiny_pipeline(arch, seed)``
returns such a pipeline holding the same weights as ``build_tiny(arch, seed)``:

=================  ========================  =============================  ======================
arch               class                     route                          scheduler
=================  ========================  =============================  ======================
unet2d_condition   UNet2DConditionModel      StableDiffusionPipeline, CFG   EulerDiscreteScheduler
unet2d             UNet2DModel (class-cond)  plain loop (DDIMPipeline       DDIMScheduler
                                             cannot pass class labels)
dit                DiTTransformer2DModel     plain loop, CFG (DiTPipeline   DDIMScheduler
                                             always VAE-decodes and
                                             hard-codes null class 1000)
flux               FluxTransformer2DModel    FluxPipeline, guidance embed   FlowMatchEuler (dynamic
                                                                            shift, FLUX.1-dev)
sd3                SD3Transformer2DModel     StableDiffusion3Pipeline, CFG  FlowMatchEuler (shift 3)
=================  ========================  =============================  ======================

Shapes are chosen so that every Linear that is not kept 16-bit by default
(``qengine.integrations.diffusers.KEEP_16BIT``) has ``in_features % 64 == 0`` and every such
Conv2d has ``in_channels % 16 == 0``; the layers kept 16-bit (input/output projections,
embedders, adaLN modulation, ``time_emb_proj``) may have any size. The UNets have skip
concatenations in their up blocks; the UNet2DModel and the DiT are class-conditional. The UNets
are the largest: attention at 64 channels (for 64-wide Linears) brings 3x3 convs at 64 channels.
FLUX's and SD3's adaLN modulation is scaled up after init (see ``_MODULATION_GAIN``) so that the
low-bit layers carry a real share of the sampled latents.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

import torch
from torch import nn

ARCHS = ("unet2d_condition", "unet2d", "dit", "flux", "sd3")
PIPELINE_ARCHS = ("unet2d_condition", "flux", "sd3")

NUM_STEPS = 4
BATCH = 2
NUM_CLASSES = 10
TEXT_LEN = 8  # tokens of the fake prompt embeddings
TEXT_DIM = 64  # width of the fake prompt embeddings (cross_attention_dim / joint_attention_dim)
POOLED_DIM = 32  # width of the fake pooled prompt embedding (FLUX, SD3)
GUIDANCE = 4.0

# Pixel size the pipelines are asked for; they divide it by their default vae_scale_factor (8,
# used when vae=None), so all latent-space models below work on 16x16 latents.
_PIXELS = 128
_LATENT = 16


def _unet2d_condition() -> nn.Module:
    from diffusers import UNet2DConditionModel

    # Attention only at the 64-channel level so that its Linears are 64-wide; the 32-channel
    # level has plain resnets (convs, whose in_channels only need to be multiples of 16).
    return UNet2DConditionModel(
        sample_size=_LATENT,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,  # diffusers' UNet calls the number of heads attention_head_dim
    )


def _unet2d() -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=_LATENT,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=16,
        num_class_embeds=NUM_CLASSES,
    )


def _dit() -> nn.Module:
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=4,
        num_layers=2,
        sample_size=_LATENT,
        patch_size=2,
        num_embeds_ada_norm=NUM_CLASSES,  # label table gets one more row: the CFG null class
    )


def _flux() -> nn.Module:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=POOLED_DIM,
        guidance_embeds=True,  # FLUX.1-dev style distilled guidance
        axes_dims_rope=(8, 12, 12),
    )


def _sd3() -> nn.Module:
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=_LATENT,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,  # the last block is context_pre_only, as in the real model
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        caption_projection_dim=64,  # must equal heads * head_dim
        pooled_projection_dim=POOLED_DIM,
        pos_embed_max_size=_LATENT,
    )


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "unet2d_condition": _unet2d_condition,
    "unet2d": _unet2d,
    "dit": _dit,
    "flux": _flux,
    "sd3": _sd3,
}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; expected one of {ARCHS}")


# Random init leaves FLUX's and SD3's conditioning embedding tiny, so every adaLN gate is ~0.1
# and the transformer blocks (where all the low-bit layers are) would make up only 3-6% of the
# sampled latents: tests could not see quantization error there. A trained model opens its
# gates; scaling the modulation Linears by this gain makes the blocks carry ~40-60% of the output.
_MODULATION_GAIN = 8.0
_MODULATION = ("*norm1.linear", "*norm1_context.linear", "*norm.linear", "norm_out.linear")


def _build_model(arch: str, seed: int) -> nn.Module:
    _check_arch(arch)
    # Seed the initialisation without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[arch]()
    if arch in ("flux", "sd3"):
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, nn.Linear) and any(fnmatchcase(name, p) for p in _MODULATION):
                    module.weight.mul_(_MODULATION_GAIN)
                    module.bias.mul_(_MODULATION_GAIN)
    return model.eval()


def _scheduler(arch: str):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    if arch == "unet2d_condition":
        # Stable Diffusion's training schedule.
        return EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        )
    if arch in ("unet2d", "dit"):
        return DDIMScheduler(num_train_timesteps=1000)
    if arch == "flux":
        # FLUX.1-dev's scheduler config (resolution-dependent shift).
        return FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    return FlowMatchEulerDiscreteScheduler(shift=3.0)  # SD3


def _pipeline(arch: str, model: nn.Module):
    if arch == "unet2d_condition":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=None,
            text_encoder=None,
            tokenizer=None,
            unet=model,
            scheduler=_scheduler(arch),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif arch == "flux":
        from diffusers import FluxPipeline

        pipe = FluxPipeline(
            scheduler=_scheduler(arch),
            vae=None,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            transformer=model,
        )
    elif arch == "sd3":
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline(
            transformer=model,
            scheduler=_scheduler(arch),
            vae=None,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            text_encoder_3=None,
            tokenizer_3=None,
        )
    else:
        raise ValueError(
            f"no pipeline route for tiny arch {arch!r} (DDIMPipeline cannot pass class labels, "
            f"DiTPipeline always VAE-decodes); pipeline archs are {PIPELINE_ARCHS}"
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_pipeline(arch: str, seed: int = 0):
    """A real diffusers pipeline (no tokenizer, text encoder or VAE) around ``build_tiny(arch,
    seed)``'s model. ``sample`` from ``build_tiny(arch, seed)`` accepts it, or its denoiser."""
    _check_arch(arch)
    if arch not in PIPELINE_ARCHS:
        return _pipeline(arch, None)  # raises with the reason
    return _pipeline(arch, _build_model(arch, seed))


def _denoiser(obj) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    for name in ("transformer", "unet"):
        module = getattr(obj, name, None)
        if isinstance(module, nn.Module):
            return module
    raise TypeError(
        f"sample() expects a denoiser nn.Module or a pipeline, got {type(obj).__name__}"
    )


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def _pipeline_latents(arch: str, model: nn.Module, guidance: float, **inputs: torch.Tensor):
    """Run the arch's pipeline on ``model`` for NUM_STEPS from clones of ``inputs``: ``(pipe, latents)``."""
    pipe = _pipeline(arch, model)
    out = pipe(**{k: v.clone() for k, v in inputs.items()}, height=_PIXELS, width=_PIXELS,
               num_inference_steps=NUM_STEPS, guidance_scale=guidance, output_type="latent", return_dict=False)[0]
    return pipe, out


def _make_sampler(arch: str, seed: int) -> Callable[[nn.Module], torch.Tensor]:
    # Noise and conditioning come from their own generator (seed offset so they are not the same
    # numbers as the weights) and are fixed here, once; every call reuses clones of them.
    gen = torch.Generator().manual_seed(seed + 1_000_003)

    if arch == "unet2d_condition":
        noise = _randn(gen, BATCH, 4, _LATENT, _LATENT)
        text = _randn(gen, BATCH, TEXT_LEN, TEXT_DIM)
        neg_text = _randn(gen, BATCH, TEXT_LEN, TEXT_DIM)

        def run(model: nn.Module) -> torch.Tensor:
            return _pipeline_latents(arch, model, GUIDANCE, prompt_embeds=text, negative_prompt_embeds=neg_text,
                                     latents=noise)[1]

    elif arch == "flux":
        from diffusers import FluxPipeline

        channels = 4
        noise = _randn(gen, BATCH, channels, _LATENT, _LATENT)
        packed = FluxPipeline._pack_latents(noise, BATCH, channels, _LATENT, _LATENT)
        text = _randn(gen, BATCH, TEXT_LEN, TEXT_DIM)
        pooled = _randn(gen, BATCH, POOLED_DIM)

        def run(model: nn.Module) -> torch.Tensor:
            pipe, out = _pipeline_latents(arch, model, 3.5, prompt_embeds=text, pooled_prompt_embeds=pooled,
                                          latents=packed)
            # output_type="latent" returns FLUX's packed (B, tokens, 4*C) layout.
            return FluxPipeline._unpack_latents(out, _PIXELS, _PIXELS, pipe.vae_scale_factor)

    elif arch == "sd3":
        noise = _randn(gen, BATCH, 4, _LATENT, _LATENT)
        text = _randn(gen, BATCH, TEXT_LEN, TEXT_DIM)
        pooled = _randn(gen, BATCH, POOLED_DIM)
        neg_text = _randn(gen, BATCH, TEXT_LEN, TEXT_DIM)
        neg_pooled = _randn(gen, BATCH, POOLED_DIM)

        def run(model: nn.Module) -> torch.Tensor:
            return _pipeline_latents(arch, model, GUIDANCE, prompt_embeds=text, pooled_prompt_embeds=pooled,
                                     negative_prompt_embeds=neg_text, negative_pooled_prompt_embeds=neg_pooled,
                                     latents=noise)[1]

    elif arch == "unet2d":
        noise = _randn(gen, BATCH, 1, _LATENT, _LATENT)
        labels = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen)

        def run(model: nn.Module) -> torch.Tensor:
            scheduler = _scheduler(arch)
            scheduler.set_timesteps(NUM_STEPS)
            x = noise.clone()
            for t in scheduler.timesteps:
                eps = model(x, t, class_labels=labels).sample
                x = scheduler.step(eps, t, x).prev_sample
            return x

    else:  # dit
        noise = _randn(gen, BATCH, 4, _LATENT, _LATENT)
        labels = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen)
        null = torch.full((BATCH,), NUM_CLASSES)  # the extra CFG row of the label table
        labels_in = torch.cat([labels, null])

        def run(model: nn.Module) -> torch.Tensor:
            scheduler = _scheduler(arch)
            scheduler.set_timesteps(NUM_STEPS)
            x = noise.clone()
            for t in scheduler.timesteps:
                out = model(
                    torch.cat([x, x]), timestep=t.expand(2 * BATCH), class_labels=labels_in
                ).sample
                cond, uncond = out.chunk(2)
                eps = uncond + GUIDANCE * (cond - uncond)
                x = scheduler.step(eps, t, x).prev_sample
            return x

    def sample(model) -> torch.Tensor:
        with torch.no_grad():
            return run(_denoiser(model))

    return sample


def build_tiny(arch: str, seed: int = 0) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """``(model, sample)`` for one of ``ARCHS``; both deterministic functions of ``seed``."""
    model = _build_model(arch, seed)
    return model, _make_sampler(arch, seed)
