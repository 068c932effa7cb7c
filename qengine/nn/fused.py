"""Fused kernels for the non-GEMM work around the quantized layers.

Once the linears and convs are 8- or 4-bit, the eager glue between them is much of a denoiser
step: in FLUX.1 the per-head q/k RMSNorm and the rotary embedding (~10 elementwise passes over
q and k per block) take ~30 ms of a ~150 ms step on an H100; in an SDXL UNet, torch's GroupNorm
(32 blocks for the whole GPU at batch 1, plus channels_last<->NCHW copies) takes ~6 of ~27 ms.

:func:`enable_fused_kernels` swaps in, in place:
- every ``nn.GroupNorm`` -> :class:`FusedGroupNorm` (same parameters and state_dict keys), which
  runs ``qengine::group_norm_nhwc`` on CUDA 16-bit input and leaves the output channels_last;
- every FLUX attention's processor -> :class:`FusedFluxAttnProcessor`, which runs
  ``qengine::rmsnorm_rope`` (norm_q/norm_added_q + rotary embedding + the text/image concat, one
  pass) and otherwise does what diffusers' ``FluxAttnProcessor`` does.

- every FLUX single block and GELU(tanh) feed-forward whose output layer is a QLinear ->
  a forward whose quantize kernel applies the GELU and reads the concatenation's parts in place
  (:mod:`qengine.nn.fused_mlp`).
- every FP8 :class:`~qengine.nn.QLinear` with a low-rank branch on a GPU with the kernel ->
  the branch folded into the GEMM's K (``QLinear.enable_lowrank_cat``,
  :mod:`qengine.formats.lowrank_cat`): one FP8 GEMM with ~3r more K instead of a low-rank epilogue.
  Only for modules already on CUDA: on the CPU the epilogue path's numbers stay as they were.
- every UNet ``ResnetBlock2D`` whose convs are 8-bit :class:`~qengine.nn.QConv2d` -> a forward
  where, once the convs have static input scales, each GroupNorm (+ the temb add) + SiLU writes
  its conv's 8-bit input and the shortcut is added in conv2's epilogue (:mod:`qengine.nn.fused_resnet`).
- with ``producer_fusions=True`` (opt-in): every GEGLU feed-forward -> a forward whose output
  QLinear quantizes ``h * gelu(gate)`` in place, and every transformer block's LayerNorm that feeds
  exactly one QLinear -> folded into that QLinear, which then normalizes and quantizes in one
  kernel (:mod:`qengine.nn.fused_norm_quant`). Opt-in because the compiled, graphed SDXL step on
  an H100 was slower with them (20.4 vs 18.7 ms: inductor's own fused add + LayerNorm and GEGLU
  kernels beat the opaque ops; notes/h100_2026-11-23c); eager runs are not measured yet.

Each falls back to the stock computation wherever its kernel does not apply (CPU, fp32, shapes
the kernel does not take), so the swap never changes what runs on the CPU. On the CPU the ops'
reference reproduces the eager math step for step (tests/test_fused_kernels.py).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.reference_norms import RMSNORM_ROPE_HEAD_DIMS, group_norm_nhwc_unsupported

_FUSED_DTYPES = (torch.bfloat16, torch.float16)


def _has_cuda_kernel(op: str) -> bool:
    """A compiled kernel, not the loud stub that ops registers for ops this build lacks."""
    from .. import ops
    from ..ops import library

    return library.has_cuda_kernel(op) and op not in ops.MISSING_CUDA_KERNELS


def _kernel_device(t: torch.Tensor, kernel_built: bool) -> bool:
    """Whether a compiled kernel (``kernel_built``, looked up once when the module is made, so
    torch.compile traces no dispatcher query) serves ``t``'s device. The tests point this at the
    CPU reference, to check the fused modules' logic where there is no GPU."""
    return kernel_built and t.is_cuda


class FusedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose CUDA bf16/fp16 forward is one qengine kernel pair over NHWC.

    The output is channels_last (NCHW input is converted once, which is what channels_last
    UNets want downstream). ``silu=True`` also applies SiLU, for callers that own the activation.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, silu: bool = False):
        super().__init__(num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        self.silu = silu
        self._kernel_built = _has_cuda_kernel("group_norm_nhwc")

    @classmethod
    def from_module(cls, gn: nn.GroupNorm) -> "FusedGroupNorm":
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.num_groups, new.num_channels, new.eps, new.affine = gn.num_groups, gn.num_channels, gn.eps, gn.affine
        new.weight, new.bias = gn.weight, gn.bias  # shared Parameters: the state_dict is unchanged
        new.silu = False
        new._kernel_built = _has_cuda_kernel("group_norm_nhwc")
        new.train(gn.training)
        return new

    def _fusable(self, x: torch.Tensor) -> bool:
        return (x.dim() == 4 and x.dtype in _FUSED_DTYPES
                and group_norm_nhwc_unsupported(x.shape[0], self.num_channels, self.num_groups) is None
                and (self.weight is None or self.weight.dtype == x.dtype)
                and _kernel_device(x, self._kernel_built))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fusable(x):
            x = x.contiguous(memory_format=torch.channels_last)
            return torch.ops.qengine.group_norm_nhwc(x, self.num_groups, self.weight, self.bias, self.eps, self.silu)
        y = super().forward(x)
        return torch.nn.functional.silu(y) if self.silu else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", silu=True" if self.silu else "") + ", qengine NHWC kernel"


def _flux_processor_base():
    try:
        from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
    except ImportError:  # diffusers without FLUX: nothing to replace
        return None
    return FluxAttnProcessor


def _rms_weight_eps(norm: nn.Module):
    """(weight, eps) of an affine RMSNorm (torch's or diffusers'), else None."""
    w = getattr(norm, "weight", None)
    eps = getattr(norm, "eps", None)
    if not isinstance(w, torch.Tensor) or eps is None or type(norm).__name__ != "RMSNorm":
        return None
    return w, float(eps)


def _make_flux_processor_class():
    base = _flux_processor_base()
    if base is None:
        return None
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers import transformer_flux

    class FusedFluxAttnProcessor(base):
        """diffusers' ``FluxAttnProcessor`` with the q/k RMSNorm, the text+image concat of q and k
        and the rotary embedding done by one ``qengine::rmsnorm_rope`` call each for q and k."""

        def __init__(self):
            super().__init__()
            self._kernel_built = _has_cuda_kernel("rmsnorm_rope")

        def _fused_args(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb):
            if not (hidden_states.dtype in _FUSED_DTYPES and attn.head_dim in RMSNORM_ROPE_HEAD_DIMS
                    and isinstance(image_rotary_emb, tuple) and len(image_rotary_emb) == 2
                    and all(t.dtype == torch.float32 and t.device == hidden_states.device for t in image_rotary_emb)
                    and _kernel_device(hidden_states, self._kernel_built)):
                return None
            norms = [_rms_weight_eps(attn.norm_q), _rms_weight_eps(attn.norm_k)]
            if attn.added_kv_proj_dim is not None:
                if encoder_hidden_states is None:
                    return None
                norms += [_rms_weight_eps(attn.norm_added_q), _rms_weight_eps(attn.norm_added_k)]
            if any(n is None or n[0].dtype != hidden_states.dtype for n in norms) or len({n[1] for n in norms}) != 1:
                return None
            return norms

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                     image_rotary_emb=None):
            norms = self._fused_args(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
            if norms is None:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
            query, key, value, enc_query, enc_key, enc_value = transformer_flux._get_qkv_projections(
                attn, hidden_states, encoder_hidden_states)
            d = attn.head_dim
            query, key, value = (t.unflatten(-1, (-1, d)) for t in (query, key, value))
            cos, sin = image_rotary_emb
            eps = norms[0][1]
            rope = torch.ops.qengine.rmsnorm_rope
            if attn.added_kv_proj_dim is not None:
                enc_query, enc_key, enc_value = (t.unflatten(-1, (-1, d)) for t in (enc_query, enc_key, enc_value))
                query = rope(query, norms[0][0], cos, sin, eps, enc_query, norms[2][0])
                key = rope(key, norms[1][0], cos, sin, eps, enc_key, norms[3][0])
                value = torch.cat([enc_value, value], dim=1)
            else:
                query = rope(query, norms[0][0], cos, sin, eps)
                key = rope(key, norms[1][0], cos, sin, eps)

            hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask,
                                                  backend=self._attention_backend, parallel_config=self._parallel_config)
            hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
            if encoder_hidden_states is not None:
                encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                    [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1)
                hidden_states = attn.to_out[0](hidden_states.contiguous())
                hidden_states = attn.to_out[1](hidden_states)
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
                return hidden_states, encoder_hidden_states
            return hidden_states

    return FusedFluxAttnProcessor


_FLUX_PROCESSOR_CLASS = None


def fused_flux_processor_class():
    """The FusedFluxAttnProcessor class (built on first use: it subclasses diffusers' processor)."""
    global _FLUX_PROCESSOR_CLASS
    if _FLUX_PROCESSOR_CLASS is None:
        _FLUX_PROCESSOR_CLASS = _make_flux_processor_class()
    return _FLUX_PROCESSOR_CLASS


def enable_fused_kernels(obj, producer_fusions: bool = False) -> dict[str, int]:
    """Swap qengine's fused norm kernels into ``obj`` in place: an ``nn.Module`` (all of it), or a
    diffusers pipeline (its denoiser), and fold FP8 QLinears' low-rank branches into their GEMM's K
    where they are on CUDA. Returns how many modules of each kind were changed. Safe
    on any device: each module falls back to the stock computation where its kernel does not
    apply. Calling it again swaps nothing more."""
    from ..integrations.diffusers import find_denoiser
    from .fused_mlp import swap_gelu_cat_forwards
    from .fused_norm_quant import fold_layer_norms
    from .fused_resnet import swap_resnet_forwards
    from .linear import QLinear

    model, _ = find_denoiser(obj)
    counts = {"group_norm": 0, "flux_attention": 0, "lowrank_cat": 0, "gelu_cat": 0, "layer_norm_quant": 0,
              "resnet": 0}
    cat_built = _has_cuda_kernel("quantize_act_fp8_lowrank_cat")
    flux_cls = fused_flux_processor_class()
    flux_base = _flux_processor_base()
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if type(child) is nn.GroupNorm:
                setattr(mod, child_name, FusedGroupNorm.from_module(child))
                counts["group_norm"] += 1
        proc = getattr(mod, "processor", None)
        if flux_cls is not None and type(proc) is flux_base:
            new = flux_cls()
            new._attention_backend, new._parallel_config = proc._attention_backend, proc._parallel_config
            mod.set_processor(new)
            counts["flux_attention"] += 1
        if (isinstance(mod, QLinear) and not mod.lowrank_cat and mod.backend == "auto" and mod.weight.is_cuda
                and cat_built and mod.enable_lowrank_cat()):
            counts["lowrank_cat"] += 1
    counts["gelu_cat"] = swap_gelu_cat_forwards(model, geglu=producer_fusions)
    counts["resnet"] = swap_resnet_forwards(model)
    if producer_fusions:
        counts["layer_norm_quant"] = fold_layer_norms(model)
    return counts
