"""GELU and GEGLU MLPs whose activation quantization reads the GELU's input in place.

In FLUX a quantized linear often takes GELU output: a ``FeedForward``'s ``net[2]`` takes
``gelu_tanh(net[0].proj(x))``, and a single block's ``proj_out`` takes
``cat([attention output, gelu_tanh(proj_mlp(x))])``. Eager, that is a GELU pass (a write and a
read of [M, 4D] 16-bit) and, in the single block, a concatenation ([M, 5D]) before the quantize
kernel reads it all once more. Compiled, inductor fuses the GELU and the concatenation, but it
still writes their result out for qengine's opaque quantize op (3.9 + 1.5 ms of a 97 ms compiled
FLUX step on an H100: ``notes/h100_2026-11-22e``).

:func:`swap_gelu_cat_forwards` gives those modules a forward that calls
:meth:`QLinear.forward_gelu_cat` instead: the quantize kernel reads the attention output and the
pre-GELU activations where they are and applies the GELU itself, bit-exact with the stock path.
SD/SDXL feed-forwards are GEGLU (``h * gelu(gate)``, ``[h | gate]`` the projection's output): there
the output layer's :meth:`QLinear.forward_geglu` reads the projection's output in place (in the
compiled SDXL step the GEGLU pass and the quantize pass that read it took ~1 ms on an H100,
``notes/h100_2026-11-23b``).
The forward is replaced on the instance (the class, so its name, stays diffusers': regional
compilation and ``_repeated_blocks`` find blocks by class name), and it falls back to the class's
own forward wherever the fused path does not apply (no CUDA kernel for the device, fp32; GEGLU: a
layer with a low-rank branch). With a low-rank branch the gelu-cat path runs torch's GELU, then the
quantize kernel that also computes the down-projection reads [x | GELU] in place
(``quantize_act_*_gelu_cat_lowrank``): the concatenation is saved, the GELU pass is not. A test runs each fused forward against the stock one, which catches a
diffusers release whose forward changed.
"""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from .linear import QLinear

_MARK = "_qengine_gelu_cat"  # instance attribute: the gelu-cat forward is installed (and kernel built)


def _gelu_cat_op_built(linear: QLinear, kind: str = "gelu_cat") -> bool:
    from .. import ops
    from . import fused

    op = ops.producer_quantize_op(linear.scheme, kind)
    if kind == "gelu_cat" and linear.lora_up is not None:
        op += "_lowrank"  # the branch's variants (plain and cat) come from the same binding
    return fused._has_cuda_kernel(op)


def _applies(module: nn.Module, linear: nn.Module, t: torch.Tensor) -> bool:
    from . import fused

    return (isinstance(linear, QLinear) and linear.supports_gelu_cat() and t.dtype in fused._FUSED_DTYPES
            and fused._kernel_device(t, getattr(module, _MARK)))


def _is_tanh_gelu(act: nn.Module) -> bool:
    """torch's ``nn.GELU`` or diffusers' ``activations.GELU`` with the tanh approximation."""
    return getattr(act, "approximate", None) == "tanh"


# ---------------------------------------------------------------- FLUX single block


def _flux_single_block_forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                               joint_attention_kwargs=None):
    """diffusers' ``FluxSingleTransformerBlock.forward`` with ``proj_out(cat([attn, gelu(mlp)]))``
    as one gelu-cat QLinear call."""
    if not _applies(self, self.proj_out, hidden_states):
        return type(self).forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb,
                                  joint_attention_kwargs)
    text_seq_len = encoder_hidden_states.shape[1]
    hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
    residual = hidden_states
    norm_hidden_states, gate = self.norm(hidden_states, emb=temb)
    mlp_pre = self.proj_mlp(norm_hidden_states)
    attn_output = self.attn(hidden_states=norm_hidden_states, image_rotary_emb=image_rotary_emb,
                            **(joint_attention_kwargs or {}))
    hidden_states = gate.unsqueeze(1) * self.proj_out.forward_gelu_cat(attn_output, mlp_pre)
    hidden_states = residual + hidden_states
    if hidden_states.dtype == torch.float16:
        hidden_states = hidden_states.clip(-65504, 65504)
    return hidden_states[:, :text_seq_len], hidden_states[:, text_seq_len:]


_FLUX_SINGLE_PARAMS = ["self", "hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb",
                       "joint_attention_kwargs"]


def _is_flux_single_block(mod: nn.Module) -> bool:
    if type(mod).__name__ != "FluxSingleTransformerBlock":
        return False
    if list(inspect.signature(type(mod).forward).parameters) != _FLUX_SINGLE_PARAMS:
        return False  # a diffusers release with another forward: leave it alone
    return all(hasattr(mod, a) for a in ("norm", "proj_mlp", "act_mlp", "proj_out", "attn")) and _is_tanh_gelu(mod.act_mlp)


# ---------------------------------------------------------------- GELU feed-forward


def _feed_forward(self, hidden_states, *args, **kwargs):
    """diffusers' ``FeedForward.forward`` (net = [GELU(proj), Dropout, Linear, ...]) with the GELU
    applied by the output QLinear's quantize kernel."""
    net = self.net
    if args or kwargs or (self.training and net[1].p > 0) or not _applies(self, net[2], hidden_states):
        return type(self).forward(self, hidden_states, *args, **kwargs)
    hidden_states = net[2].forward_gelu_cat(None, net[0].proj(hidden_states))
    for module in net[3:]:
        hidden_states = module(hidden_states)
    return hidden_states


def _is_gelu_feed_forward(mod: nn.Module) -> bool:
    if type(mod).__name__ != "FeedForward" or not isinstance(getattr(mod, "net", None), nn.ModuleList):
        return False
    net = mod.net
    return (len(net) >= 3 and _is_tanh_gelu(net[0]) and isinstance(getattr(net[0], "proj", None), nn.Module)
            and isinstance(net[1], nn.Dropout))


# ---------------------------------------------------------------- GEGLU feed-forward (SD, SDXL)


def _geglu_feed_forward(self, hidden_states, *args, **kwargs):
    """diffusers' ``FeedForward.forward`` (net = [GEGLU(proj), Dropout, Linear, ...]) with the GEGLU
    applied by the output QLinear's quantize kernel."""
    net = self.net
    if args or kwargs or (self.training and net[1].p > 0) or not _applies(self, net[2], hidden_states):
        return type(self).forward(self, hidden_states, *args, **kwargs)
    hidden_states = net[2].forward_geglu(net[0].proj(hidden_states))
    for module in net[3:]:
        hidden_states = module(hidden_states)
    return hidden_states


def _is_geglu_feed_forward(mod: nn.Module) -> bool:
    if type(mod).__name__ != "FeedForward" or not isinstance(getattr(mod, "net", None), nn.ModuleList):
        return False
    net = mod.net
    # diffusers' own GEGLU only (exact GELU, [h | gate] order); subclasses may change either.
    return (len(net) >= 3 and type(net[0]).__name__ == "GEGLU" and type(net[0]).__module__.startswith("diffusers.")
            and isinstance(getattr(net[0], "proj", None), nn.Module) and isinstance(net[1], nn.Dropout))


# ---------------------------------------------------------------- the swap


def swap_gelu_cat_forwards(model: nn.Module, geglu: bool = False) -> int:
    """Install the gelu-cat forward on every FLUX single block and GELU(tanh) feed-forward, and with
    ``geglu`` the GEGLU forward on every GEGLU feed-forward, of ``model`` whose output layer is a
    :class:`QLinear` that supports it. Returns how many modules it changed; calling it again changes
    none. (GEGLU is opt-in: in the compiled, graphed SDXL step on an H100 it and the folded
    LayerNorms together were slower, 20.4 vs 18.7 ms, notes/h100_2026-11-23c.)"""
    n = 0
    for mod in model.modules():
        if hasattr(mod, _MARK):
            continue
        kind = "gelu_cat"
        if _is_flux_single_block(mod):
            linear, forward = mod.proj_out, _flux_single_block_forward
        elif _is_gelu_feed_forward(mod):
            linear, forward = mod.net[2], _feed_forward
        elif geglu and _is_geglu_feed_forward(mod):
            linear, forward, kind = mod.net[2], _geglu_feed_forward, "geglu"
        else:
            continue
        if not (isinstance(linear, QLinear)
                and (linear.supports_gelu_cat() if kind == "gelu_cat" else linear.supports_producer_quant())):
            continue
        setattr(mod, _MARK, _gelu_cat_op_built(linear, kind))
        # A partial of a module-level function, not a bound method: it pickles (torch.save of the
        # whole model) and deep-copies onto the copy.
        mod.forward = functools.partial(forward, mod)
        n += 1
    return n
