"""q/k/v projections fused (QuantConfig.fuse_qkv) in FLUX and SD3 transformers on the GPU: the
fused model runs the CUDA kernels (FLUX: with qengine's q/k RMSNorm + RoPE processor) and gives
the unfused model's output: the same per-token and per-channel scales, only the GEMM's tile
config (and for FP8 its fp32 summation order) may differ, so SQNR >= 40 dB between the two. With
a low-rank branch the fused layer has one rank-32 branch instead of three (another approximation
of the same weights): as close to bf16 as the unfused model, within 1 dB."""
from __future__ import annotations

import copy

import pytest
import torch

from gpu_helpers import require_extension, sqnr_db

require_extension()
pytest.importorskip("diffusers", reason="the FLUX and SD3 transformers come from diffusers")

import qengine  # noqa: E402
from qengine.config import QuantConfig  # noqa: E402
from qengine import ops  # noqa: E402
from qengine.ops import MISSING_CUDA_KERNELS  # noqa: E402

DEV = torch.device("cuda")


def small_flux():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(21)
    gen = torch.Generator().manual_seed(21)
    model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                                   attention_head_dim=128, num_attention_heads=4, joint_attention_dim=256,
                                   pooled_projection_dim=128, guidance_embeds=True,
                                   axes_dims_rope=(16, 56, 56)).to(torch.bfloat16).to(DEV).eval()
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(16.0), torch.arange(16.0), indexing="ij"), -1)
    bf = dict(dtype=torch.bfloat16, device=DEV)
    inputs = dict(hidden_states=torch.randn(1, 256, 64, generator=gen).to(**bf),
                  encoder_hidden_states=torch.randn(1, 32, 256, generator=gen).to(**bf),
                  pooled_projections=torch.randn(1, 128, generator=gen).to(**bf),
                  timestep=torch.tensor([0.5], **bf), guidance=torch.tensor([3.5], **bf),
                  img_ids=ids.reshape(-1, 3).to(DEV), txt_ids=torch.zeros(32, 3, device=DEV), return_dict=False)
    return model, inputs


def small_sd3():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(22)
    gen = torch.Generator().manual_seed(22)
    model = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                  attention_head_dim=64, num_attention_heads=4, joint_attention_dim=256,
                                  caption_projection_dim=256, pooled_projection_dim=128,
                                  pos_embed_max_size=16).to(torch.bfloat16).to(DEV).eval()
    bf = dict(dtype=torch.bfloat16, device=DEV)
    inputs = dict(hidden_states=torch.randn(1, 16, 16, 16, generator=gen).to(**bf),
                  encoder_hidden_states=torch.randn(1, 32, 256, generator=gen).to(**bf),
                  pooled_projections=torch.randn(1, 128, generator=gen).to(**bf),
                  timestep=torch.tensor([500.0], **bf), return_dict=False)
    return model, inputs


def needs(scheme):
    for op in (ops._QUANTIZE_OP[scheme], ops._GEMM_OP[scheme]):  # the ops a QLinear of the scheme calls
        if op in MISSING_CUDA_KERNELS:
            pytest.skip(f"qengine._C has no CUDA kernel for {op} on this GPU")


@pytest.mark.parametrize("build", [small_flux, small_sd3], ids=["flux", "sd3"])
@pytest.mark.parametrize("scheme,rank", [("w8a8-int8", 0), ("w4a8", 0), ("w8a8-fp8", 0), ("w4a8", 32)])
def test_fused_qkv_transformer_matches_unfused(build, scheme, rank):
    needs(scheme)
    model, inputs = build()
    with torch.no_grad():
        ref = model(**inputs)[0].float()
        plain = qengine.quantize(copy.deepcopy(model), QuantConfig.preset(scheme, rank=rank))
        fused = qengine.quantize(copy.deepcopy(model), QuantConfig.preset(scheme, rank=rank, fuse_qkv=True))
        layers = fused.qengine_state.layers
        assert any(n.endswith("attn.to_qkv") for n in layers) and any(n.endswith("attn.to_added_qkv") for n in layers)
        fused_layers = [fused.get_submodule(n) for n in layers if n.endswith(("to_qkv", "to_added_qkv"))]
        assert all(isinstance(m, qengine.QLinear) and m.weight.is_cuda for m in fused_layers)
        out_plain, out_fused = plain(**inputs)[0].float(), fused(**inputs)[0].float()
    assert not out_fused.isnan().any()
    if rank == 0:
        assert sqnr_db(out_fused, out_plain) >= 40
    else:  # one rank-32 branch for the stacked weights: as close to bf16 as three were, within 1 dB
        assert sqnr_db(out_fused, ref) >= sqnr_db(out_plain, ref) - 1.0
