"""The small reference models qengine ships (trained on Fashion-MNIST) and the sampler they use.

Why these exist: no trained SD/FLUX weights can be had offline, and random weights say nothing
about image quality. A class-conditional DiT (attention, MLP, adaLN from timestep + class) and a
class-conditional UNet2DModel (convs, skip concatenations, time embedding) exercise the same
layer types as FLUX/SD3 and SD/SDXL, and are small enough to calibrate and evaluate on a CPU.

Image space: Fashion-MNIST's 28x28 images are padded to 32x32 with the background value (-1),
so the UNet can downsample three times; every model, metric and grid works at 32x32 in [-1, 1].
Sampling is deterministic DDIM (eta = 0) with the noise drawn from a CPU generator per call, so
a full-precision and a quantized model given the same seed and labels start from the same
noise and follow comparable trajectories.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIZE = 32
DATA_DIR = Path(os.environ.get("QENGINE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

DIT_CONFIG = dict(num_attention_heads=3, attention_head_dim=64, in_channels=1, out_channels=1, num_layers=4,
                  sample_size=IMAGE_SIZE, patch_size=2, num_embeds_ada_norm=len(CLASSES))
UNET_CONFIG = dict(sample_size=IMAGE_SIZE, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128),
                   layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=len(CLASSES),
                   norm_num_groups=8, attention_head_dim=32)
#: DDPM training schedule; sampling uses DDIM over the same betas
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                        clip_sample=False)
DEFAULT_STEPS = 20


# ---------------------------------------------------------------- data


def load_fashion_mnist(split: str = "test", root: Path | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` from the idx .gz files of the Debian package."""
    root = Path(root) if root else DATA_DIR
    prefix = {"train": "train", "test": "t10k"}[split]
    img_path, lbl_path = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not img_path.is_file():
        raise FileNotFoundError(f"{img_path} not found: install the Debian package dataset-fashion-mnist "
                                "or point QENGINE_FASHION_MNIST at a folder holding the idx .gz files")
    with gzip.open(img_path) as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(lbl_path) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(imgs.copy()), torch.from_numpy(labels.astype(np.int64))


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 32, 32] in [-1, 1], padded with the background value."""
    x = images.float().div(127.5).sub(1.0)[:, None]
    return F.pad(x, (2, 2, 2, 2), value=-1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-space images [N, 1, H, W] in [-1, 1] -> uint8 [N, 1, H, W]."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


# ---------------------------------------------------------------- models


def build_denoiser(kind: str) -> nn.Module:
    """A freshly initialised reference denoiser: ``"dit"`` or ``"unet"``."""
    from diffusers import DiTTransformer2DModel, UNet2DModel

    if kind == "dit":
        return DiTTransformer2DModel(**DIT_CONFIG)
    if kind == "unet":
        return UNet2DModel(**UNET_CONFIG)
    raise ValueError(f"unknown reference model {kind!r}; choose 'dit' or 'unet'")


def load_denoiser(kind: str, models_dir: Path | str | None = None, dtype: torch.dtype = torch.float32,
                  device="cpu") -> nn.Module:
    """A shipped denoiser (``models/fashion-<kind>``), in eval mode."""
    from diffusers import DiTTransformer2DModel, UNet2DModel

    path = Path(models_dir or MODELS_DIR) / f"fashion-{kind}"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no shipped model at {path}; train one with scripts/train_reference_models.py")
    cls = {"dit": DiTTransformer2DModel, "unet": UNet2DModel}[kind]
    return cls.from_pretrained(path, torch_dtype=dtype).to(device).eval()


class Classifier(nn.Module):
    """A small CNN that labels 32x32 Fashion-MNIST images; it scores the class accuracy of samples."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, 32), block(32, 64), block(64, 128))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 4 * 4, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_classifier(models_dir: Path | str | None = None, device="cpu") -> Classifier:
    from safetensors.torch import load_file

    path = Path(models_dir or MODELS_DIR) / "fashion-classifier" / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped classifier at {path}; train one with scripts/train_reference_models.py")
    clf = Classifier()
    clf.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return clf.to(device).eval()


# ---------------------------------------------------------------- sampling


def denoise(model: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One noise prediction; hides the DiT/UNet call differences."""
    if type(model).__name__ == "DiTTransformer2DModel":
        return model(x, timestep=t, class_labels=labels).sample
    return model(x, t, class_labels=labels).sample


def initial_noise(n: int, seed: int) -> torch.Tensor:
    """The starting noise of ``n`` samples; drawn on the CPU so every device starts from the same."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)


@torch.no_grad()
def sample(model: nn.Module, labels: torch.Tensor, *, seed: int = 0, steps: int = DEFAULT_STEPS,
           batch_size: int = 500) -> torch.Tensor:
    """Class-conditional DDIM (eta = 0) samples in model space [-1, 1], shape [N, 1, 32, 32], on the CPU.

    Each batch runs the whole trajectory (one denoiser call per step), so calibration observers
    can count calls to know the step.
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    param = next(iter(model.parameters()), None)
    buf = next(iter(model.buffers()), None)
    device = (param if param is not None else buf).device
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    noise = initial_noise(len(labels), seed)
    out = []
    for lo in range(0, len(labels), batch_size):
        x = noise[lo:lo + batch_size].to(device, dtype)
        y = labels[lo:lo + batch_size].to(device)
        for t in sched.timesteps:
            tt = torch.full((len(x),), int(t), device=device, dtype=torch.long)
            eps = denoise(model, x, tt, y)
            x = sched.step(eps.to(x.dtype), t, x).prev_sample
        out.append(x.float().cpu())
    return torch.cat(out)


def class_grid_labels(per_class: int) -> torch.Tensor:
    """Labels 0..9, each repeated ``per_class`` times (one grid row per class)."""
    return torch.arange(len(CLASSES)).repeat_interleave(per_class)
